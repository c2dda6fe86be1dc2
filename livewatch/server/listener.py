"""The listening socket: admission of each TCP connection before a byte is read, and its first-request deadline.

Every accepted connection is counted in the ``ConnectionGuard`` (in total, per peer, and as unproven) and closed at
once when a bound is full, or admitted in place of an unproven connection of the address that holds the most, so
idle sockets can neither take the descriptors the frame store and cameras need nor keep the token's owners out.
A connection that has not proved itself (a request with a valid token or cookie) within ``handshake_timeout_s`` of
its accept is closed, TLS handshake included (a slow-loris client, or one that sends a request and idles). The
HTTP protocol object (aiohttp's) sits behind a thin proxy that only forwards the transport's calls; the
application calls ``prove`` when a request authenticated.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
from collections.abc import Callable
from typing import Any

from livewatch.log import Throttle, get_logger
from livewatch.server.guard import ConnectionGuard, descriptor_budget, peer_key

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
        self._deadlines: dict[_Guarded, asyncio.TimerHandle] = {}
        self._by_transport: dict[asyncio.BaseTransport, _Guarded] = {}  # the transport the HTTP protocol sees
        self._refusals = Throttle()
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None

    async def start(self, factory: Callable[[], asyncio.Protocol], host: str, port: int,
                    tls: ssl.SSLContext | None) -> int:
        """Bind and listen; the bound port (``port`` 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        # TLS is started here, on the admitted connection, rather than by the server: so a socket is counted from
        # its accept, and its handshake is bounded by the same first-request deadline
        self._tls = tls
        self._server = await loop.create_server(
            lambda: _Guarded(self, factory()), host, port, reuse_address=True, backlog=512)
        return int(self._server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def prove(self, transport: Any) -> None:
        """A request on ``transport`` authenticated: the connection leaves the unproven pool and its deadline."""
        conn = self._by_transport.get(transport)
        if conn is not None and self.guard.prove(conn):
            timer = self._deadlines.pop(conn, None)
            if timer is not None:
                timer.cancel()

    # -- from the proxies -----------------------------------------------------------------------------------------

    def admit(self, conn: _Guarded, transport: asyncio.BaseTransport) -> str | None:
        peername = transport.get_extra_info("peername")
        peer = peer_key(str(peername[0])) if isinstance(peername, tuple) and peername else "?"
        admission = self.guard.acquire(conn, peer)
        if not admission.admitted:
            if self._refusals.ready("refused"):  # a summary a minute, not a line per socket
                log.warning("conn.refused", reason="connection limit", open=self.guard.open, limit=self.guard.total,
                            per_peer_limit=self.guard.per_peer, refused_total=self.guard.refused)
            return None
        if isinstance(admission.evict, _Guarded):
            admission.evict.abort()
            if self._refusals.ready("evicted"):
                log.warning("conn.evicted", reason="unproven connections full", unproven=self.guard.unproven,
                            unproven_limit=self.guard.unproven_limit, evicted_total=self.guard.evicted)
        loop = asyncio.get_running_loop()
        self._deadlines[conn] = loop.call_later(self.handshake_timeout_s, self._too_slow, conn)
        return peer

    def attach(self, conn: _Guarded, transport: asyncio.BaseTransport) -> None:
        self._by_transport[transport] = conn

    def release(self, conn: _Guarded, transport: asyncio.BaseTransport | None) -> None:
        timer = self._deadlines.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if transport is not None:
            self._by_transport.pop(transport, None)
        self.guard.release(conn)

    def start_tls(self, conn: _Guarded, transport: asyncio.BaseTransport) -> asyncio.Task[None] | None:
        if self._tls is None:
            return None
        return asyncio.get_running_loop().create_task(conn.start_tls(transport, self._tls))

    def _too_slow(self, conn: _Guarded) -> None:
        if self._deadlines.pop(conn, None) is not None and self.guard.is_unproven(conn):
            conn.abort()


class _Guarded(asyncio.Protocol):
    """Forwards a transport's calls to the HTTP protocol once the connection is admitted (and, with TLS, once its
    handshake is done)."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self._listener = listener
        self._inner = inner
        self._raw: asyncio.BaseTransport | None = None
        self._transport: asyncio.BaseTransport | None = None  # what the inner protocol was given
        self._peer: str | None = None
        self._tls_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = self._listener.admit(self, transport)
        if self._peer is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._raw = transport
        self._tls_task = self._listener.start_tls(self, transport)
        if self._tls_task is None:
            self._hand_over(transport)

    async def start_tls(self, raw: asyncio.BaseTransport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            # no timeout of its own: the first-request deadline closes a handshake that is too slow
            transport = await loop.start_tls(raw, self, context, server_side=True)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError, ConnectionError, asyncio.CancelledError, RuntimeError, TypeError):
            return  # a failed handshake: start_tls closed the socket, connection_lost releases it
        if self._peer is not None and transport is not None:
            self._hand_over(transport)

    def _hand_over(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._listener.attach(self, transport)
        self._inner.connection_made(transport)

    def abort(self) -> None:
        target = self._transport or self._raw
        if target is not None:
            target.abort()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is None:
            return
        self._peer = None
        self._listener.release(self, self._transport)
        if self._tls_task is not None and not self._tls_task.done():
            self._tls_task.cancel()
        if self._transport is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._peer is not None and self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._peer is not None and self._transport is not None:
            return self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()
