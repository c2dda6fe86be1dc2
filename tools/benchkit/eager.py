"""The ``livewatch`` section: livewatch's eager, unbatched path (EngineCore.ask), the fast path's reference.

20 star + 20 window frames at the default pixel cap (full plan): eager (prefix ready) and lazy (first question
after a new batch) time to first token, follow-up on the reused prefix, decode rate, a whole answer. The
question scenario itself (``scenario``) is shared with the fast path's section, so the two compare like for like.
(Named ``eager`` so that no module under tools/ shadows the ``livewatch`` package.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchkit.common import Plan, ask, context_pairs, free, median, peak_gib, peak_reset
from livewatch.engine.core import EngineCore
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.synthetic import FrameBank


def scenario(
    core: EngineCore, plan: Plan, bank: FrameBank, ask_cam: Callable[[int], dict[str, Any]]
) -> dict[str, Any]:
    """The question scenario both decode paths run: the prefix built as the batch lands (eager mode), a question
    on the ready prefix, follow-ups, a whole answer, then new batches each followed by a question (lazy mode:
    one pair lands, the oldest window pair leaves, as at 1 fps in steady state). ``ask_cam(tokens)`` returns the
    metrics of one question on camera "cam"."""
    stars = context_pairs(bank, plan.star_pairs, 0)
    window = context_pairs(bank, 0, plan.window_pairs, first_id=plan.star_pairs)
    core.set_context("cam", stars + window, 1)
    build = core.encode("cam")
    ready = ask_cam(1)
    followups = [ask_cam(1)["ttft_ms"] for _ in range(plan.repeats)]
    answer = ask_cam(plan.answer_tokens)
    lazy = []
    next_id = plan.star_pairs + plan.window_pairs
    for version in range(2, 2 + plan.repeats):
        window = window[1:] + [bank.pair(next_id, window[-1].time + 2.0)]
        next_id += 1
        core.set_context("cam", stars + window, version)
        lazy.append(ask_cam(1))
    return {
        "frames_in_context": answer["frames_in_context"],
        "visual_tokens": answer["visual_tokens"],
        "context_tokens": answer["context_tokens"],
        "prefix_build_ms": round(build.encode_ms, 1),
        "prefix_build_vision_ms": round(build.vision_ms, 1),
        "prefix_build_prefill_ms": round(build.prefill_ms, 1),
        "eager_ttft_ms": ready["ttft_ms"],
        "followup_ttft_ms": median(followups),
        "lazy_first_question_ttft_ms": median([m["ttft_ms"] for m in lazy]),
        "lazy_encode_ms": median([m["encode_ms"] for m in lazy]),
        "answer_tokens": answer["output_tokens"],
        "answer_total_ms": answer["total_ms"],
        "decode_tokens_per_s": answer["decode_tokens_per_s"],
        "kv_bytes": core.camera_stats("cam")["kv_bytes"],
    }


@torch.inference_mode()
def run(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """The eager, unbatched path (EngineCore.ask)."""
    peak_reset(lm.device)
    core = EngineCore(lm, timezone="UTC")
    result = scenario(core, plan, bank, lambda tokens: ask(core, "cam", tokens))
    result["peak_gib"] = peak_gib(lm.device)
    del core
    free(lm.device)
    return result
