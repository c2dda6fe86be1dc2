"""M-RoPE position ids with absolute time, built by our code (never by transformers' get_rope_index).

Semantics are the model's training ones (transformers 4.57 get_rope_index): text tokens take consecutive
positions on all three rows; a video placed after text starting at position ``st`` gives the token of temporal
grid ``g``, merged row ``r`` and merged column ``c`` the positions (st + t_g, st + r, st + c); text after the
video starts at the maximum position so far + 1. Where the model's processor derives t_g from a uniform frame
rate (g * second_per_grid * tokens_per_second), livewatch uses each pair's real timestamp:
t_g = round((t_pair - t_oldest) * tokens_per_second), with any gap between consecutive pairs longer than
``max_gap_s`` shortened to ``max_gap_s``, so a star pair from minutes ago and a window pair from seconds ago keep
their true distance without duplicated frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def temporal_positions(times: Sequence[float], tokens_per_second: float, max_gap_s: float) -> list[int]:
    """Temporal offsets of pairs at wall-clock ``times`` (ascending), relative to the oldest."""
    if not times:
        return []
    offsets = [0.0]
    for prev, cur in zip(times, times[1:]):
        gap = cur - prev
        if gap < 0:
            raise ValueError(f"pair times must be ascending; got {prev} then {cur}")
        offsets.append(offsets[-1] + min(gap, max_gap_s))
    return [int(round(off * tokens_per_second)) for off in offsets]


def text_positions(start: int, length: int) -> np.ndarray:
    """(3, length) positions of text tokens starting at ``start``."""
    row = np.arange(start, start + length, dtype=np.int64)
    return np.broadcast_to(row, (3, length)).copy()


def pair_positions(video_start: int, t_pos: int, grid_h: int, grid_w: int) -> np.ndarray:
    """(3, grid_h * grid_w) positions of one pair's tokens (merged grid) in a video that starts at ``video_start``."""
    hh, ww = np.meshgrid(np.arange(grid_h, dtype=np.int64), np.arange(grid_w, dtype=np.int64), indexing="ij")
    t = np.full(grid_h * grid_w, t_pos, dtype=np.int64)
    return np.stack([t, hh.reshape(-1), ww.reshape(-1)]) + video_start
