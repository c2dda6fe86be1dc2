"""Which frames an answer relied on: the attention its tokens put on each pair's visual tokens.

After an answer, the question and the answer's tokens (those fed back: every position that produced an answer
token) are run once more over the camera's prefix (the watch evaluator's two-part attention, watcheval.py) and the
attention probability mass those positions put on each prefix position is summed over layers, heads and
positions. A pair's share is the mass on its visual tokens over the mass on all visual tokens. The cost is one
prefill of question + answer (at most ``MAX_TOKENS`` answer tokens) per answer; it is skipped (shares None) when
the camera's prefix changed while the answer was decoded, since the mass would be measured on other frames.

The evidence of an answer lists every pair that was in context, wall-clock times from the frames themselves
(never from the model's text), star or window, importance, and the attention share, ranked by share: the first
``RELIED_ON`` are marked as the frames the answer relied on most.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from livewatch.engine.prompting.layout import PrefixLayout
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.model.watcheval import WatchEvaluator, WatchQuery
from livewatch.frames import FramePair

MAX_TOKENS = 256
RELIED_ON = 3


def pair_shares(layout: PrefixLayout, mass: torch.Tensor) -> list[float]:
    """Each slot's share of the attention mass on visual tokens (slots in layout order)."""
    per_slot = [float(mass[layout.slot_offset(i) : layout.slot_offset(i) + slot.n_tokens].sum())
                for i, slot in enumerate(layout.slots)]
    total = sum(per_slot)
    return [m / total if total > 0 else 0.0 for m in per_slot]


def evidence_list(camera: str, pairs: Sequence[FramePair], shares: Sequence[float] | None) -> list[dict[str, Any]]:
    """The answer's ``evidence``: every pair in context, most relied on first (by time without shares)."""
    order = sorted(range(len(pairs)), key=lambda i: -shares[i]) if shares is not None else range(len(pairs))
    items = []
    for i in order:
        pair = pairs[i]
        items.append({
            "frame_id": pair.id, "time": pair.time, "end_time": pair.end_time, "star": pair.star,
            "importance": round(pair.importance, 4), "why": pair.why if pair.star else "",
            "attention": round(shares[i], 4) if shares is not None else None,
            "url": f"/frames/{camera}/{pair.id}.jpg",
        })
    for rank, item in enumerate(items):
        item["relied_on"] = shares is not None and rank < RELIED_ON
    return items


class EvidenceRanker:
    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self._evaluator: WatchEvaluator | None = None

    def shares(self, camera: str, prefix: tuple[torch.Tensor, torch.Tensor], layout: PrefixLayout,
               question: Sequence[int], answer: Sequence[int]) -> list[float]:
        """Attention shares of each pair for ``answer`` (token ids) to ``question`` on ``prefix``."""
        if self._evaluator is None:
            self._evaluator = WatchEvaluator(self.lm)
        fed = list(question) + list(answer[: MAX_TOKENS])[:-1]  # the inputs whose outputs are the answer
        query = WatchQuery(camera, prefix, layout.next_position, tuple(fed))
        return pair_shares(layout, self._evaluator.prefix_attention(query, len(question) - 1))
