"""Admission of TCP connections and of camera additions. Pure counting; the listener and the daemon apply it.

Idle sockets are the cheapest attack on a daemon: each one holds a file descriptor until the handshake times out,
and at the process's descriptor limit the frame store cannot open files and ``accept`` fails in a loop. So
connections are counted from the moment they are accepted, in total and per peer address, and one over either
bound is closed at once, before a byte is read. The total bound is kept below the descriptor limit
(``descriptor_budget``) so that cameras, the frame store and the model always find descriptors.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable


class ConnectionGuard:
    """Open connections, in total and per peer IP address (event loop thread only)."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.open = 0
        self.refused = 0
        self._peers: Counter[str] = Counter()

    def acquire(self, peer: str) -> bool:
        if self.open >= self.total or self._peers[peer] >= self.per_peer:
            self.refused += 1
            return False
        self.open += 1
        self._peers[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self.open -= 1
        self._peers[peer] -= 1
        if self._peers[peer] <= 0:
            del self._peers[peer]


def descriptor_budget(soft_limit: int, configured: int, reserve: int) -> int:
    """Connections the descriptor limit leaves room for: at most ``configured``, and ``reserve`` kept back for
    files, cameras and the model (at least 1)."""
    return max(1, min(configured, soft_limit - reserve))


class RateLimit:
    """At most ``count`` events in any ``period`` seconds (a sliding window)."""

    def __init__(self, count: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.period = period
        self._clock = clock
        self._times: deque[float] = deque()

    def allow(self) -> bool:
        """Count one event, unless the window is full (then False)."""
        if self.full():
            return False
        self.note()
        return True

    def full(self) -> bool:
        """``count`` events in the last ``period`` seconds."""
        now = self._clock()
        while self._times and now - self._times[0] >= self.period:
            self._times.popleft()
        return len(self._times) >= self.count

    def note(self) -> None:
        """Count one event, full or not."""
        self._times.append(self._clock())

    def retry_after(self) -> float:
        return max(0.0, self.period - (self._clock() - self._times[0])) if self._times else 0.0
