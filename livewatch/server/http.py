"""Plain HTTP on the WebSocket port, answered before the upgrade: health, metrics, and the token check.

    GET /healthz   200 when the engine is alive and some camera streams (or none is configured), else 503;
                   a JSON body either way. Never needs the token (for probes).
    GET /metrics   Prometheus text format. Needs the token when one is configured.
    anything else  needs the token when one is configured (401 before the upgrade), then the WebSocket
                   handshake (/ or /ws) or 404.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from livewatch.log import get_logger
from livewatch.metrics import CONTENT_TYPE

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


def make_process_request(
    token: str | None,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    metrics: Callable[[], bytes],
) -> Callable[[ServerConnection, Request], Response | None]:
    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            ok, body = health()
            return _reply(conn, 200 if ok else 503, json.dumps(body) + "\n", "application/json")
        if token is not None and not check_bearer(request.headers.get("Authorization"), token):
            log.warning("http.unauthorized", path=path)
            response = _reply(conn, 401, "unauthorized: send Authorization: Bearer <token>\n", "text/plain")
            response.headers["WWW-Authenticate"] = 'Bearer realm="livewatch"'
            return response
        if path == "/metrics":
            return _reply(conn, 200, metrics().decode(), CONTENT_TYPE)
        if path not in WS_PATHS:
            return _reply(conn, 404, "not found\n", "text/plain")
        return None

    return process_request
