"""The capacity plan of README "Cluster", printed from measurements: ``python tools/capacity_plan.py``.

For CAMERAS cameras at 1 fps with WATCHES watches each (default 1,000 and 2):

- GPUs: from the GPU bench results in tools/bench-results (the ``capacity`` section's cameras kept fresh per GPU and
  the ``watches`` section's watched cameras one GPU sustains: every context version evaluated, p95 <= 2.5 s), the
  tighter of the two, and what surviving the loss of one node of NODE_GPUS GPUs adds.
- Network per camera: the bitrate of a 1080p30 H.264 stream (1 s GOP, the bench's ingest stream: eight synthetic
  scenes panning, libx264 veryfast at its default constant quality), measured by writing it here.
- Disk per camera per day of history: pairs of that stream's frames sampled at 1 fps, stored by the daemon's own
  memory and frame store at the model's pixel cap (Qwen2.5-VL-3B: 14-pixel patches, 2x2 merge, 100,352 pixels), the
  bytes on disk per pair measured here, times the pairs of a day.

Needs PyAV (the tests' environment has it). Synthetic scenes compress unlike a real street: treat the network and
disk figures as this stream's, and scale them by a real camera's bitrate and JPEG sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from benchkit.ingest import FULL_HD, write_stream  # noqa: E402
from livewatch.engine.prompting.preprocess import VisionSpec, target_size  # noqa: E402

RESULTS = ROOT / "tools" / "bench-results"
CAPACITY = RESULTS / "h100-2026-11-27-encode-2-capacity.json"
WATCHES = RESULTS / "h100-2026-11-27-watches-2.json"
SPEC_3B = VisionSpec(14, 2, 2, 3136, 100352, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
SECONDS = 10.0


def per_gpu() -> dict[str, Any]:
    capacity = json.loads(CAPACITY.read_text())["capacity"]
    load = json.loads(WATCHES.read_text())["watches"]["load"]
    watched = max((r["cameras"] for r in load
                   if r["evaluations_per_s"] >= 0.9 * r["cameras"] and r["latency_p95_s"] <= 2.5), default=0)
    return {"kept_fresh": capacity["cameras_kept_fresh"], "kept_fresh_tested_up_to": capacity["tested_up_to"],
            "watched_sustained": watched, "device": json.loads(CAPACITY.read_text())["machine"].get("device_name")}


def stream_figures(tmp: Path, seconds: float = SECONDS) -> dict[str, Any]:
    """The stream's bitrate, and the bytes on disk per stored pair of its frames at the model's cap."""
    import av
    import numpy as np

    from livewatch.frames import Frame
    from livewatch.memory.camera import CameraMemory, MemoryParams
    from livewatch.memory.store import FrameStore

    video = tmp / "1080p30.mp4"
    write_stream(video, seconds)
    bitrate = video.stat().st_size * 8 / seconds
    h, w = target_size(*FULL_HD, SPEC_3B)
    frames: list[np.ndarray] = []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 30 == 0:  # 1 fps
                frames.append(frame.to_ndarray(format="rgb24", width=w, height=h))
    store = FrameStore(tmp / "state")
    memory = CameraMemory("plan", MemoryParams(star_pairs=10, window_pairs=10, frame_size=lambda *_: (h, w),
                                               history_s=86400.0, history_max_bytes=1 << 40), store)
    n = 120
    for i in range(n):
        memory.add_frame(Frame(i, 1.8e9 + i, float(i), frames[i % len(frames)]))
    stats = memory.stats()
    stored = stats["bytes_on_disk"] + stats["history_bytes"]
    pairs = stats["total_frames_added"] // 2
    store.close()
    return {"bitrate_bps": bitrate, "bytes_per_pair": stored / max(1, pairs), "frame_size": f"{w}x{h}"}


def plan(cameras: int, watches: int, node_gpus: int, gpu: dict[str, Any], stream: dict[str, Any]) -> dict[str, Any]:
    per_gpu_cameras = gpu["watched_sustained"] if watches else gpu["kept_fresh"]
    gpus = math.ceil(cameras / per_gpu_cameras)
    nodes = math.ceil(gpus / node_gpus)
    pairs_per_day = 86400 / 2
    return {
        "cameras": cameras, "watches_per_camera": watches, "cameras_per_gpu": per_gpu_cameras,
        "gpus": gpus, "gpus_surviving_one_node_loss": (nodes + 1) * node_gpus, "nodes": nodes + 1,
        "network_mbps_per_camera": round(stream["bitrate_bps"] / 1e6, 2),
        "network_gbps_total": round(cameras * stream["bitrate_bps"] / 1e9, 2),
        "disk_gb_per_camera_day": round(stream["bytes_per_pair"] * pairs_per_day / 1e9, 2),
        "disk_tb_per_day": round(cameras * stream["bytes_per_pair"] * pairs_per_day / 1e12, 2),
        "store_writes_per_s": round(cameras / 2, 1),  # one fsync'ed commit per pair
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--watches", type=int, default=2)
    parser.add_argument("--node-gpus", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of the 1080p stream written")
    args = parser.parse_args(argv)
    from livewatch.log import configure_logging

    configure_logging("warning", "console", stream=sys.stderr)
    gpu = per_gpu()
    with tempfile.TemporaryDirectory(prefix="livewatch-plan-") as tmp:
        stream = stream_figures(Path(tmp), args.seconds)
    result = {"per_gpu": gpu, "stream": {k: (round(v) if isinstance(v, float) else v) for k, v in stream.items()},
              "plan": plan(args.cameras, args.watches, args.node_gpus, gpu, stream)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
