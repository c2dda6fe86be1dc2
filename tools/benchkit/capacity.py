"""The ``capacity`` section: how many cameras one GPU keeps fresh at 1 fps, on the daemon's own engine path.

N synthetic cameras are fed in real time: every camera's memory publishes a new context every 2 s (one pair at
1 fps sampling, the cameras' phases spread over the 2 s), star + window as the daemon's memory keeps them (10
star pairs spread over the last ten minutes, a 10-pair window with ``slack`` pairs of slack: the window grows by
appends and drops back to 10 at once, the rule of livewatch.memory.camera), frames at the size the memory hands
the engine (capped to the pixel limit). The daemon's ``EngineWorker`` (eager mode, the engine thread with its
scheduler, batched encodes, graphs and warm-up) does the rest. Meanwhile a client asks a one-token question on a
random camera every ``ask_every_s``.

Per N: encode lag (per camera encode, from the first context it caught up with being published to the encode's
end) p50/p95/max; the lag seen at random instants (status' encode_lag_s, sampled); the engine thread's busy
fraction; peak GPU memory; question TTFT p50/p95. "cameras kept fresh" = the largest N with p95 lag <= 2 s.

The prototype's method in the same run and the same harness: every frame batch re-encodes the camera's whole
context (vision for every pair, then the whole prefix), one camera at a time (``PrototypeCore``), at the same
frame size (the prototype itself used native-size frames, far costlier: this favours it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from benchkit.common import Plan, context_pairs, free, peak_gib, peak_reset
from livewatch.engine.core import EncodeBatch, EncodeReport, EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.engine.prompting.preprocess import target_size
from livewatch.engine.synthetic import FrameBank
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.frames import FramePair

PAIR_PERIOD_S = 2.0  # 1 fps sampling: a pair every 2 s
FRESH_P95_S = 2.0


class FeedCamera:
    """One camera's published contexts: fixed stars, a window with slack (livewatch.memory.camera's rule)."""

    def __init__(self, name: str, bank: FrameBank, index: int, star: int, window: int, slack: int) -> None:
        self.name = name
        self.bank = bank
        self.first_id = 1_000_000 * (index + 1)
        pairs = context_pairs(bank, star, window, first_id=self.first_id)
        self.stars, self.window = pairs[:star], deque(pairs[star:])
        self.window_pairs, self.slack = window, slack
        self.next_id = self.first_id + star + window
        self.version = 1

    def context(self) -> list[FramePair]:
        return self.stars + list(self.window)

    def advance(self, t: float) -> list[FramePair]:
        """The context after a pair whose second frame was sampled at ``t`` lands."""
        self.window.append(self.bank.pair(self.next_id, t - 1.0))
        self.next_id += 1
        self.version += 1
        if len(self.window) > self.window_pairs + self.slack:
            while len(self.window) > self.window_pairs:
                self.window.popleft()
        return self.context()


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


async def load(worker: EngineWorker, cams: list[FeedCamera], seconds: float, ask_every_s: float,
                reports: list[EncodeReport]) -> dict[str, Any]:
    """Feed the cameras in real time for ``seconds``; ask meanwhile; sample status' lag."""
    ttfts: list[float] = []
    paid: list[float] = []  # TTFT of the questions whose camera's prefix was stale (they encoded it first)
    sampled: list[float] = []
    errors = 0
    t_start = time.monotonic()
    t_wall = time.time()
    phase = {c.name: PAIR_PERIOD_S * i / len(cams) for i, c in enumerate(cams)}
    next_at = {c.name: t_start + phase[c.name] for c in cams}

    async def feed() -> None:
        while (now := time.monotonic()) < t_start + seconds:
            for cam in cams:
                if now >= next_at[cam.name]:
                    worker.publish(cam.name, cam.advance(t_wall + (now - t_start)), cam.version)
                    next_at[cam.name] += PAIR_PERIOD_S
            await asyncio.sleep(0.005)

    async def questions() -> None:
        nonlocal errors
        rng = random.Random(0)
        while time.monotonic() < t_start + seconds:
            await asyncio.sleep(ask_every_s * (0.5 + rng.random()))
            try:
                answer = await worker.ask(rng.choice(cams).name, "Is anyone at the door?",
                                          SamplingParams(max_new_tokens=1, ignore_eos=True))
                ttfts.append(answer.metrics["ttft_ms"])
                if answer.metrics["encode_ms"] > 0:
                    paid.append(answer.metrics["ttft_ms"])
            except Exception:  # counted: a question under load must not fail
                errors += 1

    async def sample() -> None:
        await asyncio.sleep(PAIR_PERIOD_S)  # the first batches of the run, not the start-up state
        while time.monotonic() < t_start + seconds:
            cams_now = worker.stats().get("cameras", {})
            sampled.extend(float(cams_now.get(c.name, {}).get("encode_lag_s", 0.0)) for c in cams)
            await asyncio.sleep(0.2)

    reports.clear()
    busy0 = worker.busy_total_s
    t0 = time.monotonic()
    await asyncio.gather(feed(), questions(), sample())
    wall = time.monotonic() - t0
    lags = [r.lag_s for r in reports]
    steps = sum(1 / r.cameras for r in reports)  # a step's report is repeated for each of its cameras

    def per_step_sum(key: str) -> float:
        return sum(getattr(r, key) / r.cameras for r in reports)

    return {
        "encodes": len(lags),
        "encode_steps": round(steps),
        "cameras_per_step": round(len(reports) / steps, 1) if steps else None,
        "tokens_per_step": round(sum(r.prefill_tokens for r in reports) / steps) if steps else None,
        "encode_ms_per_step": round(per_step_sum("encode_ms") / steps, 1) if steps else None,
        "encode_busy_fraction": round(per_step_sum("encode_ms") / 1e3 / wall, 3),
        "vision_busy_fraction": round(per_step_sum("vision_ms") / 1e3 / wall, 3),
        "prefill_busy_fraction": round(per_step_sum("prefill_ms") / 1e3 / wall, 3),
        "lag_p50_s": percentile(lags, 0.5), "lag_p95_s": percentile(lags, 0.95), "lag_max_s": percentile(lags, 1.0),
        "lag_sampled_p50_s": percentile(sampled, 0.5), "lag_sampled_p95_s": percentile(sampled, 0.95),
        "busy_fraction": round((worker.busy_total_s - busy0) / wall, 3),
        "questions": len(ttfts), "question_errors": errors,
        "ttft_p50_ms": percentile(ttfts, 0.5), "ttft_p95_ms": percentile(ttfts, 0.95),
        "questions_paying_encode": len(paid), "ttft_paying_encode_p50_ms": percentile(paid, 0.5),
    }


async def settle(worker: EngineWorker, timeout: float = 120.0) -> None:
    """Wait until every pending encode ran (the initial contexts encoded; the removed cameras dropped)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = worker.stats()
        if not st["pending_encodes"] and not st["busy_s"] and all(
                f.get("cache_valid") for f in st.get("cameras", {}).values()):
            return
        await asyncio.sleep(0.2)


async def sweep(lm: LoadedModel, plan: Plan, runs: list[tuple[int, int, int]],
                 make_core: type[EngineCore]) -> list[dict[str, Any]]:
    """Each run: (cameras, window slack in pairs, encode step token budget)."""
    bank = FrameBank(target_size(*plan.frame_size, lm.spec))
    reports: list[EncodeReport] = []

    core = make_core(lm, timezone="UTC", max_gap_s=600)
    worker = EngineWorker(core, EngineOptions(encode_mode="eager", slots=8), on_encode=reports.append)
    await asyncio.to_thread(worker.start)
    results = []
    try:
        for n, slack, budget in runs:
            worker.loop.encode_tokens = budget
            cams = [FeedCamera(f"cam{i}", bank, i, plan.star_pairs, plan.window_pairs, slack) for i in range(n)]
            for cam in cams:
                worker.publish(cam.name, cam.context(), cam.version)
            await settle(worker)
            peak_reset(lm.device)
            figures = await load(worker, cams, plan.capacity_seconds, plan.capacity_ask_every_s, reports)
            results.append({"cameras": n, "window_slack_pairs": slack, "encode_step_tokens": budget, **figures,
                            "peak_gib": peak_gib(lm.device)})
            print(f"[bench] capacity {results[-1]}", flush=True)
            for cam in cams:
                worker.remove_camera(cam.name)
            await settle(worker)
    finally:
        worker.stop()
    return results


class PrototypeCore(EngineCore):
    """The prototype's method on the same engine thread: each camera's encode starts from nothing (no cached
    vision, no kept prefix) and runs alone."""

    def encode_many(self, cameras: Sequence[str], token_budget: int | None = None) -> EncodeBatch:
        out = EncodeBatch()
        for camera in cameras:
            if self.needs_encode(camera):
                self.free_caches(camera)
            batch = super().encode_many([camera])
            out.reports += batch.reports
            out.failed += batch.failed
        return out


def kept_fresh(results: list[dict[str, Any]]) -> int:
    """The largest camera count whose p95 encode lag stayed within the bound with no failed question."""
    return max((r["cameras"] for r in results if r["lag_p95_s"] is not None and r["lag_p95_s"] <= FRESH_P95_S
                and not r["question_errors"]), default=0)


def run(lm: LoadedModel, plan: Plan) -> dict[str, Any]:
    budget = EngineOptions().encode_step_tokens
    runs = [(n, plan.capacity_slack, budget) for n in plan.capacity_cameras]
    runs += [(n, 0, budget) for n in plan.capacity_no_slack]  # the same load without window slack
    runs += [(n, plan.capacity_slack, budget // 2) for n in plan.capacity_no_slack]  # and with shorter steps
    results = asyncio.run(sweep(lm, plan, runs, EngineCore))
    free(lm.device)
    proto_runs = [(n, plan.capacity_slack, budget) for n in plan.capacity_prototype]
    proto = asyncio.run(sweep(lm, plan, proto_runs, PrototypeCore))
    free(lm.device)
    kept = kept_fresh([r for r in results if r["window_slack_pairs"] == plan.capacity_slack
                       and r["encode_step_tokens"] == budget])
    proto_kept = kept_fresh(proto)
    return {
        "runs": results,
        "prototype_runs": proto,
        "cameras_kept_fresh": kept,
        "fresh_bound_p95_s": FRESH_P95_S,
        "tested_up_to": max(plan.capacity_cameras),
        "prototype_cameras_kept_fresh": proto_kept,
        "prototype_tested_up_to": max(plan.capacity_prototype),
        "ratio": round(kept / proto_kept, 1) if proto_kept else None,
    }
