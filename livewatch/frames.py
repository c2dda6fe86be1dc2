"""Frames and frame pairs: the values that flow from capture through memory to the engine.

The unit of memory is a frame pair, because Qwen2.5-VL merges two consecutive frames into one temporal grid
(temporal_patch_size = 2). A lone frame is paired with itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @classmethod
    def single(cls, frame: Frame, importance: float = 0.0) -> FramePair:
        return cls(id=frame.seq, first=frame, second=frame, importance=importance)

    @property
    def time(self) -> float:
        """Wall-clock time of the pair: its first frame's, the start of the grid as in the model's training."""
        return self.first.wall_time

    @property
    def end_time(self) -> float:
        return self.second.wall_time
