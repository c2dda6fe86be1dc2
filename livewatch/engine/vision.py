"""Per-pair vision embeddings, computed once while the pair stays in context.

The vision tower treats each temporal grid on its own (attention windows and full-attention blocks stay within
one grid, the rotary embedding has no time term, the Conv3d mixes exactly the two frames of a pair), so a pair's
embeddings depend only on its two frames, and cached pairs concatenated equal a joint encode up to rounding.
The embeddings are computed by ``visiontower.VisionTower`` for the pairs of all cameras at once (encoder.py);
this is one camera's store of them.
"""

from __future__ import annotations

import torch


class VisionCache:
    """Embeddings of one camera's pairs, keyed by pair id. Not thread-safe: the engine worker owns it."""

    def __init__(self) -> None:
        self._embeds: dict[int, torch.Tensor] = {}
        self.pairs_encoded = 0

    def __contains__(self, pair_id: int) -> bool:
        return pair_id in self._embeds

    def __len__(self) -> int:
        return len(self._embeds)

    def get(self, pair_id: int) -> torch.Tensor:
        return self._embeds[pair_id]

    def put(self, pair_id: int, embeds: torch.Tensor) -> None:
        self._embeds[pair_id] = embeds
        self.pairs_encoded += 1

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._embeds.values())

    def retain(self, pair_ids: set[int]) -> None:
        """Forget the pairs that left the context."""
        for pid in [p for p in self._embeds if p not in pair_ids]:
            del self._embeds[pid]

    def clear(self) -> None:
        self._embeds.clear()
