"""The history archive of one camera: the pairs that left its memory, kept on disk for questions about the past.

A pair that leaves both the star memory and the stream window is not deleted any more: its files stay, and its
index row stays with no role (``in_window = is_star = 0``); that is what "archived" means in the store. This
class is the bookkeeping (pure: no I/O): the archived pairs in time order with their sizes, and which of them
leave: the oldest first, once the archive spans more than ``max_age_s`` (from its oldest pair's first frame to
its newest pair's last) or holds more than ``max_bytes``. ``shed`` gives up the oldest share at once, which is
what the camera does when a write fails (a full disk becomes a shorter history, never a stopped camera).
Only records are held (no pixels): an archive of days costs a few hundred bytes of RAM per pair.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from livewatch.memory.jpegfile import PairRecord

T = TypeVar("T")


@dataclass(frozen=True)
class Archived:
    record: PairRecord  # without its JPEG bytes
    nbytes: int

    @property
    def time(self) -> float:
        return self.record.wall[0]

    @property
    def end_time(self) -> float:
        return self.record.wall[1]


def select_spread(items: Sequence[T], importance: Callable[[T], float], max_items: int) -> list[T]:
    """A range's pairs for one question: all of them if they fit ``max_items``, else the most important half and
    the rest spread evenly over the range (``items`` in time order; the choice keeps that order)."""
    if len(items) <= max_items:
        return list(items)
    top = set(sorted(range(len(items)), key=lambda i: -importance(items[i]))[: max_items // 2])
    rest = [i for i in range(len(items)) if i not in top]
    step = len(rest) / max(max_items - len(top), 1)
    spread = {rest[int(k * step)] for k in range(max_items - len(top))}
    return [items[i] for i in sorted(top | spread)]


class History:
    def __init__(self, max_age_s: float, max_bytes: int) -> None:
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.entries: deque[Archived] = deque()
        self.nbytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, record: PairRecord, nbytes: int) -> PairRecord:
        """Archive a pair that left memory; returns its record with no role (the row update to commit)."""
        rec = replace(record, in_window=False, is_star=False, jpegs=())
        entry = Archived(rec, nbytes)
        if self.entries and entry.time < self.entries[-1].time:  # a restore's order, or a clock step: keep order
            items = sorted([*self.entries, entry], key=lambda e: (e.time, e.record.id))
            self.entries = deque(items)
        else:
            self.entries.append(entry)
        self.nbytes += nbytes
        return rec

    def trim(self) -> list[PairRecord]:
        """The pairs that leave: the oldest, while the archive is too long or too large."""
        gone = []
        while self.entries and (self.nbytes > self.max_bytes
                                or self.entries[-1].end_time - self.entries[0].time > self.max_age_s):
            gone.append(self._pop())
        return gone

    def shed(self, share: float) -> list[PairRecord]:
        """Give up the oldest ``share`` of the archive (at least one pair) at once."""
        count = max(1, int(len(self.entries) * share)) if self.entries else 0
        return [self._pop() for _ in range(count)]

    def _pop(self) -> PairRecord:
        entry = self.entries.popleft()
        self.nbytes -= entry.nbytes
        return entry.record

    def between(self, since: float, until: float) -> list[Archived]:
        """The archived pairs whose span meets [since, until], in time order."""
        return [e for e in self.entries if e.end_time >= since and e.time <= until]

    def stats(self) -> dict[str, Any]:
        first, last = (self.entries[0], self.entries[-1]) if self.entries else (None, None)
        return {
            "history_pairs": len(self.entries),
            "history_bytes": self.nbytes,
            "history_span_s": round(last.end_time - first.time, 3) if first and last else 0.0,
            "history_oldest_time": first.time if first else None,
        }
