"""Admission of TCP connections and of camera additions. Pure counting; the listener and the daemon apply it.

Idle sockets are the cheapest attack on a daemon: each one holds a file descriptor until the handshake times out,
and at the process's descriptor limit the frame store cannot open files and ``accept`` fails in a loop. So
connections are counted from the moment they are accepted (before a TLS handshake), in total and per peer
address, and one over a bound is closed at once, before a byte is read. The total bound is kept below the
descriptor limit (``descriptor_budget``) so that cameras, the frame store and the model always find descriptors.

A connection is *unproven* until one of its requests carries a valid token or session cookie (or, with no token
configured, until its first request head arrives). Unproven connections may hold at most ``total - reserve``
places: the reserve is for clients that proved themselves, so a flood without a token cannot keep the token's
owners out. When the unproven places are full, a new connection takes the place of the oldest unproven one of
the address that holds the most of them (its own, on a tie): each of N flooding addresses keeps about 1/N of the
places, and a newcomer always gets in, so a token holder's new connection stands as long as its first request
takes to arrive. The listener closes an unproven connection a few seconds after its accept
(``server.handshake_timeout_s``), so places turn over in seconds, not keep-alive's 30.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    admitted: bool
    evict: Hashable | None = None  # an unproven connection to close for this one (already released)


class ConnectionGuard:
    """Open connections, in total, per peer IP address and unproven (event loop thread only). Connections are
    any hashable key the caller chooses."""

    def __init__(self, total: int, per_peer: int, reserve: int = 0) -> None:
        self.total = total
        self.per_peer = per_peer
        self.reserve = reserve
        self.refused = 0
        self.evicted = 0
        self._peer_of: dict[Hashable, str] = {}
        self._peers: Counter[str] = Counter()
        self._unproven: OrderedDict[Hashable, str] = OrderedDict()  # in accept order
        self._unproven_of: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return len(self._peer_of)

    @property
    def unproven(self) -> int:
        return len(self._unproven)

    @property
    def unproven_limit(self) -> int:
        """Places unproven connections may hold: all but the reserve (never more than half of the total)."""
        return max(1, self.total - min(self.reserve, self.total // 2))

    def acquire(self, key: Hashable, peer: str) -> Admission:
        """Admit ``key`` from ``peer`` as unproven, possibly in place of another unproven connection (``evict``:
        the caller closes it, which releases it)."""
        if key in self._peer_of:
            raise ValueError("connection already admitted")
        evict = None
        if self._peers[peer] >= self.per_peer:
            evict = self._victim(peer, own_only=True)
            if evict is None:
                return self._refuse()
        elif self.open >= self.total or self.unproven >= self.unproven_limit:
            evict = self._victim(peer, own_only=False)
            if evict is None:
                return self._refuse()
        if evict is not None:  # its place is the newcomer's now; the caller's later release of it is a no-op
            self.evicted += 1
            self.release(evict)
        self._peer_of[key] = peer
        self._peers[peer] += 1
        self._unproven[key] = peer
        self._unproven_of[peer] += 1
        return Admission(True, evict)

    def prove(self, key: Hashable) -> bool:
        """A request on ``key`` authenticated: it no longer counts as unproven. True the first time."""
        peer = self._unproven.pop(key, None)
        if peer is None:
            return False
        self._drop_unproven(peer)
        return True

    def is_unproven(self, key: Hashable) -> bool:
        return key in self._unproven

    def release(self, key: Hashable) -> None:
        peer = self._peer_of.pop(key, None)
        if peer is None:
            return
        self._peers[peer] -= 1
        if self._peers[peer] <= 0:
            del self._peers[peer]
        if self._unproven.pop(key, None) is not None:
            self._drop_unproven(peer)

    def _victim(self, peer: str, *, own_only: bool) -> Hashable | None:
        """The unproven connection a newcomer from ``peer`` replaces: the oldest of the address holding the most
        unproven connections (``peer`` itself on a tie, or when ``own_only``), None when there is none."""
        if not self._unproven:
            return None
        most = max(self._unproven_of.values())
        if own_only or self._unproven_of[peer] == most:
            target = peer
        else:
            target = next(p for p, n in self._unproven_of.items() if n == most)
        return next((k for k, p in self._unproven.items() if p == target), None)

    def _drop_unproven(self, peer: str) -> None:
        self._unproven_of[peer] -= 1
        if self._unproven_of[peer] <= 0:
            del self._unproven_of[peer]

    def _refuse(self) -> Admission:
        self.refused += 1
        return Admission(False)


def peer_key(address: str) -> str:
    """Who a connection or a guess counts against: its IPv4 address, or the /64 network of an IPv6 address (one
    host commonly holds a whole /64, so counting its addresses one by one would give it millions of shares of the
    places and of the guess limits). An IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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
