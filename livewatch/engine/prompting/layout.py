"""Bookkeeping of a camera's prefix KV cache, in plain values (no tensors).

The prefix is [head text tokens][pair 0 tokens][pair 1 tokens]...: the system turn, the start of the user turn up
to <|vision_start|>, then the video tokens pair by pair. Everything after the video (<|vision_end|>, the time
range, the question, the answer) belongs to one question and is never stored in the prefix.

A key/value entry in the cache depends on its own token, its position and every entry before it (causal
attention). So when the context changes, the entries of the longest common leading run of the old and new
layouts (same head, then the same pairs at the same temporal positions and grids) stay valid; everything after
is recomputed from cached vision embeddings. An append-only change keeps the whole old prefix (extension); a
change of the head or of the oldest pair (which moves every temporal position) keeps nothing (rebuild).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from livewatch.engine.prompting.positions import pair_positions, temporal_positions, text_positions
from livewatch.engine.prompting.preprocess import VisionSpec, target_size
from livewatch.frames import FramePair


@dataclass(frozen=True)
class PairSlot:
    pair_id: int
    t_pos: int  # temporal offset inside the video (see positions.temporal_positions)
    grid_h: int  # merged grid rows (tokens)
    grid_w: int  # merged grid columns (tokens)

    @property
    def n_tokens(self) -> int:
        return self.grid_h * self.grid_w


@dataclass(frozen=True)
class PrefixLayout:
    head: tuple[int, ...]
    slots: tuple[PairSlot, ...]

    @property
    def video_start(self) -> int:
        return len(self.head)

    @property
    def n_visual(self) -> int:
        return sum(s.n_tokens for s in self.slots)

    @property
    def n_tokens(self) -> int:
        return len(self.head) + self.n_visual

    def slot_offset(self, index: int) -> int:
        """Token index where slot ``index`` starts."""
        return len(self.head) + sum(s.n_tokens for s in self.slots[:index])

    def positions(self, from_slot: int | None = None) -> np.ndarray:
        """(3, n) positions of the whole prefix, or of the slots from ``from_slot`` on (head excluded)."""
        parts = [] if from_slot is not None else [text_positions(0, len(self.head))]
        for slot in self.slots[from_slot or 0 :]:
            parts.append(pair_positions(self.video_start, slot.t_pos, slot.grid_h, slot.grid_w))
        if not parts:
            return np.zeros((3, 0), dtype=np.int64)
        return np.concatenate(parts, axis=1)

    @property
    def next_position(self) -> int:
        """First position of the text that follows the prefix: maximum position + 1."""
        top = len(self.head) - 1
        for slot in self.slots:
            top = max(top, self.video_start + max(slot.t_pos, slot.grid_h - 1, slot.grid_w - 1))
        return top + 1


def pair_layout(head: tuple[int, ...], pairs: Sequence[FramePair], spec: VisionSpec, tokens_per_second: float,
                max_gap_s: float) -> PrefixLayout:
    """The layout of time-ordered ``pairs`` after the ``head`` tokens: each pair's temporal offset from the real
    times (long gaps shortened to ``max_gap_s``) and its merged grid at the pixel cap."""
    t_pos = temporal_positions([p.time for p in pairs], tokens_per_second, max_gap_s)
    slots = []
    for pair, t in zip(pairs, t_pos):
        h, w = target_size(*pair.first.size, spec)
        slots.append(PairSlot(pair.id, t, h // spec.factor, w // spec.factor))
    return PrefixLayout(head=head, slots=tuple(slots))


class UpdateKind(str, Enum):
    REUSE = "reuse"  # nothing changed
    EXTEND = "extend"  # the old prefix stays whole; new pairs are appended
    PARTIAL = "partial"  # a leading part stays; the rest is recomputed
    REBUILD = "rebuild"  # nothing stays


@dataclass(frozen=True)
class UpdatePlan:
    kind: UpdateKind
    keep_tokens: int  # leading cache entries that stay valid
    first_new_slot: int  # slots from this index on are (re)computed; -1 when the head is recomputed too


def plan_update(old: PrefixLayout | None, new: PrefixLayout) -> UpdatePlan:
    if old is None or old.head != new.head:
        return UpdatePlan(UpdateKind.REBUILD, 0, -1)
    common = 0
    for a, b in zip(old.slots, new.slots):
        if a != b:
            break
        common += 1
    keep = new.slot_offset(common)
    if common == len(old.slots) == len(new.slots):
        return UpdatePlan(UpdateKind.REUSE, keep, common)
    if common == len(old.slots):
        return UpdatePlan(UpdateKind.EXTEND, keep, common)
    return UpdatePlan(UpdateKind.PARTIAL, keep, common)
