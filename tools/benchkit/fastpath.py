"""The ``fastpath`` section: the daemon's decode path (batched slots, CUDA graphs on a GPU, eager on the CPU).

The same question scenario as the eager path (``eager.scenario``) through the daemon's own engine step, the
greedy agreement with the eager path, where a decode step's time goes (graph replay alone vs the whole call, host
work included; one step per call vs eight), and concurrent questions: clients arriving at once on 4 cameras,
batched (the daemon's scheduler admitting them all) against one by one.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchkit import agreement
from benchkit.common import FULL, Clock, Plan, context_pairs, fast_answer, free, median, peak_gib, peak_reset
from benchkit.eager import scenario
from livewatch.engine.answer import Answer
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.model.fastpath import StepRunner
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.scheduling.loop import EngineLoop, answer_all, answer_of
from livewatch.engine.scheduling.scheduler import AskJob, Scheduler
from livewatch.engine.synthetic import FrameBank


def _step_breakdown(runner: StepRunner, clock: Clock, rows: tuple[int, int, int], reps: int) -> dict[str, Any]:
    """Where a decode step's time goes: graph replay alone vs the whole call (host work included)."""
    runner.set_rows(1, {0: rows})
    runner.decode(1, 1)
    t0 = clock.now()
    for _ in range(reps):
        runner.decode(1, 1)
    call_1 = (clock.now() - t0) / reps
    t0 = clock.now()
    for _ in range(reps):
        runner.decode(1, 8)
    call_8 = (clock.now() - t0) / reps / 8
    replay = None
    graph = runner.decode_graph(1)
    if graph is not None:
        t0 = clock.now()
        for _ in range(reps):
            graph.graph.replay()
        replay = (clock.now() - t0) / reps
    return {
        "graph_replay_only": round(replay * 1e3, 3) if replay is not None else None,
        "decode_call_1_step": round(call_1 * 1e3, 3),
        "decode_call_8_steps_per_token": round(call_8 * 1e3, 3),
    }


def _concurrent(core: EngineCore, dec: BatchDecoder, cams: list[str], n_clients: int, tokens: int,
                batched: bool) -> dict[str, Any]:
    clock = Clock(core.lm.device)
    t0 = clock.now()
    answers: list[Answer] = []
    if batched:  # every client's question in the scheduler at once: the daemon's admissions and steps
        params = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
        jobs = [AskJob(cams[i % len(cams)], f"question {i}?", params, t0, client=f"client{i}")
                for i in range(n_clients)]
        outcomes = answer_all(EngineLoop(core, dec, Scheduler(max_queued=n_clients)), jobs)
        answers.extend(answer_of(o) for o in outcomes.values())
    else:
        for i in range(n_clients):
            answers.append(fast_answer(core, dec, cams[i % len(cams)], tokens, t0=t0, question=f"question {i}?"))
    wall = clock.now() - t0
    total_tokens = sum(a.metrics["output_tokens"] for a in answers)
    return {
        "clients": n_clients, "tokens_each": tokens, "wall_ms": round(wall * 1e3, 1),
        "aggregate_tokens_per_s": round(total_tokens / wall, 1),
        "slowest_ttft_ms": round(max(a.metrics["ttft_ms"] for a in answers), 1),
        "median_ttft_ms": median([a.metrics["ttft_ms"] for a in answers]),
        "slowest_last_token_ms": round(max(a.metrics["total_ms"] for a in answers), 1),
    }


@torch.inference_mode()
def run(lm: LoadedModel, plan: Plan, bank: FrameBank, eager_lw: dict[str, Any]) -> dict[str, Any]:
    """The daemon's decode path: batched slots, CUDA graphs on a GPU (eager on the CPU)."""
    peak_reset(lm.device)
    core = EngineCore(lm, timezone="UTC")
    n_clients = 16 if plan is FULL else 4
    dec = BatchDecoder(core, slots=n_clients, max_len=4096, use_graphs=True)
    capture_s = dec.capture()
    result = scenario(
        core, plan, bank, lambda tokens: fast_answer(core, dec, "cam", tokens, t0=time.perf_counter()).metrics
    )

    agree, prepared = agreement.compare(core, dec, plan)
    breakdown = _step_breakdown(dec.runner, Clock(lm.device), (1, prepared.next_position, prepared.prefix_tokens),
                                20 if plan is FULL else 5)

    # concurrent questions: 4 cameras, clients arriving at once; batched vs one by one
    cams = [f"c{i}" for i in range(4)]
    for i, cam in enumerate(cams):
        core.set_context(cam, context_pairs(bank, plan.star_pairs, plan.window_pairs, first_id=1000 * (i + 1)), 1)
        core.encode(cam)
    tokens = plan.answer_tokens // 2
    batched = _concurrent(core, dec, cams, n_clients, tokens, batched=True)
    one_by_one = _concurrent(core, dec, cams, n_clients, tokens, batched=False)
    out = {
        "decoder": dec.stats(),
        "capture_s": round(capture_s, 2),
        **result,
        "decode_speedup_vs_eager_path": round(result["decode_tokens_per_s"] / eager_lw["decode_tokens_per_s"], 2)
        if eager_lw.get("decode_tokens_per_s") else None,
        "greedy_agreement": agree,
        "step_breakdown_ms": breakdown,
        "concurrent_batched": batched,
        "concurrent_one_by_one": one_by_one,
        "peak_gib": peak_gib(lm.device),
    }
    del dec, core
    free(lm.device)
    return out
