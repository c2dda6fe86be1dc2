"""The ``watches`` section: what a watch evaluation costs, and how many watched cameras one GPU keeps up with.

1. Evaluation cost: W watches (W = 1, 16, 64, 256; conditions of ordinary length) spread over C cameras (8 pairs
   of context each, C = min(W, 16)) evaluated at once (``WatchEvaluator``: one forward, P(yes) from the first
   answer position), in ms per call and per watch; and the same while 8 answers are being decoded (each engine
   step then decodes and evaluates: the step's extra time over decoding alone).
2. Load: N cameras at 1 fps with 2 watches each on the daemon's ``EngineWorker`` (eager mode: batched encodes,
   then every due watch in one forward), pairs fed in real time as the capacity section does; each evaluation's
   latency runs from the capture of the newest frame of the context it evaluated (the second frame of the pair
   just published) to the evaluation's result reaching the daemon's side. That is the engine's part of an
   event's latency: the daemon adds the memory's work on a pair (~10 ms) and the delivery. "Watched cameras
   sustained" = the largest N with p95 <= 2.5 s. The anchor: NVIDIA's video search and summarization blueprint
   reports 51 live streams per H100 for yes/no alerts, mean latency 3.6 s and p95 4.95 s (10 s chunks).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import torch

from benchkit.capacity import FeedCamera, load, percentile, settle
from benchkit.common import Clock, Plan, context_pairs, free, peak_gib, peak_reset
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.scheduling.loop import EngineLoop
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.engine.prompting.preprocess import target_size
from livewatch.engine.scheduling.scheduler import AskJob
from livewatch.engine.synthetic import FrameBank
from livewatch.engine.model.watcheval import WatchEvaluator
from livewatch.engine.results import WatchResult
from livewatch.engine.scheduling.worker import EngineWorker

CONDITIONS = ("a person is standing at the door", "a package lies on the doorstep", "a car is parked in the drive",
              "the garage door is open")
SUSTAIN_P95_S = 2.5
SUSTAIN_FRACTION = 0.9  # of the evaluations due (2 per camera per new context version)


@torch.inference_mode()
def evaluation_cost(lm: LoadedModel, plan: Plan, counts: tuple[int, ...]) -> list[dict[str, Any]]:
    bank = FrameBank(target_size(*plan.frame_size, lm.spec))
    clock = Clock(lm.device)
    core = EngineCore(lm, timezone="UTC")
    cameras = [f"cam{i}" for i in range(min(max(counts), 16))]
    for i, cam in enumerate(cameras):
        core.set_context(cam, context_pairs(bank, 4, 4, first_id=1000 * i), 1)
    core.encode_many(cameras)
    evaluator = WatchEvaluator(lm)
    decoder = BatchDecoder(core, 8, 4096, use_graphs=lm.device.type == "cuda")
    decoder.capture() if lm.device.type == "cuda" else None
    rows = []
    for w in counts:
        c = min(w, len(cameras))
        queries = [core.watch_query(cameras[i % c], CONDITIONS[i % len(CONDITIONS)]) for i in range(w)]
        evaluator.probabilities(queries)  # first use of the shapes
        times = []
        for _ in range(plan.repeats):
            t0 = clock.now()
            evaluator.probabilities(queries)
            times.append(clock.now() - t0)
        alone = statistics.median(times) * 1e3
        busy = _while_decoding(core, decoder, clock, evaluator, queries, plan)
        rows.append({"watches": w, "cameras": c, "ms_per_call": round(alone, 2), "ms_per_watch": round(alone / w, 3),
                     "extra_ms_per_step_while_decoding_8": round(busy, 2),
                     "suffix_tokens": len(queries[0].suffix)})
    del core, decoder
    free(lm.device)
    return rows


def _while_decoding(core: EngineCore, decoder: BatchDecoder, clock: Clock, evaluator: WatchEvaluator,
                    queries: list, plan: Plan) -> float:
    """The extra time of an engine step that evaluates the watches while 8 answers decode."""
    loop = EngineLoop(core, decoder)
    params = SamplingParams(max_new_tokens=4096 - 2000, ignore_eos=True)
    for i in range(8):
        loop.scheduler.push_ask(AskJob(f"cam{i % 2}", "Describe everything.", params, time.perf_counter()))
    loop.step()  # admit all 8
    steps, with_watch = [], []
    for _ in range(plan.repeats):
        t0 = clock.now()
        loop.step()
        steps.append(clock.now() - t0)
        t0 = clock.now()
        loop.step()
        evaluator.probabilities(queries)
        with_watch.append(clock.now() - t0)
    for row in decoder.active:
        row.cancelled = lambda: True
    while decoder.active:
        loop.step()
    return (statistics.median(with_watch) - statistics.median(steps)) * 1e3


async def _load_run(lm: LoadedModel, plan: Plan, counts: tuple[int, ...]) -> list[dict[str, Any]]:
    bank = FrameBank(target_size(*plan.frame_size, lm.spec))
    results: list[WatchResult] = []
    latencies: list[float] = []

    def on_watches(batch: list[WatchResult]) -> None:
        now = time.time()
        results.extend(batch)
        latencies.extend(now - r.frame_time for r in batch)

    core = EngineCore(lm, timezone="UTC", max_gap_s=600)
    worker = EngineWorker(core, EngineOptions(encode_mode="eager", slots=8), on_watches=on_watches)
    await asyncio.to_thread(worker.start)
    rows = []
    try:
        for n in counts:
            cams = [FeedCamera(f"cam{i}", bank, i, plan.star_pairs, plan.window_pairs, plan.capacity_slack)
                    for i in range(n)]
            for i, cam in enumerate(cams):
                worker.set_watches(cam.name, {f"w{j}": CONDITIONS[(i + j) % len(CONDITIONS)] for j in range(2)})
                worker.publish(cam.name, cam.context(), cam.version)
            await settle(worker)
            peak_reset(lm.device)
            results.clear()
            latencies.clear()
            before = sum(cam.version for cam in cams)
            figures = await load(worker, cams, plan.capacity_seconds, plan.capacity_ask_every_s, [])
            due = 2 * (sum(cam.version for cam in cams) - before)  # 2 watches per new context version
            rows.append({
                "cameras": n, "watches": 2 * n, "evaluations": len(results),
                "evaluated_fraction": round(len(results) / due, 3) if due else None,
                "evaluations_per_s": round(len(results) / plan.capacity_seconds, 1),
                "latency_p50_s": percentile(latencies, 0.5), "latency_p95_s": percentile(latencies, 0.95),
                "latency_mean_s": round(statistics.mean(latencies), 3) if latencies else None,
                "busy_fraction": figures["busy_fraction"], "ttft_p95_ms": figures["ttft_p95_ms"],
                "question_errors": figures["question_errors"], "peak_gib": peak_gib(lm.device),
            })
            print(f"[bench] watches {rows[-1]}", flush=True)
            for cam in cams:
                worker.set_watches(cam.name, {})
                worker.remove_camera(cam.name)
            await settle(worker)
    finally:
        worker.stop()
    return rows


def run(lm: LoadedModel, plan: Plan) -> dict[str, Any]:
    cost = evaluation_cost(lm, plan, plan.watch_counts)
    load_rows = asyncio.run(_load_run(lm, plan, plan.watch_cameras))
    free(lm.device)
    # sustained: the p95 bound holds and the evaluations kept up (a late context version a watch never saw is
    # an event that could be missed, which the latency of the evaluations that did run cannot show)
    sustained = max((r["cameras"] for r in load_rows if r["latency_p95_s"] is not None
                     and r["latency_p95_s"] <= SUSTAIN_P95_S and not r["question_errors"]
                     and (r["evaluated_fraction"] or 0) >= SUSTAIN_FRACTION), default=0)
    return {
        "evaluation": cost,
        "load": load_rows,
        "watched_cameras_sustained": sustained,
        "sustain_bound_p95_s": SUSTAIN_P95_S,
        "sustain_min_evaluated_fraction": SUSTAIN_FRACTION,
        "tested_up_to": max(plan.watch_cameras),
        "anchor": {"source": "NVIDIA video search and summarization blueprint, yes/no alerts", "streams_per_h100": 51,
                   "latency_mean_s": 3.6, "latency_p95_s": 4.95},
    }
