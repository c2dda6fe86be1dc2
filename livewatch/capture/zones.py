"""Zones: a camera of its own cut from a parent camera's frames (``[cameras.NAME] source = "PARENT"`` with
``crop = [x, y, w, h]`` relative to the parent's picture).

The parent's reader decodes once. When it has zones, each sampled frame is converted at the parent's full
resolution, the parent's privacy masks are painted on it, and each zone's ``ZoneTap`` cuts its rectangle from that
full-resolution picture, paints the zone's own masks (relative to the zone), scales it to the model's pixel cap
for the crop's size and hands it to the zone's own memory and context. So a zone of a 4K camera is seen at up to
the cap's detail, not at the detail its corner has in the parent's capped picture, and a zone inherits its
parent's masks. Pure but for the hand-off: crops in, frames out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from livewatch.capture.handoff import LatestHandoff
from livewatch.capture.masks import NO_MASKS, Masks
from livewatch.errors import ZoneError
from livewatch.frames import Frame, resize


@dataclass(frozen=True)
class Crop:
    """A rectangle relative to the parent's picture: left, top, width, height in 0..1."""

    x: float
    y: float
    w: float
    h: float

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) pixel bounds in a picture of that size, at least 2x2 pixels."""
        left, top = int(round(self.x * width)), int(round(self.y * height))
        right = max(min(int(round((self.x + self.w) * width)), width), min(left + 2, width))
        bottom = max(min(int(round((self.y + self.h) * height)), height), min(top + 2, height))
        return top, bottom, left, right

    def to_json(self) -> list[float]:
        return [self.x, self.y, self.w, self.h]


def parse_crop(value: Any) -> Crop:
    """[x, y, w, h] relative to the parent; ZoneError says what is wrong."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ZoneError("crop must be [x, y, w, h], relative to the parent's picture (0..1)")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise ZoneError("crop must hold four numbers")
    x, y, w, h = (float(v) for v in value)
    if not (0 <= x < 1 and 0 <= y < 1 and 0.01 <= w <= 1 and 0.01 <= h <= 1 and x + w <= 1.0001 and y + h <= 1.0001):
        raise ZoneError("crop [x, y, w, h] must lie within the picture: x, y from 0, w, h at least 0.01, "
                        "x + w and y + h at most 1")
    return Crop(x, y, min(w, 1.0 - x), min(h, 1.0 - y))


@dataclass
class ZoneTap:
    """What the parent's reader feeds one zone: its crop, its pixel cap, its masks and its hand-off."""

    name: str
    crop: Crop
    frame_size: Callable[[int, int], tuple[int, int]] | None
    handoff: LatestHandoff[Frame]
    masks: Masks = NO_MASKS  # replaced whole (set_masks), read once a frame
    seq: int = 0
    sampled: int = 0
    size: tuple[int, int] | None = None  # the last frame's (height, width)

    def feed(self, full: np.ndarray, wall: float, mono: float) -> None:
        """Cut this zone from a parent's full-resolution RGB frame (its masks painted) and hand it on."""
        top, bottom, left, right = self.crop.box(*full.shape[:2])
        part = full[top:bottom, left:right]
        h, w = part.shape[:2]
        th, tw = self.frame_size(h, w) if self.frame_size else (h, w)
        image = resize(part, (th, tw))
        if image is part:  # the crop at its own size is a view of the parent's picture: the zone's masks go on a copy
            image = part.copy()
        self.masks.apply(image)
        self.size = (th, tw)
        self.handoff.put(Frame(self.seq, wall, mono, image))
        self.seq += 1
        self.sampled += 1


