"""Per-pair vision embeddings, computed once while the pair stays in context.

The vision tower treats each temporal grid on its own (attention windows and full-attention blocks stay within
one grid, the rotary embedding has no time term, the Conv3d mixes exactly the two frames of a pair), so a pair's
embeddings depend only on its two frames, and cached pairs concatenated equal a joint encode up to rounding.
Pairs that arrive together are encoded in one call (one call per resolution, at most ``max_batch`` pairs):
on a GPU, one pair at a time is launch-bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from livewatch.engine.preprocess import VisionSpec, pair_input
from livewatch.frames import FramePair


class VisionCache:
    """Embeddings of one camera's pairs, keyed by pair id. Not thread-safe: the engine worker owns it."""

    def __init__(self, visual: torch.nn.Module, spec: VisionSpec, device: torch.device, max_batch: int = 32):
        self._visual = visual
        self._spec = spec
        self._device = device
        self._max_batch = max_batch
        self._embeds: dict[int, torch.Tensor] = {}
        self.tower_calls = 0
        self.pairs_encoded = 0

    def __contains__(self, pair_id: int) -> bool:
        return pair_id in self._embeds

    def __len__(self) -> int:
        return len(self._embeds)

    def get(self, pair_id: int) -> torch.Tensor:
        return self._embeds[pair_id]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._embeds.values())

    def retain(self, pair_ids: set[int]) -> None:
        """Forget the pairs that left the context."""
        for pid in [p for p in self._embeds if p not in pair_ids]:
            del self._embeds[pid]

    def clear(self) -> None:
        self._embeds.clear()

    @torch.inference_mode()
    def ensure(self, pairs: Sequence[FramePair]) -> int:
        """Encode the pairs not cached yet; returns how many were encoded."""
        missing = [p for p in pairs if p.id not in self._embeds]
        groups: dict[tuple[int, int], list[tuple[FramePair, torch.Tensor, tuple[int, int, int]]]] = defaultdict(list)
        for pair in missing:
            rows, grid = pair_input(pair, self._spec)
            groups[grid[1:]].append((pair, rows, grid))
        for items in groups.values():
            for start in range(0, len(items), self._max_batch):
                self._encode_batch(items[start : start + self._max_batch])
        return len(missing)

    def _encode_batch(self, items: list[tuple[FramePair, torch.Tensor, tuple[int, int, int]]]) -> None:
        dtype = next(self._visual.parameters()).dtype
        rows = torch.cat([r for _, r, _ in items]).to(self._device, dtype=dtype, non_blocking=True)
        grid = torch.tensor([g for _, _, g in items], dtype=torch.long, device=self._device)
        out = self._visual(rows, grid_thw=grid)
        merged = out.pooler_output if hasattr(out, "pooler_output") else out
        merge = self._spec.merge_size**2
        sizes = [g[0] * g[1] * g[2] // merge for _, _, g in items]
        for (pair, _, _), emb in zip(items, torch.split(merged, sizes)):
            self._embeds[pair.id] = emb
        self.tower_calls += 1
        self.pairs_encoded += len(items)
