"""Plain HTTP on the WebSocket port, answered before the upgrade: health, metrics, and the token check.

    GET /healthz   200 when the engine is alive and some camera streams (or none is configured), else 503;
                   a JSON body either way. Never needs the token (for probes); without it the body holds only
                   the status, with it also the engine and the cameras' states.
    GET /metrics   Prometheus text format. Needs the token when one is configured.
    GET /frames/CAMERA/ID.jpg[?size=N]
                   a frame of an answer's evidence or a watch event (image/jpeg; 404 when it is not kept);
                   ``size`` (16-2048): scaled down to fit N pixels. Needs the token.
    anything else  needs the token when one is configured (401 before the upgrade), then the WebSocket
                   handshake (/ or /ws) or 404.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from urllib.parse import parse_qs
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from livewatch.log import get_logger
from livewatch.metrics import CONTENT_TYPE
from livewatch.server.guard import ConnectionGuard

log = get_logger("livewatch.server")
WS_PATHS = ("/", "/ws")


def check_bearer(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


def _reply(conn: ServerConnection, status: int, body: str, content_type: str) -> Response:
    response = conn.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


_FRAME_PATH = re.compile(r"^/frames/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/([0-9]{1,15})\.jpg$")


def make_process_request(
    token: str | None,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    metrics: Callable[[], bytes],
    frame: Callable[[str, int, int | None], Awaitable[bytes | None]] | None = None,
) -> Callable[[ServerConnection, Request], Response | Awaitable[Response] | None]:
    unauthorized = [0, float("-inf")]  # attempts since the last warning, when it was logged

    async def frame_response(conn: ServerConnection, camera: str, frame_id: int, size: int | None) -> Response:
        data = await frame(camera, frame_id, size) if frame is not None else None
        if data is None:
            return _reply(conn, 404, "no such frame\n", "text/plain")
        headers = Headers([("Content-Type", "image/jpeg"), ("Content-Length", str(len(data))),
                           ("Cache-Control", "private, max-age=3600"), ("X-Content-Type-Options", "nosniff")])
        return Response(200, "OK", headers, data)

    def process_request(conn: ServerConnection, request: Request) -> Response | Awaitable[Response] | None:
        path = request.path.split("?", 1)[0]
        authorized = token is None or check_bearer(request.headers.get("Authorization"), token)
        if path == "/healthz":
            ok, body = health()
            if not authorized:  # camera names and states are for token holders
                body = {"status": body["status"]}
            return _reply(conn, 200 if ok else 503, json.dumps(body) + "\n", "application/json")
        if not authorized:
            unauthorized[0] += 1
            now = time.monotonic()
            if now - unauthorized[1] >= 60:  # a summary a minute, not a line per attempt (journald's rate limit)
                log.warning("http.unauthorized", path=path[:128], attempts=unauthorized[0])
                unauthorized[:] = [0, now]
            response = _reply(conn, 401, "unauthorized: send Authorization: Bearer <token>\n", "text/plain")
            response.headers["WWW-Authenticate"] = 'Bearer realm="livewatch"'
            return response
        if path == "/metrics":
            return _reply(conn, 200, metrics().decode(), CONTENT_TYPE)
        match = _FRAME_PATH.match(path)
        if match is not None:
            query = parse_qs(request.path.partition("?")[2])
            size = query.get("size", [""])[0]
            if set(query) - {"size"} or (size and (not size.isdigit() or not 16 <= int(size) <= 2048)):
                return _reply(conn, 400, "the only query is size=16..2048\n", "text/plain")
            # the file read and any scaling run on a thread: the event loop serves everyone else meanwhile
            return frame_response(conn, match.group(1), int(match.group(2)), int(size) if size else None)
        if path not in WS_PATHS:
            return _reply(conn, 404, "not found\n", "text/plain")
        return None

    return process_request


def guarded_connection(guard: ConnectionGuard) -> type[ServerConnection]:
    """A ServerConnection class that counts itself in ``guard`` from accept to close and closes itself at once,
    before reading a byte, when the guard is full (logged at most once a minute)."""
    last_warning = [float("-inf")]

    class GuardedConnection(ServerConnection):
        _peer: str | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            peername = transport.get_extra_info("peername")
            peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
            if guard.acquire(peer):
                self._peer = peer
                return
            transport.abort()  # type: ignore[attr-defined]
            now = time.monotonic()
            if now - last_warning[0] >= 60:
                last_warning[0] = now
                log.warning("conn.refused", reason="connection limit", open=guard.open, limit=guard.total,
                            per_peer_limit=guard.per_peer, refused_total=guard.refused)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._peer is not None:
                guard.release(self._peer)
                self._peer = None
            super().connection_lost(exc)

    return GuardedConnection
