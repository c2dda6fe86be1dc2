"""Frames and frame pairs: the values that flow from capture through memory to the engine.

The unit of memory is a frame pair, because Qwen2.5-VL merges two consecutive frames into one temporal grid
(temporal_patch_size = 2). A lone frame is paired with itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    """One sampled frame. ``image`` is RGB, uint8, shape (height, width, 3)."""

    seq: int  # per-camera sequence number, strictly increasing
    wall_time: float  # seconds since the epoch (RTCP or receive clock)
    mono_time: float  # time.monotonic() when the frame was sampled
    image: np.ndarray = field(repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(frozen=True)
class FramePair:
    """Two consecutive sampled frames, the unit the model encodes. ``id`` is unique per camera."""

    id: int
    first: Frame
    second: Frame
    importance: float = 0.0
    star: bool = False  # in the star memory (set by the memory when it publishes its context)
    why: str = ""  # a star's reason for being one (``StarMemory``'s decision)

    @property
    def time(self) -> float:
        """Wall-clock time of the pair: its first frame's, the start of the grid as in the model's training."""
        return self.first.wall_time

    @property
    def end_time(self) -> float:
        return self.second.wall_time

    @property
    def n_frames(self) -> int:
        """1 for a lone frame paired with itself (a stalled stream), else 2."""
        return 1 if self.first is self.second else 2


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB frame to (height, width): area averaging when shrinking, bicubic when growing."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
