"""The colour rule: the switch to or from infrared is the whole picture's colour going or coming, decided by
spatial spread; an object bringing colour into part of a frame, or hiding the colourful part of it, is an
object."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import heldout_suite as hs
from livewatch.memory.change import analysis_image
from livewatch.memory.colour import colour_switch
from livewatch.memory.importance import ImportanceModel

H, W = 224, 420


def textured(seed: int, tint: tuple[float, float, float]) -> np.ndarray:
    """A textured RGB scene whose colour is ``tint`` times a grey pattern."""
    rng = np.random.default_rng(seed)
    grey = cv2.resize(rng.random((14, 26)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    grey = 60.0 + 120.0 * np.clip(grey, 0, 1) + rng.normal(0, 2.0, (H, W)).astype(np.float32)
    return np.clip(grey[..., None] * np.asarray(tint, np.float32), 0, 255).astype(np.uint8)


def colourful(seed: int) -> np.ndarray:
    """A scene with colour everywhere: regions of green, brick and blue-grey."""
    img = textured(seed, (1.0, 1.0, 1.0)).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    hue = ((yy // 37 + xx // 53) % 3)[..., None]
    tints = np.array([[0.7, 1.1, 0.6], [1.25, 0.8, 0.6], [0.8, 0.9, 1.2]], np.float32)
    return np.clip(img * tints[hue[..., 0]], 0, 255).astype(np.uint8)


def infrared(img: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) * 0.8 + 20
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def rule(src: np.ndarray, dst: np.ndarray) -> str:
    a, b = analysis_image(src).planes, analysis_image(dst).planes
    return colour_switch(a[2:], b[2:], np.ones(a.shape[1:], bool), lambda: np.abs(a[0] - b[0]) > 12)


def square(img: np.ndarray, area: float, colour: tuple[int, int, int], cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    out = img.copy()
    side_y, side_x = int(H * area ** 0.5), int(W * area ** 0.5)
    y0, x0 = int(cy * H - side_y / 2), int(cx * W - side_x / 2)
    out[y0:y0 + side_y, x0:x0 + side_x] = colour
    return out


@pytest.mark.parametrize("scene", ["colourful", "grey"])
def test_the_switch_both_ways(scene: str) -> None:
    day = colourful(1) if scene == "colourful" else textured(1, (1.04, 1.0, 0.9))  # a grey yard's warm cast
    night = infrared(day)
    assert rule(day, night) == "colour_left"
    assert rule(night, day) == "colour_back"
    assert rule(day, day) == "" and rule(night, night) == ""


@pytest.mark.parametrize("where", [(0.5, 0.5), (0.37, 0.37), (0.25, 0.7)])
def test_a_saturated_object_over_a_quarter_of_a_grey_frame_is_not_a_switch(where: tuple[float, float]) -> None:
    grey = textured(2, (1.04, 1.0, 0.9))
    red = square(grey, 0.25, (200, 20, 20), *where)
    assert rule(grey, red) == "" and rule(red, grey) == ""
    night = infrared(textured(2, (1.0, 1.0, 1.0)))
    assert rule(night, square(night, 0.25, (200, 20, 20), *where)) == ""  # a red car lit in a monochrome scene


def test_a_grey_van_hiding_the_colourful_corner_is_not_a_switch() -> None:
    grey = textured(3, (1.0, 1.0, 1.0))
    scene = square(grey, 0.12, (40, 150, 40), 0.2, 0.25)  # a lawn in one corner, the rest concrete
    van = square(scene, 0.2, (150, 150, 150), 0.2, 0.25)
    assert rule(scene, van) == ""
    assert rule(colourful(3), square(colourful(3), 0.3, (128, 128, 128))) == ""  # a grey van over a third


def test_a_red_car_stopping_in_a_grey_yard_is_an_event() -> None:
    """The review's case, through the whole scorer: a saturated red car over 25% of a grey courtyard, appearing
    at once and standing 4 s, is change (not a colour switch), and leaves no ghost (the background never learned
    it)."""
    car = hs.Actor("car", (0.6, 0.03, 0.03), 0.25, 0.5, 0.5, 0.62, 20.0, 4.0)
    court = hs.Courtyard(hs.Scene("g", "grey-colour", 30, 5, events=(car,), grey=True))
    model = ImportanceModel()
    scores = []
    for t in range(0, 30, 2):
        a = cv2.resize(court.frame(float(t)), (W, H), interpolation=cv2.INTER_AREA)
        b = cv2.resize(court.frame(float(t + 1)), (W, H), interpolation=cv2.INTER_AREA)
        scores.append(model.score_pair(a, float(t), b, float(t + 1), []))
    assert all(s.global_change == "" for s in scores)
    assert scores[10].score > 0.9 and scores[10].change_area > 0.2  # 20-21 s: the car
    assert scores[12].change_area == 0.0  # 24-25 s: gone
