"""The cell grid of the analysis image and its small helpers, shared by the change detector, local light and the
importance model (no dependency on either)."""

from __future__ import annotations

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
