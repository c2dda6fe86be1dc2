#!/usr/bin/env python3
"""Where an encode step's time goes: one camera's extension alone, and several cameras' in one step.

    python tools/profile_encode.py --arch qwen2.5-vl-3b --random-weights    # GPU, the 3B architecture
    python tools/profile_encode.py --tiny                                    # CPU smoke run

Cameras hold 10 star + 10 window pairs of 1080p frames at the default pixel cap (the bench's contexts); each
measured step lands one new pair per camera (an extension). Prints, per case, the step's wall time split into host
preparation, vision and prefill (EncodeReport), and the torch profiler's top operators by host and device time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchkit.capacity import FeedCamera  # noqa: E402
from benchkit.common import build_model  # noqa: E402
from livewatch.engine.core import EngineCore  # noqa: E402
from livewatch.engine.prompting.preprocess import target_size  # noqa: E402
from livewatch.engine.synthetic import FrameBank  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=["qwen2.5-vl-3b", "tiny"])
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rows", type=int, default=12, help="operators listed per table")
    args = parser.parse_args()
    args.model, args.device, args.dtype, args.attn, args.max_pixels = None, "auto", "auto", "sdpa", 100352
    lm = build_model(args)
    cuda = lm.device.type == "cuda"
    core = EngineCore(lm, timezone="UTC", max_gap_s=600)
    bank = FrameBank(target_size(1080, 1920, lm.spec))
    cams = [FeedCamera(f"cam{i}", bank, i, 10, 10, 3) for i in range(max(args.cameras))]
    for cam in cams:
        core.set_context(cam.name, cam.context(), cam.version)
    core.encode_many([c.name for c in cams])
    t = time.time()

    def step(n: int) -> dict[str, float]:
        nonlocal t
        for cam in cams[:n]:
            t += 2.0
            core.set_context(cam.name, cam.advance(t), cam.version)
        t0 = time.perf_counter()
        batch = core.encode_many([c.name for c in cams[:n]])
        wall = (time.perf_counter() - t0) * 1e3
        r = batch.reports[0][1]
        return {"wall_ms": round(wall, 2), "vision_ms": round(r.vision_ms, 2), "prefill_ms": round(r.prefill_ms, 2),
                "host_ms": round(wall - r.vision_ms - r.prefill_ms, 2),
                "tokens": sum(x.prefill_tokens for _, x in batch.reports), "kinds": sorted({x.kind.value for _, x in batch.reports})}

    for n in args.cameras:
        for _ in range(3):  # first use of the shapes, and the window's slack cycle
            step(n)
        plain = [step(n) for _ in range(4)]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            profiled = step(n)
        print(f"== {n} camera(s) per step: {json.dumps(plain)}; profiled {json.dumps(profiled)}")
        events = prof.key_averages()
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))
        if cuda:
            print(events.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
    print(json.dumps(core.encoder.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
