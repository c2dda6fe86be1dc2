"""find on a real daemon (tiny checkpoint, a test-pattern camera with a history): moments come back best first,
inside the range, with progress messages and evidence frame URLs that serve; a cancel stops it; hostile fields are
refused. (Random weights make P(yes) noise: the mechanics are tested, not the judgement.)"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

from daemon_helpers import DaemonProcess
from media import wait_until

CONFIG = ("[capture]\nfps = 4.0\n[memory]\nstar_frames = 2\nwindow_frames = 4\nwindow_slack_frames = 0\n"
          '[cameras.demo]\nurl = "testsrc://?size=320x240&rate=8"\n')


def test_find_returns_the_best_moments_with_progress_and_can_be_cancelled(tmp_path: Path,
                                                                         tiny_model_dir: Path) -> None:
    d = DaemonProcess(tmp_path, tiny_model_dir, CONFIG).start()
    try:
        def history() -> int:
            out = d.cli("status", "--json")
            return json.loads(out.stdout.strip().splitlines()[-1])["memory"]["demo"]["history_pairs"] if (
                out.returncode == 0) else 0

        wait_until(lambda: history() >= 12, 60, 0.5)
        with connect(d.url) as ws:
            ws.send(json.dumps({"type": "find", "id": "f1", "query": "a coloured test pattern", "since": "-1h",
                                "top": 3}))
            progress, result = [], None
            while result is None:
                message = json.loads(ws.recv(timeout=120))
                if message["type"] == "find.progress":
                    progress.append((message["done"], message["total"]))
                elif message["type"] == "find.result":
                    result = message
                else:
                    raise AssertionError(message)
            total = progress[0][1]
            assert total >= 4 and progress[0] == (0, total) and progress[-1] == (total, total)
            moments = result["moments"]
            assert len(moments) == 3 and [m["probability"] for m in moments] == sorted(
                (m["probability"] for m in moments), reverse=True)
            assert all(m["camera"] == "demo" and m["since"] < m["until"] for m in moments)
            with urllib.request.urlopen(f"http://127.0.0.1:{d.port}{moments[0]['frame_url']}", timeout=10) as r:
                assert r.status == 200 and r.read()[:2] == b"\xff\xd8"

            ws.send(json.dumps({"type": "find", "id": "f2", "query": "anything", "since": "-1h"}))
            ws.send(json.dumps({"type": "cancel", "id": "f2"}))
            while True:
                message = json.loads(ws.recv(timeout=120))
                if message["type"] in ("error", "find.result"):
                    break
            assert message["type"] == "error" and message["code"] == "cancelled", message

            ws.send(json.dumps({"type": "ask", "id": "a1", "question": "hm?", "max_tokens": 50}))
            ws.send(json.dumps({"type": "cancel", "id": "a1"}))  # right behind it: cancelled before its first step
            while (message := json.loads(ws.recv(timeout=60)))["type"] == "token":
                pass
            assert message["id"] == "a1" and message["type"] in ("error", "answer"), message
            assert message["type"] == "answer" or message["code"] == "cancelled"

            for bad, code in (({"query": "x", "cameras": ["nope"]}, "unknown_camera"),
                              ({"query": "x", "since": "soon"}, "bad_request"),
                              ({"query": "a \u0007 b"}, "bad_request"), ({"query": "x", "top": 0}, "bad_request")):
                ws.send(json.dumps({"type": "find", "id": "b", **bad}))
                while (reply := json.loads(ws.recv(timeout=60)))["id"] != "b" or reply["type"] == "find.progress":
                    pass
                assert reply["type"] == "error" and reply["code"] == code, (bad, reply)
        out = d.cli("find", "demo", "a test pattern", "--since", "1h", "--top", "2")
        assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 2, out.stderr
        assert "scored" in out.stderr

        def engine_cameras() -> set:
            return set(json.loads(d.cli("status", "--json").stdout.strip().splitlines()[-1])["engine"]["cameras"])

        wait_until(lambda: engine_cameras() <= {"demo"}, 10, 0.5)  # the chunks' contexts are gone
    finally:
        d.stop()
