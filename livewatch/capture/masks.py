"""Privacy masks: polygons of a camera's picture that nothing in livewatch may store, score or show.

A mask is a polygon in relative coordinates (x, y in 0..1 of the picture's width and height), written flat as in
the configuration, ``[x1, y1, x2, y2, x3, y3, ...]``. The reader paints every mask black on each sampled frame,
right after decoding and before the frame leaves the capture thread, so the importance model, the memory, the
frame store and its history, the model's input, thumbnails and evidence all see the masked picture only. A
change applies from the next sampled frame; frames stored before it keep their old content.

Pure: values in, ``Masks`` out; ``Masks.apply`` paints an image in place.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from livewatch.errors import MaskError

MAX_POLYGONS = 32
MAX_POINTS = 64

Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Masks:
    """A camera's privacy masks (none: an empty tuple)."""

    polygons: tuple[Polygon, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def to_json(self) -> list[list[float]]:
        """The flat form of the configuration and the protocol."""
        return [[v for point in polygon for v in point] for polygon in self.polygons]

    def raster(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool: the masked pixels of a picture of that size (a pixel whose centre is inside)."""
        return _raster(self.polygons, height, width)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Paint the masked pixels of an (h, w[, c]) uint8 image black, in place; returns it."""
        if self.polygons:
            image[self.raster(*image.shape[:2])] = 0
        return image


NO_MASKS = Masks()


def parse_masks(value: Any) -> Masks:
    """Masks from their flat form (a list of polygons, each a list of 3..MAX_POINTS x, y pairs in 0..1); raises
    MaskError (a ValueError) saying what is wrong, with the polygon's index."""
    if value is None:
        return NO_MASKS
    if not isinstance(value, (list, tuple)):
        raise MaskError("masks must be a list of polygons, each a list [x1, y1, x2, y2, ...] in 0..1")
    if len(value) > MAX_POLYGONS:
        raise MaskError(f"at most {MAX_POLYGONS} masks a camera")
    polygons = []
    for i, flat in enumerate(value):
        if not isinstance(flat, (list, tuple)):
            raise MaskError(f"masks[{i}] must be a list [x1, y1, x2, y2, ...]")
        if len(flat) % 2 or not 6 <= len(flat) <= 2 * MAX_POINTS:
            raise MaskError(f"masks[{i}] must hold 3 to {MAX_POINTS} x, y pairs (an even count of numbers)")
        values = []
        for v in flat:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                raise MaskError(f"masks[{i}]: every coordinate must be a number from 0 to 1 (relative)")
            values.append(float(v))
        polygons.append(tuple(zip(values[0::2], values[1::2])))
    return Masks(tuple(polygons))


@functools.lru_cache(maxsize=16)  # a camera's masks at its frame size; a change makes one more
def _raster(polygons: tuple[Polygon, ...], height: int, width: int) -> np.ndarray:
    """Scanline fill, even-odd, on pixel centres: a pixel is inside when its centre is (half-open at the right
    and bottom edges, so two masks that share an edge cover each pixel once and a mask over [0, 0.5] of a
    100-pixel side covers exactly 50)."""
    out = np.zeros((height, width), bool)
    yc = (np.arange(height, dtype=np.float64) + 0.5) / height  # row centres, relative
    for polygon in polygons:
        pts = np.asarray(polygon, np.float64)
        (x1, y1), (x2, y2) = pts.T, np.roll(pts, -1, axis=0).T
        crosses = ((y1[None, :] <= yc[:, None]) & (yc[:, None] < y2[None, :])) | \
            ((y2[None, :] <= yc[:, None]) & (yc[:, None] < y1[None, :]))
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x1 + (yc[:, None] - y1) * (x2 - x1) / (y2 - y1)
        xs = np.sort(np.where(crosses, xs, np.inf), axis=1)  # each row's crossings first, in order
        # the pixel columns whose centres lie in [a, b): from ceil(a * w - 0.5) to ceil(b * w - 0.5) - 1
        cols = np.clip(np.ceil(xs * width - 0.5), 0, width).astype(np.int64)
        counts = crosses.sum(axis=1)
        inside = np.zeros((height, width), bool)
        for row in np.flatnonzero(counts >= 2):
            c = cols[row, : counts[row] - counts[row] % 2]
            for a, b in zip(c[0::2], c[1::2]):
                inside[row, a:b] ^= True  # even-odd within a polygon
        out |= inside  # masks add up
    out.flags.writeable = False
    return out
