"""Browser sessions and origins (pure): what lets the web page authenticate, and what keeps other sites out.

Browsers cannot put an ``Authorization`` header on a WebSocket, so the page logs in once (``POST /login`` with the
token) and receives a session cookie: ``EXPIRY.NONCE.MAC``, the MAC an HMAC-SHA256 under a key drawn at each
daemon start (a restart logs everyone out; nothing secret is derived from the token). The cookie is HttpOnly and
SameSite=Strict; logout revokes its nonce until it would have expired anyway.

SameSite does not separate two ports of one host (they are the same *site*), so the Origin is checked too:
a WebSocket upgrade and any state-changing request a browser makes must come from the daemon's own origin or one
listed in ``server.allowed_origins``. The own origin counts only when the Host is an IP address or ``localhost``:
a DNS-rebinding page (a hostile name resolved to this machine) sends its own name as Host, and is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

from livewatch.server.guard import RateLimit

COOKIE = "livewatch_session"


class Sessions:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time, key: bytes | None = None) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        self._revoked: dict[str, float] = {}  # nonce -> expiry

    def issue(self) -> str:
        expiry = int(self._clock() + self.ttl_s)
        body = f"{expiry}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, value: str | None) -> bool:
        parsed = self._parse(value)
        return parsed is not None and parsed[1] not in self._revoked

    def revoke(self, value: str | None) -> None:
        now = self._clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}  # forget what has expired anyway
        parsed = self._parse(value)
        if parsed is not None:
            self._revoked[parsed[1]] = parsed[0]

    def _parse(self, value: str | None) -> tuple[float, str] | None:
        """(expiry, nonce) of a well-formed, authentic, unexpired cookie value."""
        if not value or len(value) > 200 or not value.isascii() or value.count(".") != 2:
            return None
        expiry, nonce, mac = value.split(".")
        if not expiry.isdigit() or not hmac.compare_digest(mac, self._mac(f"{expiry}.{nonce}")):
            return None
        if int(expiry) <= self._clock():
            return None
        return float(expiry), nonce

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


class Guesses:
    """Wrong tokens (a login or a bearer header), per peer address and from everyone: at most ``count`` a peer
    and ``total`` in all in any ``period`` seconds (sliding windows); a wrong token past either is answered 429
    instead of 401. Only wrong tokens are ever refused: a right one is compared first and always accepted, so no
    guesser (another user of a shared address, a reverse proxy's other clients) can lock its owners out; the
    token's own strength stops guessing (config.MIN_TOKEN_BITS). Bounded: the ``peers`` most recently wrong are
    remembered, and a window stops counting once full (a flood adds nothing)."""

    def __init__(self, count: int = 10, period: float = 60.0, peers: int = 4096, total: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.count, self.period, self.peers = count, period, peers
        self._clock = clock
        self._wrong: OrderedDict[str, RateLimit] = OrderedDict()
        self._all = RateLimit(total, period, clock)
        self.refused = 0

    def wrong(self, peer: str) -> bool:
        """Count a wrong token from ``peer``; True when it is past the peer's or everyone's limit (answer 429)."""
        window = self._wrong.get(peer)
        if window is None:
            window = self._wrong[peer] = RateLimit(self.count, self.period, self._clock)
            while len(self._wrong) > self.peers:
                self._wrong.popitem(last=False)
        self._wrong.move_to_end(peer)
        over = not window.allow()
        over = not self._all.allow() or over
        if over:
            self.refused += 1
        return over

    def retry_after(self, peer: str) -> float:
        window = self._wrong.get(peer)
        return max(window.retry_after() if window is not None and window.full() else 0.0,
                   self._all.retry_after() if self._all.full() else 0.0)


def host_allowed(host: str | None, allowed_origins: tuple[str, ...]) -> bool:
    """A request's Host may reach the daemon without the token: an IP address, localhost, or the host of an
    allowed origin. A DNS-rebinding page's requests carry its own name, so they are refused."""
    if not host:
        return False
    if _literal_host(host):
        return True
    return any(urlsplit(origin).netloc == host for origin in allowed_origins)


def origin_allowed(origin: str | None, host: str | None, scheme: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Origin may act on this daemon (None: not a browser, always)."""
    if origin is None:
        return True
    if origin in allowed:
        return True
    if not host or origin != f"{scheme}://{host}":
        return False
    return _literal_host(host)


def _literal_host(host: str) -> bool:
    """``host`` (a Host header: name or address, optional port) is an IP address or localhost."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
