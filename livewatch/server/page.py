"""The web page's routes: the static files (``livewatch/webui``, no build step, nothing from a CDN) and the
browser login that turns the token into a session cookie (``session.Sessions``).

    GET  /                 the page (a WebSocket upgrade on / is the protocol, as before)
    GET  /static/NAME      app.js, style.css
    GET  /session          {"auth_required", "logged_in"}: whether the page must show its login form
    POST /login            {"token": "..."} (JSON or a form): 204 with the cookie, 401 for a wrong token,
                           429 for a wrong token past 10 a minute from its address or 200 a minute from all
                           (logins and bearer headers alike; a right token is always accepted), 403 from an
                           origin that may not act here
    POST /logout           revokes the cookie and clears it

The page is served with a strict Content-Security-Policy (its own scripts, styles, images and connections only;
no framing) and revalidated by ETag.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from livewatch.log import get_logger
from livewatch.server.guard import peer_key
from livewatch.server.session import COOKIE, Guesses, Sessions

log = get_logger("livewatch.server")
WEBUI = Path(__file__).resolve().parent.parent / "webui"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; script-src 'self'; "
        "style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
PUBLIC_PATHS = ("/healthz", "/session", "/login", "/logout")


class Page:
    def __init__(self, token: str | None, sessions: Sessions, guesses: Guesses,
                 origin_ok: Callable[[web.Request], bool],
                 too_many_guesses: Callable[[web.Request, str], web.Response]) -> None:
        self.token = token
        self.sessions = sessions
        self.guesses = guesses  # wrong logins count with wrong bearer tokens
        self.origin_ok = origin_ok
        self.too_many_guesses = too_many_guesses
        self._files = {path.name: (path.read_bytes(), _TYPES[path.suffix]) for path in WEBUI.iterdir()
                       if path.suffix in _TYPES}

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/session", self._session)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)

    def logged_in(self, request: web.Request) -> bool:
        return self.token is None or self.sessions.valid(request.cookies.get(COOKIE))

    def index(self, request: web.Request) -> web.Response:
        return self._file(request, "index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in self._files:
            raise web.HTTPNotFound()
        return self._file(request, name)

    def _file(self, request: web.Request, name: str) -> web.Response:
        body, content_type = self._files[name]
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        headers = {**_HEADERS, "ETag": etag}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    async def _session(self, request: web.Request) -> web.Response:
        return web.json_response({"auth_required": self.token is not None, "logged_in": self.logged_in(request)},
                                 headers={"Cache-Control": "no-store"})

    async def _login(self, request: web.Request) -> web.Response:
        if not self.origin_ok(request):
            return web.Response(status=403, text="origin not allowed\n")
        if self.token is None:
            return web.Response(status=204)
        try:
            async with asyncio.timeout(10):  # a body trickled in byte by byte holds nothing for long
                token = await _submitted_token(request)
        except TimeoutError:
            return web.Response(status=408, text="the login took too long\n")
        if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            peer = peer_key(request.remote or "?")
            if self.guesses.wrong(peer):
                return self.too_many_guesses(request, peer)
            log.warning("http.login_failed", remote=request.remote)
            return web.Response(status=401, text="wrong token\n")
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, self.sessions.issue(), max_age=int(self.sessions.ttl_s), path="/",
                            httponly=True, samesite="Strict", secure=request.secure)
        log.info("http.login", remote=request.remote)
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        if not self.origin_ok(request):
            return web.Response(status=403, text="origin not allowed\n")
        self.sessions.revoke(request.cookies.get(COOKIE))
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        response.del_cookie(COOKIE, path="/")
        return response


async def _submitted_token(request: web.Request) -> str | None:
    """The token of a login: a JSON body {"token": ...} or a form field."""
    try:
        if request.content_type == "application/json":
            value = json.loads(await request.read()).get("token")
        else:
            value = (await request.post()).get("token")
    except (ValueError, AttributeError, LookupError, RecursionError):  # bad JSON or charset, too deep
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 4096 else None
