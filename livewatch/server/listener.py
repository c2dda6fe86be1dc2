"""The listening socket: admission of each TCP connection before a byte is read, and its first-request deadline.

Every accepted connection is counted in the ``ConnectionGuard`` (in total and per peer) and closed at once when
either bound is full, so idle sockets cannot take the descriptors the frame store and cameras need. A connection
that has not sent a whole request head within ``handshake_timeout_s`` is closed (a slow-loris client), whatever
protocol it later speaks. The HTTP protocol object (aiohttp's) sits behind a thin proxy that only forwards the
transport's calls; ``mark_served`` is called by the application when a request head has arrived.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
from collections.abc import Callable
from typing import Any

from livewatch.log import Throttle, get_logger
from livewatch.server.guard import ConnectionGuard, descriptor_budget

log = get_logger("livewatch.server")


def connection_budget(configured: int, reserve: int) -> int:
    """Raise the soft descriptor limit to the hard one, then keep connections below it (see server/guard.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    budget = descriptor_budget(soft, configured, reserve)
    if budget < configured:
        log.warning("server.connection_limit_lowered", configured=configured, limit=budget, nofile=soft,
                    hint="raise LimitNOFILE= (systemd) or ulimit -n")
    return budget


class Listener:
    def __init__(self, guard: ConnectionGuard, handshake_timeout_s: float) -> None:
        self.guard = guard
        self.handshake_timeout_s = handshake_timeout_s
        self._pending: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self._refusals = Throttle()
        self._server: asyncio.Server | None = None

    async def start(self, factory: Callable[[], asyncio.Protocol], host: str, port: int,
                    tls: ssl.SSLContext | None) -> int:
        """Bind and listen; the bound port (``port`` 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        # TLS: asyncio admits a connection to the protocol only after its handshake, which is therefore bounded by
        # the same deadline (a socket that never finishes one is closed when it passes)
        self._server = await loop.create_server(
            lambda: _Guarded(self, factory()), host, port, ssl=tls, reuse_address=True, backlog=512,
            ssl_handshake_timeout=self.handshake_timeout_s if tls is not None else None)
        return int(self._server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def mark_served(self, transport: Any) -> None:
        """A request head arrived on ``transport``: its first-request deadline no longer applies."""
        timer = self._pending.pop(transport, None)
        if timer is not None:
            timer.cancel()

    # -- from the proxies -----------------------------------------------------------------------------------------

    def admit(self, transport: asyncio.BaseTransport) -> str | None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if not self.guard.acquire(peer):
            if self._refusals.ready():  # a summary a minute, not a line per socket
                log.warning("conn.refused", reason="connection limit", open=self.guard.open, limit=self.guard.total,
                            per_peer_limit=self.guard.per_peer, refused_total=self.guard.refused)
            return None
        loop = asyncio.get_running_loop()
        self._pending[transport] = loop.call_later(self.handshake_timeout_s, self._too_slow, transport)
        return peer

    def release(self, transport: asyncio.BaseTransport, peer: str) -> None:
        self.mark_served(transport)
        self.guard.release(peer)

    def _too_slow(self, transport: asyncio.BaseTransport) -> None:
        if self._pending.pop(transport, None) is not None:
            transport.abort()  # type: ignore[attr-defined]


class _Guarded(asyncio.Protocol):
    """Forwards a transport's calls to the HTTP protocol once the connection is admitted."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self._listener = listener
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = self._listener.admit(transport)
        if self._peer is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is None or self._transport is None:
            return
        self._listener.release(self._transport, self._peer)
        self._peer = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._peer is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._peer is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
