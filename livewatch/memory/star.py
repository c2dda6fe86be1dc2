"""Star memory: the most important pairs, diverse over time, within a fixed capacity.

The rule (pure, no I/O):

1. A pair is a candidate when its importance is above ``threshold``. Importance already counts only the change
   that no star shows (``livewatch.memory.importance``), so the later pairs of an event that is a star are
   rarely candidates at all.
2. Near-duplicates do not fill it: if the candidate is closer than ``duplicate_distance`` to a star (the
   signatures' ``pair_distance``, on the importance scale: 0.15 is 0.42% of the frame differing), the two
   compete for one place; the one with the higher effective importance stays.
3. Age-aware eviction: a star's effective importance halves every ``half_life_s`` seconds of age
   (importance * 0.5 ** (age / half_life_s)). When the memory is full, a candidate replaces the star with the
   lowest effective importance if its own importance beats it. So a burst of events in the first minutes
   does not own the memory forever: as those stars age, later events of similar importance displace them.
4. Stars are kept ordered by time.
5. While the star memory is empty, the pair offered is kept as the scene's *reference* (``offer_reference``):
   what the camera shows when nothing happens, with importance 0, so the first event that needs its place takes
   it. A camera's context thus keeps one view of its quiet scene from its start, beside the recent window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from livewatch.memory.importance import PairSignature, pair_distance


@dataclass
class StarEntry:
    pair_id: int
    time: float
    importance: float
    signature: PairSignature = field(repr=False)

    def effective(self, now: float, half_life_s: float) -> float:
        age = max(now - self.time, 0.0)
        return self.importance * 0.5 ** (age / half_life_s)


@dataclass(frozen=True)
class StarDecision:
    admitted: bool
    evicted: int | None = None  # pair id that left the star memory
    reason: str = ""


class StarMemory:
    def __init__(
        self, capacity: int, threshold: float, half_life_s: float = 600.0, duplicate_distance: float = 0.15,
        distance: Callable[[PairSignature, PairSignature], float] = pair_distance,
    ) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self.half_life_s = half_life_s
        self.duplicate_distance = duplicate_distance
        self.distance = distance  # another scorer's distance only in tools/bench_memory.py's comparison
        self.entries: list[StarEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> list[int]:
        return [e.pair_id for e in self.entries]

    def signatures(self) -> list[PairSignature]:
        return [e.signature for e in self.entries]

    def restore(self, entries: list[StarEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: (e.time, e.pair_id))

    def offer(self, pair_id: int, time: float, importance: float, signature: PairSignature) -> StarDecision:
        if self.capacity == 0 or importance <= self.threshold:
            return StarDecision(False, reason="below_threshold")
        candidate = StarEntry(pair_id, time, importance, signature)
        twin = self._nearest_duplicate(signature)
        if twin is not None:
            if candidate.effective(time, self.half_life_s) > twin.effective(time, self.half_life_s):
                self._replace(twin, candidate)
                return StarDecision(True, evicted=twin.pair_id, reason="replaced_duplicate")
            return StarDecision(False, reason="duplicate")
        if len(self.entries) < self.capacity:
            self._insert(candidate)
            return StarDecision(True, reason="free_slot")
        weakest = min(self.entries, key=lambda e: (e.effective(time, self.half_life_s), e.time))
        if importance > weakest.effective(time, self.half_life_s):
            self._replace(weakest, candidate)
            return StarDecision(True, evicted=weakest.pair_id, reason="replaced_weaker")
        return StarDecision(False, reason="weaker_than_all")

    def offer_reference(self, pair_id: int, time: float, signature: PairSignature) -> StarDecision:
        """Keep a pair as the scene's reference while the star memory is empty (rule 5)."""
        if self.capacity == 0 or self.entries:
            return StarDecision(False, reason="not_empty")
        self._insert(StarEntry(pair_id, time, 0.0, signature))
        return StarDecision(True, reason="reference")

    def _nearest_duplicate(self, signature: PairSignature) -> StarEntry | None:
        best, best_d = None, self.duplicate_distance
        for entry in self.entries:
            d = self.distance(signature, entry.signature)
            if d < best_d:
                best, best_d = entry, d
        return best

    def _replace(self, old: StarEntry, new: StarEntry) -> None:
        self.entries.remove(old)
        self._insert(new)

    def _insert(self, entry: StarEntry) -> None:
        self.entries.append(entry)
        self.entries.sort(key=lambda e: (e.time, e.pair_id))
