#!/usr/bin/env python3
"""Star memory on the event suite: event recall, false stars, churn and CPU per pair, new scorer against the
previous one, same footage, same run.

    python tools/bench_memory.py [--quick] [--out DIR]

Footage comes from ``tools/event_suite.py`` (generated now, nothing downloaded) and is scored two ways:

- **capture**: every clip of the suite written as H.264 (640x360, 5 fps, 400 kbit/s, 1 s GOP) and played through
  the daemon's capture path (``CameraReader``: demux, keyframe-only decode, 1 fps sampling, conversion to the
  model's 224x420 cap) into a ``CameraMemory`` (JPEG round trip, importance, star memory, window). The reader is
  not paced to the media clock (a 2-minute clip takes seconds) and its hand-off is unbounded, so no frame is
  dropped; frame times are the media times the sampler picked (recorded by wrapping it), on a wall clock that
  starts at an arbitrary epoch.
- **long**: distractor-only footage rendered straight into the memory at the same size (no H.264: JPEG
  quality 50 stands in for the compression), long enough for a rate per hour: 1 hour (``--quick``: 12 minutes)
  across noise, exposure steps, drift, foliage, rain, a fan and night-mode switches.

Star memory as the daemon's default: 10 pairs (20 frames), window 10 pairs, threshold 0.6. The previous scorer
(``tools/benchkit/legacy_importance.py``) runs on the same frames with the same JPEG round trip and the same star
memory rules (its own distance for duplicates).

Figures: recall of events covering >= 2% of the frame and lasting >= 2 s (the issue's bar) and of all events
(1-30%, 1-10 s): an event is recalled when, after the clip (whose tail lets the window pass the last event), a
star pair has a frame taken while the event was visible. False stars: admissions whose frames show no event
(with 1 s of slack), per hour of footage. A clip's first pair is counted apart for both scorers (the new one
keeps it as the scene's reference, ``StarMemory.offer_reference``, one per camera start; the previous one
scored it 1.0). Churn: admissions per hour (each changes the context the model must re-encode). CPU: thread CPU
time of scoring, per pair (the new scorer's includes its novelty checks against the stars).

``memory_section(quick)`` returns the JSON and ``markdown(result)`` the table, for ``tools/bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from event_suite import CLIP_FPS, Clip, Outcome, Renderer, Thing, suite, write_clip  # noqa: E402
from livewatch.frames import Frame, resize  # noqa: E402
from livewatch.memory.camera import CameraMemory, MemoryParams  # noqa: E402
from livewatch.memory.jpegfile import decode_jpeg, encode_jpeg  # noqa: E402
from benchkit.legacy_importance import legacy_distance, legacy_importance, legacy_signature  # noqa: E402
from livewatch.memory.star import StarMemory  # noqa: E402

EPOCH = 1_800_000_000.0  # wall clock of a clip's media time 0 (times relative to it are rounded to 1 ms: float64
# holds 1.8e9 s to ~2e-7 s, so 87.8 s after it would read 87.79999995)
SAMPLE_FPS = 1.0  # capture.fps default
STAR_PAIRS = 10
WINDOW_PAIRS = 10
THRESHOLD = 0.6
LONG_KINDS = [("noise",), ("noise", "exposure"), ("noise", "drift"), ("noise", "foliage"), ("noise", "rain"),
              ("noise", "fan"), ("noise", "drift", "night")]


def model_frame_size(h: int, w: int, factor: int = 28, min_pixels: int = 3136,
                     max_pixels: int = 100352) -> tuple[int, int]:
    """Qwen2.5-VL's smart_resize at the default cap (what the daemon's capture converts frames to)."""
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


# -- the two scorers, fed the same frames -----------------------------------------------------------------------


class NewScorer:
    """The daemon's path: a CameraMemory (no store) with the default star memory."""

    name = "new"

    def __init__(self) -> None:
        self.memory = CameraMemory("bench", MemoryParams(star_pairs=STAR_PAIRS, window_pairs=WINDOW_PAIRS,
                                                         threshold=THRESHOLD, frame_size=model_frame_size))
        self.cpu = 0.0
        self.scored = 0  # pairs scored
        self.admissions: list[tuple[float, str]] = []  # (pair time, reason)
        self.evictions = 0
        score = self.memory.importance.score_pair
        offer = self.memory.stars.offer
        reference = self.memory.stars.offer_reference

        def timed_score(*args: Any, **kw: Any) -> Any:
            self.scored += 1
            c0 = time.thread_time()
            try:
                return score(*args, **kw)
            finally:
                self.cpu += time.thread_time() - c0

        def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(pid: int, t: float, *args: Any) -> Any:
                decision = fn(pid, t, *args)
                if decision.admitted:
                    self.admissions.append((round(t - EPOCH, 3), decision.reason))
                    self.evictions += decision.evicted is not None
                return decision
            return wrapper

        self.memory.importance.score_pair = timed_score  # type: ignore[method-assign]
        self.memory.stars.offer = counted(offer)  # type: ignore[method-assign]
        self.memory.stars.offer_reference = counted(reference)  # type: ignore[method-assign]

    def add(self, frame: Frame) -> None:
        self.memory.add_frame(frame)

    def finish(self) -> list[list[float]]:
        self.memory.flush_pending()
        pairs, _ = self.memory.context()
        stars = set(self.memory.stars.ids())
        return [[round(p.first.wall_time - EPOCH, 3), round(p.second.wall_time - EPOCH, 3)] for p in pairs
                if p.id in stars]

    def pairs(self) -> int:
        return self.scored


class LegacyScorer:
    """The previous scorer: same frame preparation (cap + JPEG 90 round trip), same star rules, its own
    signature, score and duplicate distance."""

    name = "legacy"

    def __init__(self) -> None:
        self.stars = StarMemory(STAR_PAIRS, THRESHOLD, 600.0, distance=legacy_distance)  # type: ignore[arg-type]
        self.prev: Any = None
        self.pending: Frame | None = None
        self.times: dict[int, tuple[float, float]] = {}
        self.cpu = 0.0
        self.admissions: list[tuple[float, str]] = []
        self.evictions = 0
        self.n = 0

    def add(self, frame: Frame) -> None:
        image = decode_jpeg(encode_jpeg(resize(frame.image, model_frame_size(*frame.image.shape[:2])), 90))
        assert image is not None
        frame = Frame(frame.seq, frame.wall_time, frame.mono_time, image)
        if self.pending is None:
            self.pending = frame
            return
        first, self.pending = self.pending, None
        self._pair(first, frame)

    def _pair(self, first: Frame, second: Frame) -> None:
        pid = self.n
        self.n += 1
        c0 = time.thread_time()
        sig = legacy_signature(first.image, second.image)
        score = legacy_importance(sig, self.prev, self.stars.signatures())  # type: ignore[arg-type]
        self.cpu += time.thread_time() - c0
        self.prev = sig
        self.times[pid] = (round(first.wall_time - EPOCH, 3), round(second.wall_time - EPOCH, 3))
        decision = self.stars.offer(pid, first.wall_time, score, sig)  # type: ignore[arg-type]
        if decision.admitted:
            self.admissions.append((round(first.wall_time - EPOCH, 3), decision.reason))
            self.evictions += decision.evicted is not None

    def finish(self) -> list[list[float]]:
        if self.pending is not None:
            first, self.pending = self.pending, None
            self._pair(first, first)
        return [list(self.times[i]) for i in self.stars.ids()]

    def pairs(self) -> int:
        return self.n


Scorer = NewScorer | LegacyScorer


def _outcome(clip: Clip, scorer: Scorer) -> Outcome:
    out = Outcome(clip, star_frames=scorer.finish(), pairs=scorer.pairs(), score_s=scorer.cpu)
    out.admitted = len(scorer.admissions)
    out.evicted = scorer.evictions
    out.admissions = list(scorer.admissions)
    if isinstance(scorer, NewScorer):
        out.stats = scorer.memory.stats()
    return out


def score_frames(clip: Clip, frames: Iterable[Frame], legacy: bool = True) -> dict[str, Outcome]:
    """Both scorers (``legacy`` False: the new one only) over one clip's sampled frames."""
    scorers: list[Scorer] = [NewScorer(), LegacyScorer()] if legacy else [NewScorer()]
    for frame in frames:
        for s in scorers:
            s.add(frame)
    return {s.name: _outcome(clip, s) for s in scorers}


# -- footage -----------------------------------------------------------------------------------------------------


def rendered_frames(clip: Clip, jpeg_quality: int = 50) -> Iterator[Frame]:
    """The clip sampled at 1 fps straight from the renderer, JPEG-compressed (decode-free path)."""
    renderer = Renderer(clip)
    for seq, (t, img) in enumerate(renderer.frames(SAMPLE_FPS)):
        if jpeg_quality < 100:
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            img = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        yield Frame(seq, EPOCH + t, t, img)


def captured_frames(path: Path, fps: float = SAMPLE_FPS) -> list[Frame]:
    """A file played through the daemon's capture path (CameraReader), unpaced, nothing dropped; each frame
    carries its media time on the EPOCH wall clock. The media times are those the reader's sampler accepted, in
    order (the sampler is wrapped to record them; it decides exactly as before)."""
    from livewatch.capture import reader as reader_module
    from livewatch.capture.handoff import LatestHandoff
    from livewatch.capture.sampler import Sampler
    from livewatch.capture.source import parse_source

    accepted: list[float] = []

    class RecordingSampler(Sampler):
        def want(self, t: float) -> bool:
            keep = super().want(t)
            if keep:
                accepted.append(t)
            return keep

    async def read() -> list[Frame]:
        spec = dataclasses.replace(parse_source(str(path)), realtime=False)
        handoff: LatestHandoff[Frame] = LatestHandoff(asyncio.get_running_loop(), maxlen=1 << 20)
        reader = reader_module.CameraReader("suite", spec, handoff, fps=fps, frame_size=model_frame_size)
        reader.start()
        frames: list[Frame] = []
        while (frame := await handoff.get()) is not None:
            frames.append(frame)
        reader.stop()
        if reader.supervisor.last_error:
            raise RuntimeError(f"{path}: {reader.supervisor.last_error}")
        return frames

    original = reader_module.Sampler
    reader_module.Sampler = RecordingSampler  # type: ignore[misc]
    try:
        frames = asyncio.run(read())
    finally:
        reader_module.Sampler = original  # type: ignore[misc]
    if len(accepted) != len(frames):
        raise RuntimeError(f"{path}: {len(frames)} frames but {len(accepted)} sampled")
    return [Frame(f.seq, EPOCH + t, t, f.image) for f, t in zip(frames, accepted)]


def run_capture(clips: list[Clip], workdir: Path, legacy: bool = True, fps: int = CLIP_FPS) -> list[dict[str, Outcome]]:
    """Each clip written as H.264 at ``fps`` (1 s GOP), played through the capture path, scored."""
    results = []
    for clip in clips:
        path = write_clip(workdir / f"{clip.name}.mp4", clip, fps=fps)
        frames = captured_frames(path)
        expected = int(clip.seconds * SAMPLE_FPS)
        if abs(len(frames) - expected) > 1:
            raise RuntimeError(f"{clip.name}: {len(frames)} frames sampled, {expected} expected")
        results.append(score_frames(clip, frames, legacy))
        path.unlink()
    return results


def long_distractors(minutes: float) -> list[Clip]:
    per = minutes * 60.0 / len(LONG_KINDS)
    return [Clip(f"long-{'+'.join(k[1:]) or 'noise'}", round(per), 500 + i, distractors=k)
            for i, k in enumerate(LONG_KINDS)]


# -- figures -----------------------------------------------------------------------------------------------------


def _must(thing: Thing) -> bool:
    return thing.area >= 0.02 and thing.duration >= 2.0


def _shows_event(clip: Clip, t: float) -> bool:
    return any(e.start - 1.0 <= s < e.end + 1.0 for e in clip.events for s in (t, t + 1.0 / SAMPLE_FPS))


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    hours = sum(o.clip.seconds for o in outcomes) / 3600.0
    events = [(o, e) for o in outcomes for e in o.clip.events]
    must = [(o, e) for o, e in events if _must(e)]
    # a clip's first pair: the new scorer keeps it as the scene's reference, the previous one scored it 1.0 (nothing
    # to compare with); either way it says nothing about events, and it is counted apart for both
    first = [(o, t) for o in outcomes for t, _ in o.admissions if t < 2.0 / SAMPLE_FPS]
    later = [(o, t) for o in outcomes for t, _ in o.admissions if t >= 2.0 / SAMPLE_FPS]
    false = sum(1 for o, t in later if not _shows_event(o.clip, t))
    admitted = len(later)
    pairs = sum(o.pairs for o in outcomes)
    missed = [f"{o.clip.name}@{e.start:g}s {e.kind}/{e.colour} {e.area:.0%} {e.duration:g}s"
              for o, e in must if not o.recalled(e)]
    return {
        "clips": len(outcomes),
        "hours": round(hours, 4),
        "events": len(events),
        "events_must": len(must),
        "recall_must": round(sum(o.recalled(e) for o, e in must) / len(must), 4) if must else None,
        "recall_all": round(sum(o.recalled(e) for o, e in events) / len(events), 4) if events else None,
        "missed_must": missed,
        "false_stars": false,
        "false_stars_per_hour": round(false / hours, 2) if hours else None,
        "first_pair_stars": len(first),
        "admissions": admitted,
        "admissions_per_hour": round(admitted / hours, 1) if hours else None,
        "evictions": sum(o.evicted for o in outcomes),
        "pairs": pairs,
        "cpu_ms_per_pair": round(1e3 * sum(o.score_s for o in outcomes) / pairs, 3) if pairs else None,
    }


def memory_section(quick: bool) -> dict[str, Any]:
    """The ``memory`` bench section: both scorers on the event suite (capture path) and on long distractor
    footage (decode-free). ``quick``: the default test run's subset and 12 minutes of long footage."""
    t0 = time.monotonic()
    event_clips, distractor_clips = suite(quick)
    with tempfile.TemporaryDirectory(prefix="livewatch-suite-") as tmp:
        captured = run_capture(event_clips + distractor_clips, Path(tmp))
    long_clips = long_distractors(12.0 if quick else 60.0)
    long = [score_frames(c, rendered_frames(c)) for c in long_clips]
    result: dict[str, Any] = {
        "quick": quick,
        "settings": {"star_pairs": STAR_PAIRS, "window_pairs": WINDOW_PAIRS, "threshold": THRESHOLD,
                     "sample_fps": SAMPLE_FPS, "clip": f"640x360 H.264 {CLIP_FPS} fps 400 kbit/s, GOP 1 s",
                     "memory_frames": "224x420"},
        "clips": {"events": [c.describe() for c in event_clips],
                  "distractors": [c.describe() for c in distractor_clips],
                  "long": [c.describe() for c in long_clips]},
    }
    n_events = len(event_clips)
    for name in ("new", "legacy"):
        result[name] = {
            "events_capture": summarise([r[name] for r in captured[:n_events]]),
            "distractors_capture": summarise([r[name] for r in captured[n_events:]]),
            "distractors_long": summarise([r[name] for r in long]),
            "per_clip": {r[name].clip.name: {"stars": r[name].star_frames, "admissions": r[name].admissions}
                         for r in captured + long},
        }
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def markdown(result: dict[str, Any]) -> str:
    new, old = result["new"], result["legacy"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    ev_n, ev_o = new["events_capture"], old["events_capture"]
    dc_n, dc_o = new["distractors_capture"], old["distractors_capture"]
    dl_n, dl_o = new["distractors_long"], old["distractors_long"]
    rows = [
        ("event recall, >= 2% of the frame and >= 2 s "
         f"({ev_n['events_must']} events, H.264 capture path)", pct(ev_n["recall_must"]), pct(ev_o["recall_must"])),
        (f"event recall, all sizes and durations ({ev_n['events']} events: 1-30%, 1-10 s)",
         pct(ev_n["recall_all"]), pct(ev_o["recall_all"])),
        (f"false stars per hour, distractor clips (capture path, {dc_n['hours'] * 60:.0f} min)",
         f"{dc_n['false_stars_per_hour']:g} ({dc_n['false_stars']})", f"{dc_o['false_stars_per_hour']:g} "
         f"({dc_o['false_stars']})"),
        (f"false stars per hour, long distractor footage ({dl_n['hours'] * 60:.0f} min, decode-free)",
         f"{dl_n['false_stars_per_hour']:g} ({dl_n['false_stars']})",
         f"{dl_o['false_stars_per_hour']:g} ({dl_o['false_stars']})"),
        ("false stars per hour, event clips (stars showing no event)",
         f"{ev_n['false_stars_per_hour']:g} ({ev_n['false_stars']})",
         f"{ev_o['false_stars_per_hour']:g} ({ev_o['false_stars']})"),
        ("star churn: admissions per hour, event clips", f"{ev_n['admissions_per_hour']:g}",
         f"{ev_o['admissions_per_hour']:g}"),
        ("star churn: admissions per hour, long distractor footage", f"{dl_n['admissions_per_hour']:g}",
         f"{dl_o['admissions_per_hour']:g}"),
        ("first pair of each clip kept as a star, not counted above (new: the scene reference; previous: scored 1.0)",
         str(ev_n["first_pair_stars"] + dc_n["first_pair_stars"] + dl_n["first_pair_stars"]),
         str(ev_o["first_pair_stars"] + dc_o["first_pair_stars"] + dl_o["first_pair_stars"])),
        ("CPU per pair, scoring (thread time)", f"{ev_n['cpu_ms_per_pair']:.2f} ms",
         f"{ev_o['cpu_ms_per_pair']:.2f} ms"),
    ]
    lines = ["| star memory (10 pairs, threshold 0.6) | new scorer | previous scorer |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if ev_n["missed_must"]:
        lines.append("")
        lines.append("Missed by the new scorer: " + "; ".join(ev_n["missed_must"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default test run's subset, 12 min of long footage")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench")
    args = parser.parse_args(argv)
    result = memory_section(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "memory-quick" if args.quick else "memory"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    print(f"({result['seconds']} s; {args.out / (stem + '.json')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
