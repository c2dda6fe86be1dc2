"""Star memory: the most distinct important pairs, one per event, within a fixed capacity.

The rule (pure, no I/O):

1. A pair is a candidate when its importance is above ``threshold``. Importance already counts only the change
   that no star shows (``livewatch.memory.importance``), so the later pairs of an event that is a star are
   rarely candidates at all.
2. Near-duplicates do not fill it: if the candidate is closer than ``duplicate_distance`` to a star (the
   signatures' ``pair_distance``, on the importance scale: 0.15 is 0.42% of the frame differing), the two
   compete for one place; the one with the higher effective importance stays.
3. While there is room, a candidate is admitted.
4. **When the memory is full, distinct events first.** The place goes, in this order:
   a. the scene's reference (rule 6);
   b. the second star of an event: the scorer numbers *episodes*, runs of pairs with local change broken by a
      pair without any and cut every ``EPISODE_MAX_S`` (``ImportanceModel``); of two stars (or a star and the
      candidate) of one episode, the later goes unless it is clearly more important (by ``SAME_EVENT_MARGIN``:
      a person standing in full view after the pair that caught them walking in), so the arrival stays and a
      departure stays only if it showed something new (its importance counts only what no star shows). Stars
      of one episode are not merged while there is room: a false star from a shadow and the event that follows
      in the same episode both stay until the place is needed;
   c. the less important of the two nearest stars when they are closer than ``near_distance`` (0.5: what
      differs between them would score under 0.5, under 1% of the frame): a second view of one moment before
      a distinct moment;
   d. else the star with the lowest *effective importance*, which halves every ``half_life_s`` seconds of age
      (importance * 0.5 ** (age / half_life_s)), if the candidate's importance beats it: a burst of events in
      the first minutes does not own the memory forever.
5. Stars are kept ordered by time; each keeps ``why`` it was admitted (the decision's reason), which the
   ``memory`` request shows.
6. While the star memory is empty, the pair offered is kept as the scene's *reference* (``offer_reference``):
   what the camera shows when nothing happens, with importance 0, so the first event that needs its place takes
   it. A camera's context thus keeps one view of its quiet scene from its start, beside the recent window.

On ``tools/heldout_suite.py``'s busy class (12 distinct events of 2.5-3 s in 160 s, 10 star pairs) rule 4
keeps 10 of the 12 as stars (previously 7: events with two stars each, a walk-in and a stand, and the oldest
evicted first); the window and the history keep the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from livewatch.memory.importance import PairSignature, pair_distance


SAME_EVENT_MARGIN = 0.05  # a later pair of a star's episode replaces it only when this much more important


@dataclass
class StarEntry:
    pair_id: int
    time: float
    importance: float
    signature: PairSignature = field(repr=False)
    episode: int = -1  # the scorer's episode number (-1: unknown, e.g. restored)
    why: str = ""  # the reason it was admitted

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
        distance: Callable[[PairSignature, PairSignature], float] = pair_distance, near_distance: float = 0.5,
    ) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self.half_life_s = half_life_s
        self.duplicate_distance = duplicate_distance
        self.near_distance = near_distance
        self.distance = distance  # another scorer's distance only in tools/bench_memory.py's comparison
        self.entries: list[StarEntry] = []
        self._distances: dict[tuple[int, int], float] = {}  # between stars, by pair ids (signatures never change)

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> list[int]:
        return [e.pair_id for e in self.entries]

    def signatures(self) -> list[PairSignature]:
        return [e.signature for e in self.entries]

    def restore(self, entries: list[StarEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: (e.time, e.pair_id))
        self._distances = {}

    def pop_oldest(self) -> StarEntry:
        entry = self.entries.pop(0)
        self._forget(entry)
        return entry

    def offer(self, pair_id: int, time: float, importance: float, signature: PairSignature,
              episode: int = -1) -> StarDecision:
        if self.capacity == 0 or importance <= self.threshold:
            return StarDecision(False, reason="below_threshold")
        candidate = StarEntry(pair_id, time, importance, signature, episode)
        to_candidate = [(self.distance(signature, e.signature), e) for e in self.entries]  # once, for rules 2, 4c
        twin = self._nearest_duplicate(to_candidate)
        if twin is not None:
            if candidate.effective(time, self.half_life_s) > twin.effective(time, self.half_life_s):
                return self._admit(candidate, "replaced_duplicate", twin)
            return StarDecision(False, reason="duplicate")
        if len(self.entries) < self.capacity:
            return self._admit(candidate, "free_slot")
        reference = next((e for e in self.entries if e.importance <= 0.0), None)
        if reference is not None:
            return self._admit(candidate, "replaced_reference", reference)
        second = self._second_of_an_event(candidate)
        if second is candidate:
            return StarDecision(False, reason="same_event")
        if second is not None:
            return self._admit(candidate, "replaced_same_event", second)
        near = self._nearest_pair(candidate, to_candidate)
        if near is candidate:
            return StarDecision(False, reason="near_duplicate")
        if near is not None:
            return self._admit(candidate, "replaced_nearest", near)
        weakest = min(self.entries, key=lambda e: (e.effective(time, self.half_life_s), e.time))
        if importance > weakest.effective(time, self.half_life_s):
            return self._admit(candidate, "replaced_weaker", weakest)
        return StarDecision(False, reason="weaker_than_all")

    def offer_reference(self, pair_id: int, time: float, signature: PairSignature) -> StarDecision:
        """Keep a pair as the scene's reference while the star memory is empty (rule 6)."""
        if self.capacity == 0 or self.entries:
            return StarDecision(False, reason="not_empty")
        return self._admit(StarEntry(pair_id, time, 0.0, signature), "reference")

    def _nearest_duplicate(self, to_candidate: list[tuple[float, StarEntry]]) -> StarEntry | None:
        best, best_d = None, self.duplicate_distance
        for d, entry in to_candidate:
            if d < best_d:
                best, best_d = entry, d
        return best

    def _second_of_an_event(self, candidate: StarEntry) -> StarEntry | None:
        """Of two stars of one episode (the candidate included, the most recent episode first), the one to let go:
        the later, unless it is clearly more important (by SAME_EVENT_MARGIN)."""
        by_episode: dict[int, list[StarEntry]] = {}
        for e in [*self.entries, candidate]:
            if e.episode >= 0:
                by_episode.setdefault(e.episode, []).append(e)
        for episode in sorted(by_episode, reverse=True):
            group = sorted(by_episode[episode], key=lambda e: (e.time, e.pair_id))
            if len(group) < 2:
                continue
            keep = group[0]
            for e in group[1:]:
                if e.importance > keep.importance + SAME_EVENT_MARGIN:
                    keep = e
            return next(e for e in reversed(group) if e is not keep)
        return None

    def _nearest_pair(self, candidate: StarEntry, to_candidate: list[tuple[float, StarEntry]]) -> StarEntry | None:
        """Of the two nearest among the stars and the candidate (``to_candidate``: its distance to each star), if
        closer than ``near_distance``, the less important (the later on a tie)."""
        best: tuple[float, StarEntry, StarEntry] | None = None
        for d, a in to_candidate:
            if d < self.near_distance and (best is None or d < best[0]):
                best = (d, a, candidate)
        for i, a in enumerate(self.entries):
            for b in self.entries[i + 1:]:
                key = (a.pair_id, b.pair_id)
                if key not in self._distances:
                    self._distances[key] = self.distance(a.signature, b.signature)
                d = self._distances[key]
                if d < self.near_distance and (best is None or d < best[0]):
                    best = (d, a, b)
        if best is None:
            return None
        _, a, b = best
        return a if (a.importance, -a.time) < (b.importance, -b.time) else b

    def _admit(self, entry: StarEntry, why: str, evict: StarEntry | None = None) -> StarDecision:
        entry.why = why
        if evict is not None:
            self.entries.remove(evict)
            self._forget(evict)
        self._insert(entry)
        return StarDecision(True, evicted=None if evict is None else evict.pair_id, reason=why)

    def _forget(self, entry: StarEntry) -> None:
        self._distances = {k: v for k, v in self._distances.items() if entry.pair_id not in k}

    def _insert(self, entry: StarEntry) -> None:
        self.entries.append(entry)
        self.entries.sort(key=lambda e: (e.time, e.pair_id))
