"""Zones: crops (pure), the config's rules, and a real daemon whose 1920x1080 H.264 file camera has a zone over a
quarter of it: one decoder for both (status), the zone's frames cut at the cap's detail (fine stripes the
parent's capped frame averages away stay stripes in the zone), its own memory and answers (frames and visual
tokens in the answer's metrics), and removing the parent fails the zone with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_daemon import make_daemon  # noqa: F401  (the fixture)
from livewatch.capture.zones import Crop, parse_crop
from livewatch.config import load_settings
from livewatch.errors import ConfigError, ZoneError


def test_crops() -> None:
    c = parse_crop([0.25, 0.25, 0.25, 0.25])
    assert c == Crop(0.25, 0.25, 0.25, 0.25) and c.box(1080, 1920) == (270, 540, 480, 960)
    assert parse_crop([0.5, 0.5, 0.5, 0.5]).box(101, 101)[1] == 101
    assert Crop(0.99, 0.99, 0.01, 0.01).box(100, 100) == (99, 100, 99, 100)  # clamped at the edge
    for bad in ([0, 0, 1], [0, 0, 1, 1.5], [0.5, 0.5, 0.6, 0.1], [0, 0, 0, 0.5], ["0", 0, 1, 1], [0, 0, float("nan"), 1]):
        with pytest.raises(ZoneError):
            parse_crop(bad)


def test_config_rules(tmp_path: Path) -> None:
    def load(text: str):
        path = tmp_path / "c.toml"
        path.write_text(text)
        return load_settings(path, environ={"HOME": str(tmp_path)})

    base = '[cameras.drive]\nurl = "rtsp://192.0.2.1/s"\n'
    s = load(base + '[cameras.door]\nsource = "drive"\ncrop = [0.1, 0.2, 0.3, 0.4]\n')
    door = next(c for c in s.cameras if c.name == "door")
    assert door.source == "drive" and door.crop == Crop(0.1, 0.2, 0.3, 0.4) and door.url == ""
    for text, message in [
        (base + '[cameras.door]\nsource = "nope"\ncrop = [0, 0, 0.5, 0.5]\n', "not a camera with a url"),
        (base + '[cameras.door]\nsource = "drive"\n', "crop must be"),
        (base + '[cameras.door]\nsource = "drive"\nurl = "rtsp://192.0.2.2/s"\ncrop = [0, 0, 1, 1]\n', "either a url"),
        (base + '[cameras.door]\nsource = "drive"\ncrop = [0, 0, 1, 1]\n[cameras.step]\nsource = "door"\n'
                'crop = [0, 0, 1, 1]\n', "not from another zone"),
        (base + '[cameras.door]\nurl = "rtsp://192.0.2.2/s"\ncrop = [0, 0, 1, 1]\n', "crop is for zones"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(text)


def stripes(i: int) -> np.ndarray:
    """1080p: a grey scene with a square of 2-pixel black and white stripes in the zone's quarter, and a block
    that moves (so the frames differ)."""
    img = np.full((1080, 1920, 3), 110, np.uint8)
    img[330:480, 560:880] = np.where((np.arange(320) // 2) % 2 == 0, 255, 0).astype(np.uint8)[None, :, None]
    x = 100 + 40 * (i % 30)
    img[800:900, x:x + 100] = (200, 40, 40)
    return img


@pytest.mark.slow
def test_a_zone_shares_its_parents_decoder_and_sees_its_detail(make_daemon, tmp_path: Path) -> None:  # noqa: F811
    from websockets.sync.client import connect

    from media import wait_until, write_h264
    from test_daemon import status_json
    from test_evidence_daemon import TOKEN, get

    clip = write_h264(tmp_path / "drive.mp4", seconds=6.0, fps=5, size=(1080, 1920), gop=5, image=stripes, b_frames=0)
    cfg = (f'[cameras.drive]\nurl = "{clip}#loop=1"\n'
           '[cameras.door]\nsource = "drive"\ncrop = [0.25, 0.25, 0.25, 0.25]\n')
    d = make_daemon(cfg, env={"LIVEWATCH_TOKEN": TOKEN}).start()

    def status() -> dict:
        out = d.cli("status", "--json", token=TOKEN)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    wait_until(lambda: status()["memory"]["door"]["unique_frames"] >= 4, 120, interval=0.5)
    cams = status()["cameras"]
    assert cams["drive"]["decoder"] == "own" and cams["drive"]["zones"] == ["door"]
    assert cams["door"]["decoder"] == "parent" and cams["door"]["zone_of"] == "drive"
    assert cams["door"]["state"] == cams["drive"]["state"] == "streaming"
    assert sum(c["decoder"] == "own" for c in cams.values()) == 1  # one decoder for both

    def newest(camera: str) -> np.ndarray:
        with connect(d.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            ws.send(json.dumps({"type": "memory", "id": "m", "camera": camera}))
            frames = json.loads(ws.recv(timeout=60))["frames"]
        status_code, data = get(f"http://127.0.0.1:{d.port}/frames/{camera}/{frames[-1]['frame_id']}.jpg")
        assert status_code == 200
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)

    zone, parent = newest("door"), newest("drive")
    zh, zw = zone.shape
    ph, pw = parent.shape
    assert zw > pw / 4 * 2 and zh > ph / 4 * 2  # the quarter at more than twice the detail it has in the parent
    assert list(cams["door"]["resolution"]) == [zh, zw]
    # the stripes' square: rows 330-480, columns 560-880 of 1080p; in the zone (which starts at 270, 480)
    inner = zone[int((350 - 270) / 270 * zh):int((460 - 270) / 270 * zh), int((580 - 480) / 480 * zw):int((860 - 480) / 480 * zw)]
    in_parent = parent[int(350 / 1080 * ph):int(460 / 1080 * ph), int(580 / 1920 * pw):int(860 / 1920 * pw)]
    assert inner.std() > 3 * in_parent.std() + 5, (inner.std(), in_parent.std())

    out = d.cli("ask", "--json", "--camera", "door", "--max-tokens", "2", "What is this?", token=TOKEN)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])["metrics"]
    out = d.cli("ask", "--json", "--camera", "drive", "--max-tokens", "2", "What is this?", token=TOKEN)
    parent_metrics = json.loads(out.stdout.strip().splitlines()[-1])["metrics"]
    per_frame = metrics["visual_tokens"] / metrics["frames_in_context"]
    assert per_frame == pytest.approx((zh // 28) * (zw // 28) / 2, rel=0.01)  # 2 frames a token column (temporal patch)
    assert parent_metrics["visual_tokens"] > 0

    out = d.cli("cameras", "rm", "drive", token=TOKEN)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: status()["cameras"]["door"]["state"] == "failed", 30, interval=0.5)
    assert status()["cameras"]["door"]["last_error"] == "its source camera 'drive' was removed"
    assert d.terminate() == 0


def test_a_zone_inherits_its_parents_masks_and_has_its_own() -> None:
    """The reader paints the parent's masks on the full-resolution frame, then each tap cuts its zone (and paints
    the zone's own masks, relative to the zone)."""
    import asyncio

    from livewatch.capture.handoff import LatestHandoff
    from livewatch.capture.masks import parse_masks
    from livewatch.capture.zones import ZoneTap

    async def main() -> np.ndarray:
        handoff: LatestHandoff = LatestHandoff(asyncio.get_running_loop())
        own = parse_masks([[0.0, 0.5, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0]])  # the zone's lower half
        tap = ZoneTap("door", Crop(0.5, 0.0, 0.5, 0.5), None, handoff, own)
        full = np.full((200, 400, 3), 120, np.uint8)
        parse_masks([[0.5, 0.0, 0.75, 0.0, 0.75, 0.25, 0.5, 0.25]]).apply(full)  # the parent's: the zone's top-left
        tap.feed(full, 1.0, 1.0)
        frame = await handoff.get()
        assert frame is not None and tap.size == (100, 200)
        # a zone over the whole picture at its own size: its masks go on its copy, never on the parent's picture
        whole = ZoneTap("all", Crop(0.0, 0.0, 1.0, 1.0), None, handoff, own)
        before = full.copy()
        whole.feed(full, 2.0, 2.0)
        assert (full == before).all()
        copied = await handoff.get()
        assert copied is not None and (copied.image[100:] == 0).all() and (copied.image[:100, 300:] == 120).all()
        return frame.image

    zone = asyncio.run(main())
    assert (zone[:50, :100] == 0).all() and (zone[50:] == 0).all()  # the parent's mask and the zone's own
    assert (zone[:50, 100:] == 120).all()
