"""The ``agreement`` section: greedy tokens and first-token logits of the fast path against the eager path, on a
decoder of its own, so it can run alone (``--sections agreement --dtype float32``: bench-results/
h100-agreement-fp32-final.json); the fast-path section runs the same ``compare`` on its own decoder.
"""

from __future__ import annotations

from typing import Any

import torch

from benchkit.common import FULL, Plan, context_pairs, fast_answer, free
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.answer import Prepared
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.synthetic import FrameBank


@torch.inference_mode()
def compare(core: EngineCore, dec: BatchDecoder, plan: Plan) -> tuple[dict[str, Any], Prepared]:
    """Greedy tokens and first-token logits of the fast path against the eager path, same prompt."""
    lm = core.lm
    n_agree = 64 if plan is FULL else 16
    fast_ids = fast_answer(core, dec, "cam", n_agree, question="Describe the scene.").token_ids
    eager_ids = core.ask("cam", "Describe the scene.",
                         SamplingParams(max_new_tokens=n_agree, ignore_eos=True)).token_ids
    same_prefix = next((i for i, (a, b) in enumerate(zip(fast_ids, eager_ids)) if a != b), len(fast_ids))
    matches = sum(a == b for a, b in zip(fast_ids, eager_ids))
    # the first token's logits through both paths: how far apart the arithmetic is (random weights make
    # near-ties common, so token agreement alone says little about correctness)
    from livewatch.engine.model.generate import cache_from_kv, forward, position_tensor
    from livewatch.engine.prompting.positions import text_positions

    prepared = core.prepare("cam", "Describe the scene.", 1)
    kv = core.prefix_kv("cam")
    emb = lm.embed_tokens(torch.tensor(prepared.suffix, device=lm.device)).unsqueeze(0)
    eager_logits = forward(lm, emb, position_tensor(text_positions(prepared.next_position, len(prepared.suffix)),
                                                    lm.device), cache_from_kv(lm.model.config.text_config, kv))
    dec.runner.cache.load(0, *core.stacked_prefix("cam"))
    dec.forget_prefixes()  # slot 0 now holds more than the decoder's record says: its next question reloads
    fast_logits, _ = dec.runner.prefill(0, prepared.suffix, prepared.next_position, prepared.prefix_tokens)
    rel = float((fast_logits - eager_logits).norm() / eager_logits.norm())

    return {"tokens": n_agree, "identical_prefix": same_prefix, "matching": matches,
            "dtype": str(lm.dtype).removeprefix("torch."), "first_logits_relative_difference": round(rel, 5)}, prepared


def run(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    core = EngineCore(lm, timezone="UTC")
    dec = BatchDecoder(core, slots=2, max_len=4096, use_graphs=True)
    dec.capture()
    core.set_context("cam", context_pairs(bank, plan.star_pairs, plan.window_pairs), 1)
    core.encode("cam")
    result, _ = compare(core, dec, plan)
    del dec, core
    free(lm.device)
    return result
