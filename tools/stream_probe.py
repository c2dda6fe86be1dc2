#!/usr/bin/env python3
"""When do an answer's streamed pieces reach the event loop, against when the engine picked them?

    python tools/stream_probe.py --arch qwen2.5-vl-3b --random-weights      # GPU
    python tools/stream_probe.py --arch tiny --random-weights --device cpu  # CPU smoke

The daemon's worker (EngineWorker, its own thread) answers on one camera's encoded context while the event loop
runs a 1 ms ticker. For each answer: the engine's own first-token time (metrics.ttft_ms), when the first text
piece reached the loop (what a client can get at best), the number of pieces that reached the loop before the
answer ended, and the loop's worst tick delay (how long the loop was kept from running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from benchkit.capacity import FeedCamera, settle  # noqa: E402
from benchkit.common import build_model  # noqa: E402
from livewatch.engine.core import EngineCore  # noqa: E402
from livewatch.engine.results import SamplingParams  # noqa: E402
from livewatch.engine.scheduling.options import EngineOptions  # noqa: E402
from livewatch.engine.prompting.preprocess import target_size  # noqa: E402
from livewatch.engine.synthetic import FrameBank  # noqa: E402
from livewatch.engine.scheduling.worker import EngineWorker  # noqa: E402


async def probe(lm, tokens: list[int], rounds: int) -> list[dict]:
    core = EngineCore(lm, timezone="UTC", max_gap_s=600)
    worker = EngineWorker(core, EngineOptions(encode_mode="eager", slots=8))
    await asyncio.to_thread(worker.start)
    cam = FeedCamera("cam", FrameBank(target_size(1080, 1920, lm.spec)), 0, 10, 10, 3)
    worker.publish(cam.name, cam.context(), cam.version)
    await settle(worker)
    worst = [0.0]
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst[0] = max(worst[0], now - last - 0.001)
            last = now

    tick = asyncio.create_task(ticker())
    rows = []
    try:
        for n in tokens:
            for _ in range(rounds):
                arrivals: list[float] = []
                worst[0] = 0.0
                t0 = time.perf_counter()
                answer = await worker.ask("cam", "Describe the picture.",
                                          SamplingParams(max_new_tokens=n, ignore_eos=True),
                                          lambda _: arrivals.append(time.perf_counter()))
                t_end = time.perf_counter()
                await asyncio.sleep(0.05)
                rows.append({"max_tokens": n, "engine_ttft_ms": answer.metrics["ttft_ms"],
                             "first_piece_at_loop_ms": round((arrivals[0] - t0) * 1e3, 2) if arrivals else None,
                             "answer_ms": round((t_end - t0) * 1e3, 2),
                             "pieces_before_end": sum(a < t_end for a in arrivals), "pieces": len(arrivals),
                             "worst_loop_delay_ms": round(worst[0] * 1e3, 2), "text_chars": len(answer.text),
                             "first_ids": list(answer.token_ids[:4])})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        stop.set()
        await tick
        worker.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=["qwen2.5-vl-3b", "tiny"])
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--model", default="")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--max-pixels", type=int, default=100352)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(probe(build_model(args), args.tokens, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
