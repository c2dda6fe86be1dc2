"""Synthetic scenes for memory tests: a few distinct scenes, noise, moving objects."""

from __future__ import annotations

import numpy as np

from livewatch.frames import Frame

SCENE_COLOURS = [(200, 40, 40), (40, 180, 60), (30, 60, 200), (220, 200, 40), (150, 60, 170), (40, 190, 190)]


def scene_image(scene: int, seq: int, size=(120, 200), noise: int = 6, moving: bool = False) -> np.ndarray:
    h, w = size
    rng = np.random.default_rng(seq * 7919 + scene)
    colour = np.array(SCENE_COLOURS[scene % len(SCENE_COLOURS)], dtype=np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), dtype=np.int16)
    img[:] = colour
    # a fixed per-scene pattern so scenes differ in structure as well as colour
    stripes = ((xx // (10 + 7 * scene)) + (yy // (12 + 5 * scene))) % 2
    img = img + (stripes[..., None] * 50 - 25)
    if moving:
        x0 = (seq * 15) % (w - 30)
        img[40:70, x0 : x0 + 30] = 255
    img = img + rng.integers(-noise, noise + 1, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def frame(seq: int, t: float, scene: int = 0, **kw) -> Frame:
    return Frame(seq=seq, wall_time=t, mono_time=t, image=scene_image(scene, seq, **kw))
