"""Frame pairs to vision-tower input, with the per-frame pixel cap applied by our own code.

The resize follows qwen-vl-utils' smart_resize (each side a multiple of patch*merge = 28, the area scaled into
[min_pixels, max_pixels]), whatever the installed transformers does by default. The patch layout is the one of
transformers' Qwen2VL video processor: rows ordered (t, block row, block col, 2x2 within block), each row
channel x temporal x patch x patch values, normalised with the processor's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from qwen_vl_utils import smart_resize

from livewatch.frames import FramePair, resize


@dataclass(frozen=True)
class VisionSpec:
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def target_size(height: int, width: int, spec: VisionSpec) -> tuple[int, int]:
    """Resized (height, width) of a frame under the pixel cap."""
    return smart_resize(height, width, factor=spec.factor, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)


def tokens_per_pair(height: int, width: int, spec: VisionSpec) -> int:
    h, w = target_size(height, width, spec)
    return (h // spec.factor) * (w // spec.factor)


def patchify(frames: np.ndarray, spec: VisionSpec) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(T, H, W, 3) uint8 frames, already resized, T a multiple of temporal_patch_size -> (rows, grid_thw)."""
    t, h, w, c = frames.shape
    tp, p, m = spec.temporal_patch_size, spec.patch_size, spec.merge_size
    if t % tp or h % spec.factor or w % spec.factor:
        raise ValueError(f"frames of shape {frames.shape} do not tile into {tp}x{spec.factor}x{spec.factor} patches")
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32)
    std = torch.tensor(spec.std, dtype=torch.float32)
    x = ((x - mean) / std).permute(0, 3, 1, 2)  # T, C, H, W
    gt, gh, gw = t // tp, h // p, w // p
    x = x.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    rows = x.reshape(gt * gh * gw, c * tp * p * p)
    return rows, (gt, gh, gw)


def pair_input(pair: FramePair, spec: VisionSpec) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Vision-tower rows and grid (1, gh, gw) of one pair; both frames take the first frame's resized size."""
    size = target_size(*pair.first.size, spec)
    stacked = np.stack([resize(pair.first.image, size), resize(pair.second.image, size)])
    return patchify(stacked, spec)
