"""The security review's probes against real daemons: each hole it found, tried again (and variants of it)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import websockets
from websockets.sync.client import connect as sync_connect

from daemon_helpers import DaemonProcess
from media import free_port, wait_until, write_h264
from test_daemon import FAST_DEMO, ask_json, make_daemon, status_json, wait_frames  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """A TCP listener on loopback that accepts anything and records every byte it is sent (the 'Redis')."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.data = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(15)
        with conn:
            try:
                while chunk := conn.recv(4096):
                    with self._lock:
                        self.data += chunk
            except OSError:
                pass

    def lines(self) -> list[str]:
        with self._lock:
            return bytes(self.data).decode("latin-1").split("\r\n")

    def close(self) -> None:
        self.sock.close()


def request(ws, message: dict, timeout: float = 30) -> dict:
    ws.send(json.dumps(message))
    while True:
        reply = json.loads(ws.recv(timeout=timeout))
        if reply["type"] != "token":
            return reply


def add(ws, name: str, url: str) -> dict:
    return request(ws, {"type": "camera.add", "id": name, "name": name, "url": url})


def saved_cameras(d: DaemonProcess) -> str:
    path = d.state / "cameras.json"
    return path.read_text() if path.exists() else ""


def test_rtsp_request_line_injection_is_refused_and_never_reaches_the_port(make_daemon) -> None:
    rec = Recorder()
    d = make_daemon(FAST_DEMO + "[security]\ncamera_adds_per_minute = 100\n").start()
    base = f"rtsp://127.0.0.1:{rec.port}/x"
    probes = [
        f"{base}\r\nFLUSHALL\r\n", f"{base}%0d%0aFLUSHALL%0d%0a", f"{base}%0D%0AFLUSHALL", f"{base}?a=b%0aFLUSHALL",
        f"rtsp://u:p%0d%0aFLUSHALL@127.0.0.1:{rec.port}/x", f"{base} FLUSHALL", f"{base}\tFLUSHALL",
        f"{base}\u2028FLUSHALL", f"{base}%00", f"{base}%7f", f"rtsp://127.0.0.1:{rec.port}\r\n/x",
    ]
    with sync_connect(d.url) as ws:
        for i, probe in enumerate(probes):
            reply = add(ws, f"evil{i}", probe)
            assert reply["type"] == "error" and reply["code"] == "invalid_camera", (probe, reply)
            assert "\r" not in reply["message"] and "\n" not in reply["message"]
        # a clean URL to the same port does connect: what arrives is an RTSP request and nothing else
        assert add(ws, "clean", base)["type"] == "camera.added"
    wait_until(lambda: any(line.startswith("OPTIONS ") for line in rec.lines()), 20, interval=0.2)
    lines = [line for line in rec.lines() if line]
    assert not any("FLUSHALL" in line for line in lines), lines
    assert lines[0] == f"OPTIONS {base} RTSP/1.0" and all(":" in line for line in lines[1:]), lines
    saved = saved_cameras(d)
    assert "clean" in saved and "evil" not in saved and "FLUSHALL" not in saved
    rec.close()


def test_api_cameras_cannot_read_local_files_or_reach_link_local_hosts(make_daemon, tmp_path: Path) -> None:
    text = tmp_path / "notes.nfo"
    text.write_text("root:x:0:0:secret line\n" * 50)
    image = tmp_path / "picture.png"
    import cv2

    cv2.imwrite(str(image), np.full((64, 64, 3), 200, np.uint8))
    d = make_daemon(FAST_DEMO + "[security]\ncamera_adds_per_minute = 100\n").start()
    with sync_connect(d.url) as ws:
        local = [add(ws, f"f{i}", url) for i, url in enumerate(
            [str(text), str(image), "/etc/shadow", "/etc/passwd", str(tmp_path / "missing.mp4"), f"file://{text}",
             "/dev/video0", "webcam:0", "testsrc://?size=640x360"])]
        assert {r["code"] for r in local} == {"invalid_camera"}
        assert all("security.api_schemes" in r["message"] for r in local), local
        assert len({r["message"] for r in local[:6]}) == 1  # no oracle: one message for every file path
        network = [add(ws, f"n{i}", url) for i, url in enumerate(
            ["http://169.254.169.254/latest/meta-data/", "rtsp://169.254.10.1/x", "http://[fe80::1]/x",
             "http://[::ffff:169.254.169.254]/x", "rtsp://0.0.0.0:554/x", "rtsp://224.0.0.1/x",
             "http://100.100.100.200/latest/meta-data", "rtsp://host.invalid/x"])]
        assert {r["code"] for r in network} == {"invalid_camera"}
        assert len({r["message"] for r in network}) == 1, network  # refused or unresolvable: the same words
    assert saved_cameras(d) == ""
    events = [e for e in d.logs() if e.get("event") == "camera.add_refused"]
    assert len(events) == 8 and all("reason" in e for e in events)  # the operator's log has the detail


def test_sources_are_held_to_ffmpeg_whitelists_and_errors_stay_generic(make_daemon, tmp_path: Path) -> None:
    text = tmp_path / "notes.nfo"
    text.write_text("a secret the model must never read\n" * 50)
    closed = free_port()
    config = (FAST_DEMO + f'[cameras.textfile]\nurl = "{text}"\n'
              '[security]\napi_schemes = ["rtsp", "http", "file"]\n')
    d = make_daemon(config).start()
    with sync_connect(d.url) as ws:
        assert add(ws, "apitext", str(text))["type"] == "camera.added"
        assert add(ws, "refused", f"rtsp://127.0.0.1:{closed}/x")["type"] == "camera.added"
        assert add(ws, "http404", f"http://127.0.0.1:{closed}/x.mjpeg")["type"] == "camera.added"

    def states() -> dict:
        return status_json(d)["cameras"]

    api = ("apitext", "refused", "http404")
    wait_until(lambda: states()["textfile"]["state"] == "failed", 30, interval=0.5)  # the operator's camera
    wait_until(lambda: all(states()[n]["reconnects"] >= 2 for n in api), 40, interval=0.5)
    cams = states()
    generic = {cams[n]["last_error"] for n in api}
    assert len(generic) == 1 and "log" in generic.pop()  # API cameras: no port/path oracle in status ...
    assert {cams[n]["state"] for n in api} <= {"connecting", "backoff"}  # ... nor in their state
    assert cams["textfile"]["frames_sampled"] == 0 and cams["apitext"]["frames_sampled"] == 0
    for name in ("textfile", "apitext"):
        assert not list((d.state / "frames" / name).glob("*.jpg")) if (d.state / "frames" / name).exists() else True
    detail = [e for e in d.logs() if e.get("event") in ("camera.backoff", "camera.failed") and e.get("camera") == "refused"]
    assert detail and "refused" in json.dumps(detail).lower()  # ... while the log keeps the detail


def test_an_http_redirect_cannot_leave_the_protocol_whitelist(make_daemon, tmp_path: Path) -> None:
    import http.server

    secret = tmp_path / "secret.mp4"
    write_h264(secret, seconds=2.0, fps=5)  # a real video: only the whitelist can keep it out

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"file://{secret}")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = make_daemon().start()
    with sync_connect(d.url) as ws:
        assert add(ws, "redir", f"http://127.0.0.1:{server.server_port}/cam.mp4")["type"] == "camera.added"
    wait_until(lambda: status_json(d)["cameras"]["redir"]["reconnects"] >= 2, 40, interval=0.5)
    assert status_json(d)["cameras"]["redir"]["frames_sampled"] == 0
    refused = [e for e in d.logs() if e.get("camera") == "redir" and e.get("event") == "camera.backoff"]
    assert refused and "Invalid argument" in refused[0]["error"]  # FFmpeg's whitelist refused the redirect
    server.shutdown()


def test_camera_count_and_add_rate_are_bounded(make_daemon, tmp_path: Path) -> None:
    config = FAST_DEMO + "[security]\nmax_cameras = 4\ncamera_adds_per_minute = 4\n"
    d = make_daemon(config).start()
    rec = Recorder()
    with sync_connect(d.url) as ws:
        codes = [add(ws, f"c{i}", f"rtsp://127.0.0.1:{rec.port}/c{i}").get("code") for i in range(5)]
    assert codes == [None, None, None, "too_many_cameras", "too_many_cameras"], codes  # demo + 3
    with sync_connect(d.url) as ws:  # the count is checked before the rate; now the rate (3 of 4 used):
        assert request(ws, {"type": "camera.remove", "id": 1, "name": "c0"})["type"] == "camera.removed"
        assert request(ws, {"type": "camera.remove", "id": 2, "name": "c1"})["type"] == "camera.removed"
        replies = [add(ws, f"r{i}", f"rtsp://127.0.0.1:{rec.port}/r{i}") for i in range(2)]
    assert [r.get("code") for r in replies] == [None, "rate_limited"], replies
    assert len(status_json(d)["cameras"]) == 3
    assert "per minute" in replies[1]["message"]
    rec.close()


def test_a_saved_camera_whose_file_vanished_starts_failed_and_the_daemon_serves(make_daemon, tmp_path: Path) -> None:
    clip = write_h264(tmp_path / "clip.mp4", seconds=2.0, fps=15)
    config = FAST_DEMO + '[security]\napi_schemes = ["file"]\n'
    d = make_daemon(config).start()
    assert d.cli("cameras", "add", "porch", f"{clip}#loop=1").returncode == 0
    wait_frames(d, "porch")
    assert d.terminate() == 0
    clip.unlink()
    again = make_daemon(config, state=d.state).start()
    cam = status_json(again)["cameras"]["porch"]
    assert cam["state"] == "failed" and "no such readable file" in cam["last_error"]
    assert again.proc.poll() is None and again.health()[0] == 200
    answer = ask_json(again, "what was on the porch?", "--camera", "porch")  # its stored frames are still askable
    assert answer["camera"] == "porch" and answer["metrics"]["frames_in_context"] > 0
    assert any(e.get("event") == "camera.saved_unusable" for e in again.logs())


def test_a_corrupt_saved_camera_list_is_moved_aside(make_daemon, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "cameras.json").write_text('{"added": {"x\\n": 5}')
    d = make_daemon(state=state).start()
    assert "demo" in status_json(d)["cameras"]
    assert list(state.glob("cameras.json.corrupt-*"))
    assert any(e.get("event") == "registry.unreadable" for e in d.logs())


def test_a_corrupt_frame_index_is_moved_aside_and_rebuilt(make_daemon, tmp_path: Path) -> None:
    d = make_daemon().start()
    wait_frames(d, n=8)
    assert d.terminate() == 0
    index = d.state / "frames" / "index.sqlite3"
    with sqlite3.connect(index) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages >= 2
    with open(index, "r+b") as fh:  # one bad page (the last one: the pairs table's data)
        fh.seek(page * (pages - 1))
        fh.write(os.urandom(page))
    again = make_daemon(state=d.state).start()
    assert again.health()[0] == 200
    assert status_json(again)["memory"]["demo"]["unique_frames"] >= 2  # the frames came back from the files
    assert list((d.state / "frames").glob("index.sqlite3.corrupt-*"))
    assert any(e.get("event") == "store.index_corrupt" for e in again.logs())
    with sync_connect(again.url) as ws:  # and the daemon answers camera requests in that state
        assert add(ws, "x", "ftp://nope/")["code"] == "invalid_camera"


def test_two_daemons_on_one_state_directory(make_daemon) -> None:
    first = make_daemon().start()
    wait_frames(first, n=4)
    frames = first.state / "frames" / "demo"
    before = {p.name for p in frames.iterdir()}
    second = make_daemon(state=first.state)
    second.start(wait=False)
    assert second.proc.wait(60) == 75
    assert "another livewatch process" in second.log.read_text()
    after = {p.name for p in frames.iterdir()}
    assert before <= after | set(), "the second daemon deleted the first one's frames"
    assert before & after  # nothing of the first one's recent frames was removed by the second
    assert first.health()[0] == 200
    # frames and the state directory are the daemon's alone (umask 077)
    assert (first.state.stat().st_mode & 0o077) == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in frames.iterdir())


def test_idle_sockets_cannot_exhaust_descriptors(make_daemon) -> None:
    d = make_daemon(nofile=640, config=FAST_DEMO + "[server]\nmax_connections_per_peer = 16\n").start()
    wait_frames(d)
    idle = []
    try:
        for _ in range(400):  # an attacker on another loopback address opens idle sockets
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            try:
                s.connect(("127.0.0.1", d.port))
            except OSError:
                s.close()
                continue
            idle.append(s)
        time.sleep(1.0)
        assert ask_json(d, "still answering?")["type"] == "answer"  # the legitimate client from 127.0.0.1
        assert d.health()[0] == 200
        before = status_json(d)["memory"]["demo"]["total_frames_added"]
        wait_until(lambda: status_json(d)["memory"]["demo"]["total_frames_added"] > before + 2, 30, interval=0.5)
        st = status_json(d)
        assert st["memory"]["demo"]["write_errors"] == 0
        assert st["server"]["tcp_connections"] <= 16 + 2  # the attacker's newest 16, and the status client's own
    finally:
        for s in idle:
            s.close()
    text = d.log.read_text()
    assert "Too many open files" not in text and "Traceback" not in text
    # at its bound, an address's newest idle socket takes the place of its oldest: logged once, not per socket
    evicted = [e for e in d.logs() if e.get("event") == "conn.evicted"]
    assert len(evicted) == 1 and evicted[0]["evicted_total"] >= 1
    limits = [e for e in d.logs() if e.get("event") == "server.connection_limit_lowered"]
    assert limits and limits[0]["limit"] < 640


def test_the_engine_thread_dying_fails_questions_and_stops_the_daemon(make_daemon, tmp_path: Path) -> None:
    flag = tmp_path / "die"
    d = make_daemon(program=[sys.executable, str(ROOT / "tests" / "engine_fault.py")],
                    env={"LIVEWATCH_TEST_ENGINE_FAULT": str(flag)}).start()
    wait_frames(d)
    flag.touch()  # the next frame pair's context kills the engine thread
    replies: list[dict] = []
    with sync_connect(d.url) as ws:  # two questions in flight at every moment until the daemon goes: none may hang
        try:
            for i in range(2):
                ws.send(json.dumps({"type": "ask", "id": i, "question": "talk", "max_tokens": 1000}))
            for i in range(2, 62):
                while True:
                    reply = json.loads(ws.recv(timeout=30))
                    if reply["type"] != "token":
                        replies.append(reply)
                        break
                ws.send(json.dumps({"type": "ask", "id": i, "question": "talk", "max_tokens": 1000}))
        except websockets.exceptions.ConnectionClosed:
            pass
    errors = [r for r in replies if r["type"] == "error"]
    assert errors and {r["code"] for r in errors} <= {"model_error", "shutting_down"}, replies
    assert "injected" not in json.dumps(replies)  # no internal exception text to the client
    assert d.proc.wait(30) == 70
    died = [e for e in d.logs() if e.get("event") == "engine.thread_died"]
    assert died and died[0]["level"] == "critical" and died[0]["exception"]


def test_hostile_ids_names_and_strings_get_clear_errors(make_daemon) -> None:
    d = make_daemon(env={"LIVEWATCH_TOKEN": "tok-secret-0123456789abcdef"}).start()
    headers = {"Authorization": "Bearer tok-secret-0123456789abcdef"}
    with sync_connect(d.url, additional_headers=headers) as ws:
        def raw(text: str) -> dict:
            ws.send(text)
            return json.loads(ws.recv(timeout=10))

        assert raw('{"type": "status", "id": ' + "9" * 5000 + "}")["code"] == "bad_request"
        assert raw('{"type": "status", "id": "\\ud800"}')["code"] == "bad_request"
        assert raw('{"type": "ask", "id": 1, "question": "hi \\udfff there"}')["code"] == "bad_request"
        assert raw('{"type": "ask", "id": 2, "question": "q", "camera": "demo\\n"}')["code"] == "bad_request"
        assert raw('{"type": "camera.remove", "id": 3, "name": "demo\\n"}')["code"] == "bad_request"
        assert raw('[' * 100000)["code"] in ("bad_request", "too_large")
        assert raw('{"type": "status", "id": "ok"}')["type"] == "status"  # the connection is still fine
    status, body = d.health()
    assert status in (200, 503) and body == {"status": body["status"]}  # no camera names without the token
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{d.port}/healthz", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            full = json.loads(r.read())
    except urllib.error.HTTPError as e:
        full = json.loads(e.read())
    assert "demo" in full["cameras"]
    assert "tok-secret-0123456789abcdef" not in d.log.read_text()


def test_credentials_in_urls_and_query_strings_never_reach_logs_or_status(make_daemon, tmp_path: Path) -> None:
    port = free_port()
    config = (f'[cameras.door]\nurl = "rtsp://admin:hunter2@127.0.0.1:{port}/x?user=admin&pwd=hunter3"\n'
              f'[cameras.cam2]\nurl = "http://127.0.0.1:{port}/video.cgi?usr=viewer&password=hunter4"\n')
    d = make_daemon(config, env={"LIVEWATCH_TOKEN": "tok-secret-0123456789abcdef"})
    d.start(wait=False)
    wait_until(lambda: sum(1 for e in d.logs() if e.get("event") == "camera.backoff") >= 2, 60, interval=0.3)
    st = d.cli("status", "--json", token="tok-secret-0123456789abcdef")
    assert st.returncode == 0
    text = d.log.read_text() + st.stdout
    for secret in ("hunter2", "hunter3", "hunter4", "tok-secret-0123456789abcdef"):
        assert secret not in text, secret
    assert "pwd=***" in st.stdout and "password=***" in st.stdout


def test_a_client_that_does_not_read_is_cut_off_by_bytes_queued(make_daemon) -> None:
    d = make_daemon(FAST_DEMO + "[server]\nmax_outbound_bytes = 65536\n").start()
    request_text = json.dumps({"type": "status", "id": "s"})
    closed = None
    with sync_connect(d.url, max_queue=1) as ws:  # reads one message ahead, then leaves the socket unread
        try:
            for _ in range(6000):  # ~3 KB replies: far more than the socket buffers and the 64 KB queue hold
                ws.send(request_text)
            time.sleep(2)
            while True:
                ws.recv(timeout=10)
        except websockets.exceptions.ConnectionClosed as exc:
            closed = exc.rcvd.code if exc.rcvd else None
    assert closed == 1008
    assert any(e.get("event") == "conn.slow_consumer" and e.get("queued_bytes", 0) > 60000 for e in d.logs())
    assert d.health()[0] == 200


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_a_hostile_rtsp_camera_with_a_thousand_tracks_costs_one_setup(make_daemon) -> None:
    """Finding 1 of the third review: an SDP of 1,000 H.264 tracks (after 200 audio ones), UDP transport asked for
    in the URL, added over the API five times: each open sets up one track, descriptors and memory stay flat, and
    removing the cameras gives their memory back."""
    from hostile_rtsp import HostileRtsp

    servers = [HostileRtsp(tracks=1000, audio=200) for _ in range(5)]
    d = make_daemon(FAST_DEMO + "[security]\ncamera_adds_per_minute = 100\n"
                    "[capture]\nopen_timeout_s = 3.0\nread_timeout_s = 3.0\n").start()
    wait_frames(d)
    pid = d.proc.pid
    fds0, rss0 = _fds(pid), _rss_mb(pid)
    peak = [fds0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _fds(pid))
            except OSError:
                return
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with sync_connect(d.url) as ws:
            for i, srv in enumerate(servers):
                assert add(ws, f"evil{i}", srv.url + "#transport=udp")["type"] == "camera.added"
            # every camera opens at least twice (the first open times out waiting for data, then a retry)
            wait_until(lambda: all(s.describes >= 2 for s in servers), 90, interval=0.2)
            rss_open = _rss_mb(pid)
            assert all(s.setups <= s.describes for s in servers), [(s.setups, s.describes) for s in servers]
            assert peak[0] - fds0 < 60, (fds0, peak[0])  # 5 cameras: a few descriptors each, not 2,000
            assert ask_json(d, "still answering?", "--camera", "demo")["type"] == "answer"
            for i in range(len(servers)):
                assert request(ws, {"type": "camera.remove", "id": f"r{i}", "name": f"evil{i}"})["type"] == "camera.removed"
        stop.set()
        sampler.join()
        wait_until(lambda: _fds(pid) <= fds0 + 4, 30, interval=0.2)
        rss_after = _rss_mb(pid)
        print(f"hostile RTSP x5: fds {fds0} -> peak {peak[0]} -> {_fds(pid)}; RSS {rss0:.0f} -> {rss_open:.0f} -> "
              f"{rss_after:.0f} MB; SETUPs {[s.setups for s in servers]} for DESCRIBEs {[s.describes for s in servers]}")
        assert rss_open - rss0 < 200, (rss0, rss_open)  # was ~300 MB per open of one such camera
        assert rss_after - rss0 < 150, (rss0, rss_after)
    finally:
        stop.set()
        for srv in servers:
            srv.close()


def test_an_api_camera_over_a_bound_turns_failed_instead_of_retrying_forever(make_daemon) -> None:
    """A real RTSP camera (GStreamer, 640x360) added over the API to a daemon whose capture.max_source_pixels is
    smaller: a bound is the daemon's own rule, so the camera turns 'failed' after its permanent tries, with the
    generic message API cameras get, while a camera that merely cannot be reached keeps retrying."""
    from media import RtspServer

    server = RtspServer().start()
    try:
        d = make_daemon('[cameras.demo]\nurl = "testsrc://?size=64x64&rate=5"\n'
                        "[security]\ncamera_adds_per_minute = 100\n"
                        "[capture]\nmax_source_pixels = 4096\nopen_timeout_s = 5.0\n").start()
        with sync_connect(d.url) as ws:
            assert add(ws, "big", server.url)["type"] == "camera.added"
            assert add(ws, "away", f"rtsp://127.0.0.1:{free_port()}/x")["type"] == "camera.added"

        def cameras() -> dict:
            return status_json(d)["cameras"]

        wait_until(lambda: cameras()["big"]["state"] == "failed", 120, interval=1.0)
        big, away = cameras()["big"], cameras()["away"]
        assert "max_source_pixels" not in (big["last_error"] or "") and big["last_error"]  # generic for the API
        assert away["state"] in ("connecting", "backoff")  # unreachable: retried, as before
        events = [e for e in d.logs() if e.get("event") == "camera.failed" and e.get("camera") == "big"]
        assert events and "max_source_pixels" in events[0]["error"]  # the operator's log has the reason
    finally:
        server.kill()
