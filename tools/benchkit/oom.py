"""The ``oom`` section (GPU): a real CUDA out-of-memory in the middle of a question. It records the failed job's
error, whether the engine reported it as out of memory and freed the camera's caches, and that the next question
is answered.
"""

from __future__ import annotations

from typing import Any

import torch

from benchkit.common import QUESTION, Plan, context_pairs, free
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.synthetic import FrameBank
from livewatch.errors import EngineError


@torch.inference_mode()
def run(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """A real CUDA out-of-memory in the middle of a question: that job fails, the next one is answered."""
    if lm.device.type != "cuda":
        return {"skipped": "needs a GPU"}
    core = EngineCore(lm, timezone="UTC")
    core.set_context("cam", context_pairs(bank, plan.star_pairs, plan.window_pairs), 1)
    free(lm.device)  # the allocator's cached blocks go back, so the hog below really leaves ~16 MiB
    free_bytes, _ = torch.cuda.mem_get_info(lm.device)
    hog = torch.empty(max(free_bytes - 16 * 2**20, 0), dtype=torch.uint8, device=lm.device)
    first: dict[str, Any]
    try:
        core.ask("cam", QUESTION, SamplingParams(max_new_tokens=4))
        first = {"error": None}
    except EngineError as exc:
        first = {"error": str(exc), "out_of_memory": exc.out_of_memory,
                 "caches_freed": core.camera_stats("cam")["cached_pairs"] == 0}
    del hog
    free(lm.device)
    answer = core.ask("cam", QUESTION, SamplingParams(max_new_tokens=4, ignore_eos=True))
    return {"first_question": first, "next_question_tokens": answer.metrics["output_tokens"]}
