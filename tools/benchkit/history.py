"""The ``history`` section: questions about the past and ``find``, on the daemon's engine path.

An hour of one camera's history at 1 fps (1,800 pairs of frames at the model's cap, synthetic scenes) is held as
the memory would hold it. Measured:

- a question about a 1-hour range: the pairs chosen by the daemon's own rule (memory.history.select_spread: the
  most important half and the rest spread evenly, star + window pairs in all), encoded as a temporary context and
  answered: time to first token, cold (vision on every pair) and warm (the shared history embeddings);
- ``find`` over the hour: chunks of 4 pairs scored with the watch probability through ``EngineWorker.score``, 8
  at a time: archived hours scanned per minute;
- evidence ranking: the same answer with and without it (one prefill of question + answer): its extra time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from benchkit.common import Plan, QUESTION, free
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams, TemporaryContext
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.engine.prompting.preprocess import target_size
from livewatch.engine.synthetic import FrameBank
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.frames import FramePair
from livewatch.memory.history import select_spread

T0 = 1_780_000_000.0


def hour_of_pairs(bank: FrameBank, seconds: float) -> list[FramePair]:
    pairs = [bank.pair(i, T0 + 2.0 * i) for i in range(int(seconds / 2.0))]
    return [FramePair(p.id, p.first, p.second, importance=((p.id * 37) % 100) / 100.0) for p in pairs]


async def _run(lm: LoadedModel, plan: Plan) -> dict[str, Any]:
    bank = FrameBank(target_size(*plan.frame_size, lm.spec))
    pairs = hour_of_pairs(bank, plan.history_seconds)
    chosen = select_spread(pairs, lambda p: p.importance, plan.star_pairs + plan.window_pairs)  # the daemon's rule
    params = SamplingParams(max_new_tokens=plan.answer_tokens, ignore_eos=True)
    out: dict[str, Any] = {"history_pairs": len(pairs), "range_pairs": len(chosen)}
    for ranking in (True, False):
        core = EngineCore(lm, timezone="UTC", max_gap_s=600, evidence_ranking=ranking)
        worker = EngineWorker(core, EngineOptions(slots=8))
        await asyncio.to_thread(worker.start)
        try:
            ttfts, totals = [], []
            for n in range(1 + plan.repeats):  # the first is cold (vision on every pair), the others warm
                name = TemporaryContext("cam", "history", n)
                worker.publish(name, chosen, 1)
                answer = await worker.ask(name, QUESTION, params)
                worker.remove_camera(name)
                ttfts.append(answer.metrics["ttft_ms"])
                totals.append(answer.metrics["total_ms"])
            key = "with_ranking" if ranking else "without_ranking"
            out[f"answer_total_ms_{key}"] = round(statistics.median(totals[1:]), 1)
            if ranking:
                out["range_question_ttft_cold_ms"] = ttfts[0]
                out["range_question_ttft_warm_ms"] = round(statistics.median(ttfts[1:]), 1)
                core.encoder.history.forget("cam")  # find starts cold, as after a restart
                chunks = [pairs[i : i + 4] for i in range(0, len(pairs), 4)]
                t0 = time.perf_counter()
                for start in range(0, len(chunks), 8):
                    await asyncio.gather(*(worker.score(f"cam (find {start + k})", chunk, "a person at the door")
                                           for k, chunk in enumerate(chunks[start : start + 8])))
                seconds = time.perf_counter() - t0
                out["find_chunks"] = len(chunks)
                out["find_seconds"] = round(seconds, 2)
                out["find_archived_hours_per_minute"] = round(plan.history_seconds / 3600.0 / (seconds / 60.0), 2)
        finally:
            worker.stop()
        del core
        free(lm.device)
    out["evidence_ranking_ms_per_answer"] = round(out["answer_total_ms_with_ranking"]
                                                  - out["answer_total_ms_without_ranking"], 1)
    return out


def run(lm: LoadedModel, plan: Plan) -> dict[str, Any]:
    return asyncio.run(_run(lm, plan))
