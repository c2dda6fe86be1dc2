"""Privacy masks: parsing and painting (pure), the protocol request, the config key, the saved overrides, and a
real daemon whose file camera shows a red car only inside a mask (no star; the stored frames and thumbnails are
black there), whose masks change over a real WebSocket (the next frames show the region) and stay changed across
a restart."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from livewatch.capture.masks import MAX_POLYGONS, NO_MASKS, Masks, parse_masks
from livewatch.config import load_settings
from livewatch.errors import ConfigError, MaskError, StorageError
from livewatch.registry import MaskOverrides
from livewatch.server import protocol as p
from test_daemon import make_daemon  # noqa: F401  (the fixture)

SQUARE = [0.0, 0.0, 0.5, 0.0, 0.5, 0.5, 0.0, 0.5]


def test_parse_masks_takes_flat_polygons_and_says_what_is_wrong() -> None:
    masks = parse_masks([SQUARE, [0.6, 0.6, 0.9, 0.6, 0.75, 0.9]])
    assert masks.polygons[1] == ((0.6, 0.6), (0.9, 0.6), (0.75, 0.9)) and masks.to_json()[0] == SQUARE
    assert parse_masks([]) == NO_MASKS and parse_masks(None) == NO_MASKS and not NO_MASKS
    bad = {
        "masks must be a list": "0,0,1,1",
        "masks\\[0\\] must be a list": [0.5],
        "masks\\[1\\] must hold 3 to": [SQUARE, [0.1, 0.1, 0.2, 0.2]],
        "masks\\[0\\] must hold 3 to": [[0.1, 0.1, 0.2, 0.2, 0.3]],
        "masks\\[0\\]: every coordinate": [[0.1, 0.1, 0.2, 0.2, 1.5, 0.3]],
    }
    for message, value in bad.items():
        with pytest.raises(MaskError, match=message):
            parse_masks(value)
    for value in (float("nan"), True, "0.5", -0.1):
        with pytest.raises(MaskError):
            parse_masks([[0.1, 0.1, 0.2, 0.2, value, 0.3]])
    with pytest.raises(MaskError, match=f"at most {MAX_POLYGONS}"):
        parse_masks([SQUARE] * (MAX_POLYGONS + 1))
    with pytest.raises(MaskError, match="3 to 64"):
        parse_masks([[0.5, 0.5] * 65])


def test_masks_paint_the_pixels_whose_centres_are_inside() -> None:
    masks = parse_masks([SQUARE])
    image = np.full((100, 200, 3), 200, np.uint8)
    assert masks.apply(image) is image
    assert (image[:50, :100] == 0).all() and (image[50:] == 200).all() and (image[:, 100:] == 200).all()
    grey = np.full((99, 201), 7, np.uint8)  # odd sizes: a pixel is masked when its centre is inside
    masks.apply(grey)
    assert (grey == 0).sum() == 49 * 100  # rows 0-48 (centre 48.5 < 49.5), columns 0-99 (99.5 < 100.5)
    triangle = parse_masks([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]]).raster(100, 100)
    assert abs(int(triangle.sum()) - 5000) <= 100 and triangle[0, 0] and not triangle[99, 99]
    before = np.full((10, 10, 3), 9, np.uint8)
    assert (NO_MASKS.apply(before) == 9).all()


def test_the_protocol_reads_and_replaces_masks() -> None:
    req = p.parse_request(json.dumps({"type": "camera.masks", "id": 1, "camera": "door"}))
    assert req == p.CameraMasks(id=1, camera="door", masks=None)
    req = p.parse_request(json.dumps({"type": "camera.masks", "id": 2, "camera": "door", "masks": [SQUARE]}))
    assert isinstance(req, p.CameraMasks) and req.masks == parse_masks([SQUARE])
    assert json.loads(p.encode_request(req))["masks"] == [SQUARE]
    cleared = p.parse_request(json.dumps({"type": "camera.masks", "id": 3, "camera": "door", "masks": []}))
    assert isinstance(cleared, p.CameraMasks) and cleared.masks == NO_MASKS
    with pytest.raises(p.ProtocolError, match="field 'masks': masks\\[0\\]: every coordinate") as err:
        p.parse_request(json.dumps({"type": "camera.masks", "id": 4, "camera": "door", "masks": [[0, 0, 2, 0, 0, 1]]}))
    assert err.value.request_id == 4
    reply = json.loads(p.camera_masks_message(5, "door", parse_masks([SQUARE])))
    assert reply == {"type": "camera.masks", "id": 5, "camera": "door", "masks": [SQUARE]}


def test_the_config_key_is_checked_and_resolved(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[cameras.door]\nurl = "rtsp://192.0.2.1/s"\nmasks = [{SQUARE}]\n')
    settings = load_settings(path, environ={"HOME": str(tmp_path)})
    assert settings.cameras[0].masks == parse_masks([SQUARE])
    path.write_text('[cameras.door]\nurl = "rtsp://192.0.2.1/s"\nmasks = [[0, 0, 1, 1]]\n')
    with pytest.raises(ConfigError, match="cameras.door.masks") as err:
        load_settings(path, environ={"HOME": str(tmp_path)})
    assert "3 to 64" in str(err.value)


def test_overrides_are_saved_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    saved = MaskOverrides(tmp_path)
    saved.set("door", parse_masks([SQUARE]))
    saved.set("yard", NO_MASKS)  # cleared over the API: the configured masks no longer apply either
    again = MaskOverrides(tmp_path)
    again.load()
    assert again.cameras == {"door": parse_masks([SQUARE]), "yard": NO_MASKS}
    assert (tmp_path / "masks.json").stat().st_mode & 0o777 == 0o600
    again.forget("door")
    third = MaskOverrides(tmp_path)
    third.load()
    assert set(third.cameras) == {"yard"}
    for text in ('{"cameras": {"../x": []}}', '{"cameras": {"door": [[0, 0, 9, 9, 1, 1]]}}', "[1", '{"cameras": 3}'):
        (tmp_path / "masks.json").write_text(text)
        with pytest.raises(StorageError):
            MaskOverrides(tmp_path).load()


# -- a real daemon ---------------------------------------------------------------------------------------------

MASK = [0.3, 0.4, 0.7, 0.4, 0.7, 0.85, 0.3, 0.85]  # around where the car stands


def _scene():
    import heldout_suite as hs

    car = hs.Actor("car", (0.6, 0.03, 0.03), 0.05, 0.5, 0.5, 0.62, 8.0, 5.0)  # red, 5% of the frame, at 8-13 s
    return hs, car, hs.Scene("yard", "grey-colour", 20.0, 21, events=(car,), grey=True)


def test_without_the_mask_the_same_clip_makes_a_star() -> None:
    """The control of the daemon test below: the scene's car is an event the star memory keeps."""
    hs, car, scene = _scene()
    result = hs.run(scene)
    assert any(car.start - 1.0 <= t < car.end for t, why in result.admissions if why != "reference"), result.admissions


@pytest.mark.slow
def test_a_masked_region_is_never_stored_scored_or_shown(make_daemon, tmp_path: Path) -> None:  # noqa: F811
    from websockets.sync.client import connect

    from media import wait_until
    from test_evidence_daemon import TOKEN, get

    hs, car, scene = _scene()
    clip = hs.write_scene(tmp_path / "yard.mp4", scene)
    cfg = ("[capture]\nfps = 2.0\n[memory]\nstar_frames = 10\nwindow_frames = 4\nwindow_slack_frames = 0\n"
           f'[cameras.yard]\nurl = "{clip}#loop=1"\nmasks = [{MASK}]\n')
    d = make_daemon(cfg, env={"LIVEWATCH_TOKEN": TOKEN}).start()

    def send(message: dict) -> dict:
        with connect(d.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            ws.send(json.dumps({"id": "r", **message}))
            return json.loads(ws.recv(timeout=60))

    def frames() -> list[dict]:
        reply = send({"type": "memory", "camera": "yard"})
        assert reply["type"] == "memory", reply
        return reply["frames"]

    def image(frame_id: int, size: str = "") -> np.ndarray:
        status, data = get(f"http://127.0.0.1:{d.port}/frames/yard/{frame_id}.jpg{size}")
        assert status == 200
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)

    def inside(img: np.ndarray) -> np.ndarray:  # the mask's inner part (JPEG blurs its edge by a few pixels)
        h, w = img.shape
        return img[int(0.44 * h):int(0.81 * h), int(0.33 * w):int(0.67 * w)]

    def stats() -> dict:
        out = d.cli("status", "--json", token=TOKEN)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])["memory"]["yard"]

    wait_until(lambda: stats()["total_frames_added"] >= 44, 120, interval=0.5)  # the 20 s clip played once and more
    assert stats()["stars_admitted"] == {"reference": 1}  # the car stood inside the mask: no star
    seen = frames()
    last = max(f["frame_id"] for f in seen)
    # every stored frame, in memory or in the history behind it (a pass of the clip, the car's seconds included)
    stored = [i for i in range(last + 1) if get(f"http://127.0.0.1:{d.port}/frames/yard/{i}.jpg")[0] == 200]
    assert len(stored) == last + 1 >= 20, str(stored)
    for i in stored:
        img = image(i)
        assert inside(img).max() <= 12, i
        assert img[: img.shape[0] // 4].mean() > 40  # the wall above it is there
    for f in seen:
        assert inside(image(f["frame_id"], "?size=64")).max() <= 16
    assert send({"type": "camera.masks", "camera": "yard"})["masks"] == [MASK]
    bad = send({"type": "camera.masks", "camera": "yard", "masks": [[0, 0, 1]]})
    assert bad["type"] == "error" and bad["code"] == "bad_request"
    assert send({"type": "camera.masks", "camera": "nope", "masks": []})["code"] == "unknown_camera"

    # cleared over the API: the next frames show the region (frames stored before keep their old content)
    assert send({"type": "camera.masks", "camera": "yard", "masks": []}) == {
        "type": "camera.masks", "id": "r", "camera": "yard", "masks": []}
    wait_until(lambda: max(f["frame_id"] for f in frames()) >= last + 4, 60, interval=0.5)
    newest = max(frames(), key=lambda f: f["frame_id"])
    assert inside(image(newest["frame_id"])).mean() > 40
    assert inside(image(stored[-1])).max() <= 12
    assert d.terminate() == 0

    again = make_daemon(cfg, env={"LIVEWATCH_TOKEN": TOKEN}, state=d.state).start()
    d = again
    assert send({"type": "camera.masks", "camera": "yard"})["masks"] == []  # the API's choice outlives the config
    out = again.cli("cameras", "masks", "yard", "--set", json.dumps([MASK]), token=TOKEN)
    assert out.returncode == 0 and json.loads(out.stdout) == [MASK], out.stderr
    out = again.cli("cameras", "masks", "yard", token=TOKEN)
    assert out.returncode == 0 and json.loads(out.stdout) == [MASK], out.stderr
    out = again.cli("cameras", "masks", "yard", "--set", "[[0, 0, 1]]", token=TOKEN)
    assert out.returncode == 2 and "3 to 64" in out.stderr
