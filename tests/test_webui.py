"""The web page in real headless Chromium (Debian's package, driven by Playwright) against a real daemon with the
tiny checkpoint and the test-pattern camera: login, the camera grid, a camera's memory strip, a streamed answer
and a cancelled one, a privacy mask drawn, saved (the daemon has it), shown after a reload and cleared, camera add (a bad URL, then a good one) and remove, logout; a wrong token stays locked; a
page on another origin cannot use the logged-in session. Screenshots at desktop and phone widths land in the
test's tmp dir (and in LIVEWATCH_SCREENSHOTS, when set, for the README)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from websockets.sync.client import connect as sync_connect

from daemon_helpers import DaemonProcess
from media import wait_until
from test_daemon import FAST_DEMO

pytestmark = pytest.mark.slow

TOKEN = "tok-page-5-0123456789abcdef"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

playwright_api = pytest.importorskip("playwright.sync_api")


def non_blank(png: Path) -> bool:
    """A screenshot with real content: many distinct colours, not a flat page."""
    from PIL import Image

    with Image.open(png) as img:
        colours = img.convert("RGB").resize((200, 200)).getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) > 50


@pytest.fixture()
def daemon(tmp_path: Path, tiny_model_dir: Path):
    config = FAST_DEMO + '[security]\napi_schemes = ["rtsp", "testsrc"]\n'
    d = DaemonProcess(tmp_path, tiny_model_dir, config, env={"LIVEWATCH_TOKEN": TOKEN})
    d.start()
    yield d
    d.stop()


@pytest.fixture()
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed (tools/dev.sh installs it)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Attacker:
    """A page on another origin (another port of the same host: the same *site* for SameSite cookies)."""

    def __init__(self, daemon_port: int) -> None:
        html = f"""<!doctype html><title>other</title><script>
        window.result = new Promise((resolve) => {{
          const ws = new WebSocket("ws://127.0.0.1:{daemon_port}/ws");
          ws.onopen = () => {{ ws.send(JSON.stringify({{type: "status", id: 1}})); }};
          ws.onmessage = (m) => resolve("read: " + m.data.slice(0, 40));
          ws.onerror = () => resolve("refused");
        }});
        window.fetched = fetch("http://127.0.0.1:{daemon_port}/metrics", {{credentials: "include"}})
          .then((r) => r.text()).then((t) => "read: " + t.slice(0, 40), () => "blocked");
        </script>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_the_page_in_a_real_browser(daemon: DaemonProcess, browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    base = f"http://127.0.0.1:{daemon.port}/"
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(base)

    # a wrong token leaves the page locked
    page.fill("#token", "wrong")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_have_text("Wrong token.")
    expect(page.locator("#view-cameras")).to_be_hidden()

    page.fill("#token", TOKEN)
    page.click("#login-form button")
    tile = page.locator('.tile[data-camera="demo"]')
    expect(tile).to_be_visible(timeout=20_000)
    expect(tile.locator("img")).to_be_visible(timeout=20_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('.tile[data-camera=demo] img'); return i && i.naturalWidth > 0; }",
        timeout=20_000)
    expect(tile.locator(".state-streaming")).to_be_visible()
    shots = {"desktop": tmp_path / "page-desktop.png"}
    page.screenshot(path=str(shots["desktop"]), full_page=True)

    # a camera: its memory strip, a streamed answer with its metrics, a cancelled one
    tile.locator("a.open").click()
    expect(page.locator("#cam-title")).to_have_text("demo")
    page.wait_for_function("() => document.querySelectorAll('#strip img').length >= 2", timeout=20_000)
    page.wait_for_function("() => [...document.querySelectorAll('#strip img')].every((i) => i.naturalWidth > 0)",
                           timeout=20_000)
    page.fill("#question", "What is on the screen?")
    page.click("#ask-button")
    turn = page.locator(".turn").first
    expect(turn.locator(".metrics")).to_contain_text("first token", timeout=60_000)
    assert turn.locator(".a").inner_text().strip()
    expect(turn.locator(".evidence img").first).to_be_visible()
    shots["camera"] = tmp_path / "page-camera.png"
    page.screenshot(path=str(shots["camera"]), full_page=True)

    page.evaluate("""() => {  // a long answer to cancel: streamed tokens are counted as they come
        window.streamed = 0; const a = () => document.querySelector('.turn .a');
        new MutationObserver(() => { window.streamed += 1; }).observe(document.querySelector('#chat'),
            {subtree: true, characterData: true, childList: true}); }""")
    page.fill("#question", "Describe everything you see in great detail, frame by frame.")
    page.click("#ask-button")
    expect(page.locator("#cancel-button")).to_be_enabled()
    page.wait_for_function("() => window.streamed > 3", timeout=60_000)
    page.click("#cancel-button")
    expect(page.locator(".turn").first.locator(".metrics")).to_have_text("cancelled", timeout=20_000)

    # privacy masks: a shape drawn on the newest frame is saved (the daemon has it, a reload shows it), then cleared
    page.wait_for_function("() => document.querySelector('#mask-frame').naturalWidth > 0", timeout=20_000)
    layer = page.locator("#mask-layer")
    box = layer.bounding_box()
    assert box is not None and box["width"] > 100
    corners = ((0.1, 0.1), (0.4, 0.1), (0.4, 0.3), (0.1, 0.3))
    for x, y in corners:
        layer.click(position={"x": x * box["width"], "y": y * box["height"]})
    page.click("#mask-close")
    expect(page.locator("#mask-layer polygon")).to_have_count(1)
    page.click("#mask-save")
    expect(page.locator("#mask-status")).to_have_text("Saved: 1 mask.", timeout=20_000)
    with sync_connect(daemon.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(json.dumps({"type": "camera.masks", "id": 1, "camera": "demo"}))
        (saved,) = json.loads(ws.recv(timeout=20))["masks"]
    assert saved == pytest.approx([v for point in corners for v in point], abs=0.02)
    page.reload()
    expect(page.locator("#mask-layer polygon")).to_have_count(1, timeout=20_000)
    shots["masks"] = tmp_path / "page-masks.png"
    page.screenshot(path=str(shots["masks"]), full_page=True)
    page.click("#mask-clear")
    page.click("#mask-save")
    expect(page.locator("#mask-status")).to_have_text("Saved: 0 masks.", timeout=20_000)

    # cameras: a bad URL shows the API's error inline; a good one is added, then removed
    page.click("nav >> text=Cameras")
    page.fill("#cam-name", "bad")
    page.fill("#cam-url", "gopher://example.com/x")
    page.click("#add-camera button")
    expect(page.locator("#add-error")).not_to_be_empty()
    page.fill("#cam-name", "second")
    page.fill("#cam-url", "testsrc://?size=320x240&rate=5")
    page.click("#add-camera button")
    second = page.locator('.tile[data-camera="second"]')
    expect(second).to_be_visible(timeout=20_000)
    second.locator("button").click()
    expect(second).to_have_count(0, timeout=20_000)

    # another origin in the same browser, with the session cookie: it can neither talk nor read
    attacker = Attacker(daemon.port)
    try:
        other = context.new_page()
        other.goto(attacker.url)
        assert other.evaluate("window.result") == "refused"
        assert other.evaluate("window.fetched") == "blocked"
    finally:
        attacker.close()

    # watches: one added from the page is listed and removed; events of one forced to fire reach the feed
    page.click("nav >> text=Watches")
    page.fill("#watch-name", "door-person")
    page.select_option("#watch-camera", "demo")
    page.fill("#watch-condition", "a person is at the door")
    page.click("#add-watch button")
    row = page.locator("#watch-rows tr", has_text="door-person")
    expect(row).to_be_visible(timeout=20_000)
    with sync_connect(daemon.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(json.dumps({"type": "watch.add", "id": 1, "name": "always", "camera": "demo",
                            "condition": "anything at all", "on": 0.0001, "off": 0.0, "confirm": 1}))
        assert json.loads(ws.recv(timeout=20))["type"] == "watch.added"
    event = page.locator("#events li", has_text="always on demo: started")
    expect(event).to_be_visible(timeout=30_000)
    page.wait_for_function("() => { const i = document.querySelector('#events li img'); return i && i.naturalWidth > 0; }",
                           timeout=20_000)
    row.locator("button").click()
    expect(row).to_have_count(0, timeout=20_000)
    page.click("nav >> text=Status")
    expect(page.locator("#status-body")).to_contain_text("Questions in flight")

    # a phone-width view of the grid, then logout locks the page again
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(base)
    expect(small.locator('.tile[data-camera="demo"] img')).to_be_visible(timeout=20_000)
    small.wait_for_function(
        "() => { const i = document.querySelector('.tile[data-camera=demo] img'); return i && i.naturalWidth > 0; }",
        timeout=20_000)
    shots["phone"] = tmp_path / "page-phone.png"
    small.screenshot(path=str(shots["phone"]), full_page=True)
    phone.close()

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#view-cameras")).to_be_hidden()

    # the daemon goes away: a banner; it comes back (a new process forgets sessions): the page asks to log in
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    expect(page.locator("#status-body")).to_contain_text("Questions in flight", timeout=20_000)  # back where it was
    assert daemon.terminate() == 0
    assert "Traceback" not in daemon.log.read_text()
    expect(page.locator("#banner")).to_contain_text("unreachable", timeout=20_000)
    daemon.start()
    expect(page.locator("#login")).to_be_visible(timeout=30_000)
    expect(page.locator("#banner")).to_contain_text("log in again")

    for name, png in shots.items():
        assert png.stat().st_size > 5000 and non_blank(png), name
    out = os.environ.get("LIVEWATCH_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, png in shots.items():
            shutil.copy(png, Path(out) / png.name)


def test_login_cookies_and_origins_over_plain_http(daemon: DaemonProcess) -> None:
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{daemon.port}"

    def call(path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(base + path, data=body, headers=headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    status, headers, body = call("/")
    assert status == 200 and b"<title>livewatch</title>" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert call("/static/app.js")[0] == 200 and call("/static/index.html")[0] == 404
    assert call("/static/..%2fpage.py")[0] == 404
    assert json.loads(call("/session")[2]) == {"auth_required": True, "logged_in": False}
    assert call("/metrics")[0] == 401

    login = json.dumps({"token": TOKEN}).encode()
    json_type = {"Content-Type": "application/json"}
    assert call("/login", login, Origin="http://127.0.0.1:1", **json_type)[0] == 403  # another origin
    status, headers, _ = call("/login", login, Origin=base, **json_type)
    assert status == 204
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = cookie.split(";")[0]
    assert json.loads(call("/session", Cookie=session)[2])["logged_in"] is True
    assert call("/metrics", Cookie=session)[0] == 200
    chat = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    assert call("/v1/chat/completions", chat, Cookie=session, Origin="http://127.0.0.1:1", **json_type)[0] == 403
    wait_until(lambda: call("/v1/chat/completions", chat, Cookie=session, Origin=base, **json_type)[0] == 200, 30,
               interval=0.5)  # 503 (no_frames) until the camera's first pair
    assert call("/login", b"token=" + TOKEN.encode(), Origin=base,
                **{"Content-Type": "application/x-www-form-urlencoded"})[0] == 204  # a plain form works too

    assert call("/v1/chat/completions", chat, Cookie=session, **json_type)[0] == 403  # a replayed cookie: no Origin
    assert call("/metrics", Cookie=session, **{"Sec-Fetch-Site": "same-site"})[0] == 403  # another port's page
    assert call("/v1/chat/completions", chat, Origin=base, Authorization=f"Bearer {TOKEN}",
                **{"Content-Type": "text/plain"})[0] == 400  # JSON only: no "simple" cross-site request

    # DNS rebinding: a hostile name resolved to this machine is refused unless the token is sent
    rebound = {"Host": f"rebind.evil.example:{daemon.port}"}
    assert call("/healthz", **rebound)[0] == 421 and call("/", **rebound)[0] == 421
    assert call("/healthz", Authorization=f"Bearer {TOKEN}", **rebound)[0] == 200
    # hostile bytes in a cookie or a login body are refused, never a crash
    assert call("/healthz", Cookie="livewatch_session=1.a.\xe9")[0] == 200
    assert call("/login", b"token=x", Origin=base, **{"Content-Type": "application/x-www-form-urlencoded; charset=nope"})[0] == 401
    assert call("/login", b"[" * 50_000, Origin=base, **json_type)[0] == 401

    assert call("/logout", b"", Cookie=session, Origin=base)[0] == 204
    assert call("/metrics", Cookie=session)[0] == 401  # revoked
    wrong = json.dumps({"token": "guess"}).encode()
    codes = [call("/login", wrong, **json_type)[0] for _ in range(9)]  # 2 wrong logins above: 11 in all
    assert codes == [401] * 8 + [429]  # 10 wrong tokens a minute from one address
    assert call("/metrics", Authorization="Bearer guess")[0] == 429  # bearer guesses share the count
    # the right token is never refused, whatever the wrong guesses from its address (no lockout of its owners)
    assert call("/login", login, Origin=base, **json_type)[0] == 204
    assert call("/metrics", Authorization=f"Bearer {TOKEN}")[0] == 200
    assert any(e.get("event") == "http.guessing" for e in daemon.logs())
    assert "Traceback" not in daemon.log.read_text()
