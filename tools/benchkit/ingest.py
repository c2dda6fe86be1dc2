"""The ``ingest`` section (needs PyAV): what a camera costs the CPU before the model sees anything.

- CPU seconds per camera-second of a 1080p30 H.264 stream (1 s GOP, like most cameras) sampled at 1 fps: a full
  decode that converts each sampled frame to the capped size, against livewatch's own reader (CameraReader),
  which skips what it can (keyframes only at 1 fps with a 1 s GOP).
- Importance scoring per pair, on frames at the model's pixel cap (what the memory holds).
- Frame-store writes per pair, timed on 1080p frames handed to a memory that does not cap them first (no
  ``frame_size``): JPEG encode and decode at 1920x1080, fsync'ed file writes and one SQLite commit. The daemon's
  memory stores frames at the model's cap (224x420 for 1080p): smaller JPEGs, the same fsyncs and commit, so its
  own cost per pair is lower.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchkit.common import T_END, Plan
from livewatch.engine.synthetic import image
from livewatch.frames import Frame

FULL_HD = (1080, 1920)  # (height, width)
FrameSize = Callable[[int, int], tuple[int, int]]  # capped (height, width) of a frame


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_stream(video: Path, seconds: float) -> None:
    """1080p30 with a 1 s GOP, like most cameras: eight synthetic scenes, each panning for a second."""
    from clips import write_h264

    base = [image(i, FULL_HD) for i in range(8)]
    write_h264(video, seconds, 30, FULL_HD, gop=30, preset="veryfast",
               image=lambda i: np.roll(base[(i // 30) % len(base)], i * 6, axis=1))


def _full_decode(video: Path, frame_size: FrameSize) -> tuple[float, int]:
    import av

    c0, sampled, next_t = _cpu(), 0, 0.0
    with av.open(str(video)) as container:
        vstream = container.streams.video[0]
        for frame in container.decode(vstream):
            if frame.time is not None and frame.time + 1e-6 >= next_t:
                next_t += 1.0
                size = frame_size(frame.height, frame.width)
                frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
                sampled += 1
    return _cpu() - c0, sampled


def _livewatch_path(video: Path, frame_size: FrameSize) -> tuple[float, int, dict[str, Any]]:
    from livewatch.capture.handoff import LatestHandoff
    from livewatch.capture.reader import CameraReader
    from livewatch.capture.source import SourceSpec

    loop = asyncio.new_event_loop()
    handoff: LatestHandoff[Frame] = LatestHandoff(loop, maxlen=10_000)
    spec = SourceSpec("file", str(video), None, realtime=False, loop=False, live=False, redacted=str(video))
    reader = CameraReader("bench", spec, handoff, fps=1.0, frame_size=frame_size)
    c0 = _cpu()
    reader.start()
    reader.join(120)
    used = _cpu() - c0
    stats = reader.stats()
    loop.close()
    return used, stats["frames_sampled"], stats


def _scoring_ms(frame_size: FrameSize) -> float:
    """Importance scoring per pair as the memory does it (the camera's ImportanceModel, 10 stars), on capped
    frames."""
    from livewatch.memory.importance import ImportanceModel, pair_signature

    capped = [np.ascontiguousarray(image(50 + i, frame_size(*FULL_HD))) for i in range(20)]
    stars = [pair_signature(capped[i], capped[i + 1]) for i in range(0, 20, 2)]
    model = ImportanceModel()
    t0 = time.perf_counter()
    for i in range(0, 20, 2):
        model.score_pair(capped[i], T_END + i, capped[i + 1], T_END + i + 1, stars)
    return (time.perf_counter() - t0) / 10 * 1e3


def _store_ms(state: Path) -> float:
    """Frame-store writes per pair, for 1080p frames stored as they come (the memory is given no cap)."""
    from livewatch.memory.camera import CameraMemory, MemoryParams
    from livewatch.memory.store import FrameStore

    memory = CameraMemory("bench", MemoryParams(star_pairs=10, window_pairs=10), FrameStore(state))
    full_frames = [image(70 + i, FULL_HD) for i in range(4)]
    t0 = time.perf_counter()
    for i in range(40):
        memory.add_frame(Frame(i, T_END + i, float(i), full_frames[i % 4]))
    return (time.perf_counter() - t0) / 20 * 1e3


def run(plan: Plan, frame_size: FrameSize) -> dict[str, Any]:
    try:
        import av  # noqa: F401
    except ImportError:
        return {"skipped": "PyAV is not installed here"}

    tmp = Path(tempfile.mkdtemp(prefix="livewatch-bench-"))
    video = tmp / "1080p30.mp4"
    n = int(plan.ingest_seconds * 30)
    write_stream(video, plan.ingest_seconds)
    full_cpu, full_sampled = _full_decode(video, frame_size)
    skip_cpu, skip_sampled, skip_stats = _livewatch_path(video, frame_size)
    scoring_ms = _scoring_ms(frame_size)
    store_ms = _store_ms(tmp / "state")
    return {
        "stream": f"1920x1080 {n / plan.ingest_seconds:.0f} fps H.264, 1 s GOP, {plan.ingest_seconds:g} s",
        "full_decode_cpu_s_per_camera_s": round(full_cpu / plan.ingest_seconds, 4),
        "full_decode_sampled": full_sampled,
        "livewatch_cpu_s_per_camera_s": round(skip_cpu / plan.ingest_seconds, 4),
        "livewatch_sampled": skip_sampled,
        "livewatch_keyframes_only": skip_stats["keyframes_only"],
        "livewatch_packets_skipped": skip_stats["packets_skipped"],
        "importance_ms_per_pair": round(scoring_ms, 3),
        "store_ms_per_pair": round(store_ms, 3),
        "store_frame_size": f"{FULL_HD[1]}x{FULL_HD[0]}",
        "note": "store cost of 1080p frames stored uncapped: JPEG encode+decode at 1920x1080, fsync'ed file "
                "writes and one SQLite commit (the daemon stores frames at the model's cap: less)",
    }
