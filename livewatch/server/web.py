"""The HTTP layer on the daemon's one port (aiohttp): the WebSocket protocol, health, metrics, frames and the
OpenAI-compatible API.

    GET /healthz   200 when the engine is alive and some camera streams (or none is configured), else 503;
                   a JSON body either way. Never needs the token (for probes); without it the body holds only
                   the status, with it also the engine and the cameras' states.
    GET /metrics   Prometheus text format.
    GET /frames/CAMERA/ID.jpg[?size=N]
                   a frame of an answer's evidence or a watch event (image/jpeg; 404 when it is not kept);
                   ``size`` (16-2048): scaled down to fit N pixels. An ETag of the content, ``private,
                   no-cache`` (revalidated: 304 for a matching If-None-Match).
    GET / or /ws   the WebSocket protocol (an upgrade request; a browser's Origin must be the daemon's own or
                   listed in server.allowed_origins: else 403). GET / without an upgrade is the web page
                   (``page``: static files, login, logout).
    GET /v1/models, POST /v1/chat/completions
                   the OpenAI-compatible API (``openai_http``).
    anything else  404 (405 for a known path with another method).

Everything but /healthz and the page's public parts needs the token when one is configured: ``Authorization:
Bearer <token>``, or the session cookie of a browser that logged in (``session``); 401 otherwise, a warning a
minute in the log. A request authenticated by the cookie that changes anything (not a GET) must come from an
allowed origin. Bodies over ``server.max_message_bytes`` get 413.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from livewatch.errors import INTERNAL_MESSAGE, ErrorCode
from livewatch.log import Throttle, get_logger
from livewatch.metrics import CONTENT_TYPE
from livewatch.server.guard import ConnectionGuard, peer_key
from livewatch.server.listener import Listener
from livewatch.server.openai_api import error_body
from livewatch.server.page import PUBLIC_PATHS, Page
from livewatch.server.session import COOKIE, Guesses, Sessions, host_allowed, origin_allowed

log = get_logger("livewatch.server")
WS_PATHS = ("/", "/ws")
# what reading a request's body raises when the bytes are not what its headers say (a cut chunked body, a broken
# transfer encoding): the client's fault, a 400, never a 500
BODY_ERRORS = (RequestPayloadError, HttpProcessingError)
_FRAME_ROUTE = r"/frames/{camera:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}}/{frame:[0-9]{1,15}}.jpg"


def check_bearer(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


class WebSocket:
    """One upgraded connection as ``handler.Connection`` sees it: messages in, text out, a close code."""

    def __init__(self, ws: web.WebSocketResponse, remote: str) -> None:
        self._ws = ws
        self.remote = remote

    async def messages(self) -> AsyncIterator[str | bytes]:
        async for message in self._ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                yield message.data
            else:  # ERROR: a frame over the size limit (closed with 1009) or a broken stream
                return

    async def send(self, text: str) -> None:
        """Raises ConnectionError once the connection is closing."""
        await self._ws.send_str(text)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode())


@dataclass(frozen=True)
class Endpoints:
    """What the daemon serves over HTTP."""

    health: Callable[[], tuple[bool, dict[str, Any]]]
    metrics: Callable[[], bytes]
    frame: Callable[[str, int, int | None], Awaitable[bytes | None]]
    websocket: Callable[[WebSocket], Awaitable[None]]


@dataclass(frozen=True)
class HttpOptions:
    token: str | None
    allowed_origins: tuple[str, ...]
    max_body_bytes: int  # request bodies and WebSocket messages (the hard frame limit is 4x)
    handshake_timeout_s: float
    session_ttl_s: float = 12 * 3600.0


def text(status: int, body: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", headers=headers)


class HttpServer:
    """The aiohttp application behind the guarded listener; start, stop accepting, close."""

    def __init__(self, endpoints: Endpoints, options: HttpOptions, guard: ConnectionGuard) -> None:
        self.endpoints = endpoints
        self.options = options
        self.listener = Listener(guard, options.handshake_timeout_s)
        self.sessions = Sessions(options.session_ttl_s)
        self.guesses = Guesses()
        self.page = Page(options.token, self.sessions, self.guesses, self.origin_ok, self.too_many_guesses)
        self.app = web.Application(middlewares=[self._middleware], client_max_size=options.max_body_bytes)
        self.page.add_to(self.app)
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get(_FRAME_ROUTE, self._frame)
        for path in WS_PATHS:
            self.app.router.add_get(path, self._websocket)
        self._notes = Throttle()  # refusals: a summary a minute per kind
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        # handler_cancellation: a client that goes away cancels its request (and so its answer)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, handler_cancellation=True,
                                     keepalive_timeout=30.0, shutdown_timeout=2.0)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        return await self.listener.start(server, host, port, tls)

    def stop_accepting(self) -> None:
        self.listener.stop_accepting()

    async def close(self) -> None:
        """Close every connection (open requests get ``shutdown_timeout`` to finish) and the listener."""
        if self._runner is not None:
            await self._runner.cleanup()
        await self.listener.wait_closed()

    # -- middleware: proving the connection, the token, body limits, no stack traces to clients -------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        peer = peer_key(request.remote or "?")
        by = request["auth"] = self._authenticated(request, peer)
        if by is not None:  # the connection proved itself: out of the unproven pool, no first-request deadline
            self.listener.prove(request.transport)
        if request.get("guessing"):  # a wrong token past the limits: a right one never gets here
            return self.too_many_guesses(request, peer)
        if by != "token" and not host_allowed(request.host, self.options.allowed_origins):
            return refuse(request, 421, ErrorCode.UNAUTHORIZED, "address the daemon by IP address, localhost, or a "
                          "host of server.allowed_origins (or send the token)")
        if not self._public(request):
            if by is None:
                self._note("http.unauthorized", request.path)
                return refuse(request, 401, ErrorCode.UNAUTHORIZED,
                              "unauthorized: send Authorization: Bearer <token>",
                              **{"WWW-Authenticate": 'Bearer realm="livewatch"'})
            if not self.browser_ok(request):
                return refuse(request, 403, ErrorCode.UNAUTHORIZED, "origin not allowed")
        limit = self.options.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return refuse(request, 413, ErrorCode.TOO_LARGE, f"the body is over {limit} bytes")
        encodings = request.headers.getall("Content-Encoding", ())
        if any(value.strip().lower() not in ("", "identity") for value in encodings):
            # nothing here takes a compressed body: refused before aiohttp would inflate one (a bomb, or bytes
            # that are not what the header says)
            return refuse(request, 415, ErrorCode.BAD_REQUEST, "request bodies are not compressed here: send "
                          "them without Content-Encoding")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:  # a chunked body over the limit
            return refuse(request, 413, ErrorCode.TOO_LARGE, f"the body is over {limit} bytes")
        except BODY_ERRORS:  # a body that breaks off, or bytes its headers misdescribe
            return refuse(request, 400, ErrorCode.BAD_REQUEST, "the request body could not be read")
        except web.HTTPException as exc:  # 404, 405: no HTML page
            return refuse(request, exc.status, ErrorCode.BAD_REQUEST, exc.reason.lower())
        except Exception as exc:  # a bug: the client gets a fixed message, the log the detail (a minute apart)
            self._note("http.request_crashed", request.path, error=f"{type(exc).__name__}: {exc}")
            return refuse(request, 500, ErrorCode.INTERNAL, INTERNAL_MESSAGE)

    def _public(self, request: web.Request) -> bool:
        path = request.path
        return (path in PUBLIC_PATHS or path.startswith("/static/")
                or (path == "/" and request.method == "GET" and not _upgrade(request)))

    def _authenticated(self, request: web.Request, peer: str) -> str | None:
        """How the request proved it may act ("token", "cookie"; "open" without a token), or None. A wrong
        bearer token counts as a guess; past the guess limits the request is marked ``guessing``."""
        token = self.options.token
        if token is None:
            return "open"
        header = request.headers.get("Authorization")
        if header is not None:
            if check_bearer(header, token):
                return "token"
            if self.guesses.wrong(peer):
                request["guessing"] = True
                return None
        return "cookie" if self.sessions.valid(request.cookies.get(COOKIE)) else None

    def too_many_guesses(self, request: web.Request, peer: str) -> web.Response:
        """A wrong token past the guess limits (the middleware's and the login's answer)."""
        self._note("http.guessing", request.path)
        return refuse(request, 429, ErrorCode.RATE_LIMITED, "wrong token, and too many wrong tokens; retry in a "
                      "minute", **{"Retry-After": str(int(self.guesses.retry_after(peer)) + 1)})

    def browser_ok(self, request: web.Request) -> bool:
        """A request not proven by the token may act only from an allowed origin: anything but a GET (a
        WebSocket upgrade included), and with the cookie an Origin is required and the fetch must be the page's
        own (Sec-Fetch-Site), so neither another site nor a client replaying the cookie can use a session."""
        by = request.get("auth")
        if by == "token":
            return True
        origin = request.headers.get("Origin")
        if by == "cookie" and request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        if request.method == "GET" and not _upgrade(request):
            return True
        if by == "cookie" and origin is None:
            return False
        return self.origin_ok(request)

    def origin_ok(self, request: web.Request) -> bool:
        return origin_allowed(request.headers.get("Origin"), request.host, request.scheme,
                              self.options.allowed_origins)

    def _note(self, event: str, path: str, **fields: str) -> None:
        """A summary a minute per kind of refusal, not a line per attempt (journald's rate limit)."""
        if attempts := self._notes.ready(event):
            log.warning(event, path=path[:128], attempts=attempts, **fields)

    # -- routes -----------------------------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        ok, body = self.endpoints.health()
        if request.get("auth") is None:
            body = {"status": body["status"]}  # camera names and states are for token holders
        return web.json_response(body, status=200 if ok else 503, dumps=lambda o: json.dumps(o) + "\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.endpoints.metrics(), headers={"Content-Type": CONTENT_TYPE})

    async def _frame(self, request: web.Request) -> web.Response:
        query = request.query
        size = query.get("size", "")
        if set(query) - {"size"} or (size and not (size.isascii() and size.isdigit() and 16 <= int(size) <= 2048)):
            return text(400, "the only query is size=16..2048\n")
        camera, frame_id = request.match_info["camera"], int(request.match_info["frame"])
        # the file read and any scaling run on a thread: the event loop serves everyone else meanwhile
        data = await self.endpoints.frame(camera, frame_id, int(size) if size else None)
        if data is None:
            return text(404, "no such frame\n")
        # by content: a camera removed and added again numbers its frames from the start again
        etag = f'"{hashlib.sha256(data).hexdigest()[:24]}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type="image/jpeg", headers=headers)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/" and not _upgrade(request):
            return self.page.index(request)
        if not self.browser_ok(request):  # the middleware checked it already; kept beside the upgrade
            return text(403, "origin not allowed\n")
        ws = web.WebSocketResponse(max_msg_size=4 * self.options.max_body_bytes, compress=False, heartbeat=20.0)
        if not ws.can_prepare(request).ok:
            return text(404, "not found: this path takes a WebSocket upgrade\n")
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
        await self.endpoints.websocket(WebSocket(ws, remote))
        return ws


def _upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower()


def refuse(request: web.Request, status: int, code: ErrorCode, message: str, **headers: str) -> web.Response:
    """An error reply: OpenAI's error object under /v1/ (its clients read it), plain text elsewhere."""
    if request.path.startswith("/v1/"):
        return web.json_response(error_body(code, message), status=status, headers=headers)
    return text(status, message + "\n", **headers)
