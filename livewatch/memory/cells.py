"""The cell grid of the analysis image and its small helpers, shared by the change detector, local light and the
importance model (no dependency on either)."""

from __future__ import annotations

import functools

import cv2
import numpy as np

CELL = 5  # analysis pixels per cell side: the grid that signatures keep (17x32 cells for 16:9)
KERNEL = np.ones((3, 3), np.uint8)
CLIP_LEVEL = 240  # a channel this bright in the analysis image may hide clipped source pixels


def cell_means(values: np.ndarray) -> np.ndarray:
    """Mean over CELL x CELL blocks of an (h, w) float32 array (h, w multiples of CELL)."""
    h, w = values.shape[:2]
    return cv2.resize(values, (w // CELL, h // CELL), interpolation=cv2.INTER_AREA)


def median(a: np.ndarray) -> float:
    """Median (the upper one for even sizes) of a non-empty 1-D array; np.median costs 8x more here."""
    k = len(a) // 2
    return float(np.partition(a, k)[k])


@functools.lru_cache(maxsize=8)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal (1, w) and vertical (h, 1) coordinates in -1..1."""
    return (np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :], np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None])
