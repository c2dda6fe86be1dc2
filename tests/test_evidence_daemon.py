"""Evidence end to end on a real daemon (tiny checkpoint, test-pattern camera, a token): the answer lists the frames
it saw, `livewatch ask --evidence DIR` saves them, their times are the stored frames' own (read back from the JPEG
metadata the store writes), and the frame URLs need the token, take a size, and refuse anything else."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from media import wait_until
from test_daemon import FAST_DEMO, make_daemon  # noqa: F401  (the fixture)
from livewatch.memory.jpegfile import jpeg_size, read_frame_meta

TOKEN = "tok-evidence-7-0123456789abcdef"


def get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_answers_carry_their_frames_and_the_cli_saves_them(make_daemon, tmp_path: Path) -> None:  # noqa: F811
    d = make_daemon(FAST_DEMO, env={"LIVEWATCH_TOKEN": TOKEN}).start()
    def frames() -> int:
        out = d.cli("status", "--json", token=TOKEN)
        return json.loads(out.stdout.strip().splitlines()[-1])["memory"]["demo"]["unique_frames"] if out.returncode == 0 else 0

    wait_until(lambda: frames() >= 4, 30, interval=0.3)
    folder = tmp_path / "evidence"
    out = d.cli("ask", "--json", "--max-tokens", "6", "--evidence", str(folder), "What is on the screen?",
                token=TOKEN)
    assert out.returncode == 0, out.stderr
    answer = json.loads((folder / "answer.json").read_text())
    evidence = answer["evidence"]
    assert len(evidence) * 2 >= answer["metrics"]["frames_in_context"] >= 2
    assert evidence[0]["relied_on"] and all(e["attention"] is not None for e in evidence)
    saved = sorted(folder.glob("*.jpg"))
    assert len(saved) == len(evidence)
    for rank, item in enumerate(evidence, start=1):
        data = (folder / f"{rank:02d}-{item['frame_id']}.jpg").read_bytes()
        meta = read_frame_meta(data)  # the store's own record of this frame
        assert meta is not None and meta.id == item["frame_id"] and meta.camera == "demo"
        assert item["time"] == meta.wall[0] and item["end_time"] == meta.wall[1]

    base = f"http://127.0.0.1:{d.port}"
    url = base + evidence[0]["url"]
    assert get(url, token=None)[0] == 401 and get(url, token="wrong")[0] == 401
    status, thumb = get(url + "?size=32")
    assert status == 200 and max(jpeg_size(thumb) or (999, 999)) <= 32 and read_frame_meta(thumb) is None
    for bad in ("?size=9", "?size=abc", "?size=64&x=1", "?size=100000"):
        assert get(url + bad)[0] == 400, bad
    for path in ("/frames/demo/999999.jpg", "/frames/other/1.jpg", "/frames/demo/../../state/cameras.json",
                 "/frames/demo/1.png", "/frames/demo/-1.jpg"):
        assert get(base + path)[0] == 404, path
    assert d.terminate() == 0
