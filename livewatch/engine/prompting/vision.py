"""Per-pair vision embeddings, computed once while the pair stays in context.

The vision tower treats each temporal grid on its own (attention windows and full-attention blocks stay within
one grid, the rotary embedding has no time term, the Conv3d mixes exactly the two frames of a pair), so a pair's
embeddings depend only on its two frames, and cached pairs concatenated equal a joint encode up to rounding.
The embeddings are computed by ``visiontower.VisionTower`` for the pairs of all cameras at once (encoder.py);
this is one camera's store of them.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from livewatch.engine.results import TemporaryContext


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

    def put(self, pair_id: int, embeds: torch.Tensor, encoded: bool = True) -> None:
        """Keep a pair's embeddings; ``encoded``: computed for it now (not reused from elsewhere)."""
        self._embeds[pair_id] = embeds
        self.pairs_encoded += encoded

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._embeds.values())

    def retain(self, pair_ids: set[int]) -> None:
        """Forget the pairs that left the context."""
        for pid in [p for p in self._embeds if p not in pair_ids]:
            del self._embeds[pid]

    def clear(self) -> None:
        self._embeds.clear()


def shared_key(context: str) -> str | None:
    """The camera a temporary context reads from; None for a live camera's context."""
    return context.camera if isinstance(context, TemporaryContext) else None


class SharedEmbeddings:
    """Vision embeddings of history pairs, shared by the temporary contexts of history questions and find, kept
    least recently used first out within ``max_bytes``: asking twice about the same hour, or finding in it after a
    question, encodes its pairs once. Keyed by (camera, pair id); a camera that goes away is forgotten (a camera
    added again under its name numbers its pairs from 0)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.hits = 0

    def fill(self, camera: str, store: VisionCache, pair_ids: list[int]) -> None:
        """Put the embeddings it holds of ``pair_ids`` into a temporary context's store."""
        for pid in pair_ids:
            embeds = self._items.get((camera, pid))
            if embeds is not None and pid not in store:
                self._items.move_to_end((camera, pid))
                store.put(pid, embeds, encoded=False)
                self.hits += 1

    def keep(self, camera: str, store: VisionCache, pair_ids: list[int]) -> None:
        for pid in pair_ids:
            if pid in store and (camera, pid) not in self._items:
                embeds = store.get(pid)
                self._items[(camera, pid)] = embeds
                self.nbytes += embeds.numel() * embeds.element_size()
        while self.nbytes > self.max_bytes and self._items:
            _, gone = self._items.popitem(last=False)
            self.nbytes -= gone.numel() * gone.element_size()

    def forget(self, camera: str) -> None:
        for key in [k for k in self._items if k[0] == camera]:
            gone = self._items.pop(key)
            self.nbytes -= gone.numel() * gone.element_size()
