"""Colour between a background and a frame: the chroma half of the light, and the switch to or from infrared.
Pure: (2, h, w) chroma planes (Cr, Cb) in, numbers out.

**The switch is a property of the whole picture.** Switching to infrared takes the colour out of every part of
the frame at once (the ISP outputs one grey plane); switching back brings a tint back everywhere (grass, brick,
asphalt under daylight, even a concrete yard's warm cast). An object brings colour into part of the frame, or
hides part of it. So the rule decides by spatial spread over a 4x4 grid of regions, never by the share of
colourful pixels (a red car over 25% of a grey yard has a lot of colourful pixels, in at most 9 regions):

A region is *tinted* when most of its pixels are at least TINT from grey.

- *colour left*: the background was tinted in at least SPREAD of all regions, and in at least SPREAD of those the
  frame is no longer tinted or most of the colourful pixels lost half their colour or more;
- *colour came back*: the background was tinted in at most 1 - SPREAD of the regions and the frame is tinted in
  at least SPREAD of them.

So a colourful car arriving in, or leaving, a grey yard (tinted in the regions it covers, at most 9 of 16) is
never a switch, nor a grey van hiding the one colourful corner of a scene.

``tests/test_colour.py`` holds the cases: the switch both ways in colourful and in grey scenes, a saturated object
over 25% of a grey frame, a grey van hiding the one colourful corner of a scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from livewatch.memory.cells import grid, median

COLOURFUL = 8.0  # |Cr - 128| + |Cb - 128| of a colourful pixel
TINT = 3.0  # ... of a tinted one (a scene under daylight, a grey yard's colour cast)
MONO_TINT = 1.0  # 90% of a monochrome picture's pixels are within this of grey (an infrared picture is exactly grey)
SPREAD = 0.75  # share of the regions a switch must reach
REGIONS = 4  # the grid is REGIONS x REGIONS


@dataclass(frozen=True)
class ChromaFit:
    """dst - 128 ~ G(x, y) * (src - 128) + offset, G = g0 + gx * x + gy * y (a light field scales colour as it
    scales luma)."""

    gain: np.ndarray  # (g0, gx, gy)
    upper: float  # 75th percentile of the per-pixel gains
    offset: np.ndarray  # (2,) white balance
    sigma: float  # robust scale of |residual| summed over both channels

    def field(self, h: int, w: int) -> np.ndarray:
        gx, gy = grid(h, w)
        return self.gain[0] + self.gain[1] * gx + self.gain[2] * gy


def _samples(planes: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """(2, n) chroma minus grey of every fourth row and column, ``sel`` of them."""
    return planes[:, 1::4, 1::4].reshape(2, -1)[:, sel] - np.float32(128.0)


def fit_chroma(src: np.ndarray, dst: np.ndarray, trusted: np.ndarray) -> ChromaFit:
    """The chroma half of the light between two frames, for (2, h, w) planes (Cr, Cb), on ``trusted`` pixels of
    every fourth row and column.

    The gain toward grey is measured on the background's colourful pixels (|Cr - 128| + |Cb - 128| > 8) as the
    projection of each pixel's new chroma on its old one; a plane over the frame is fitted to those gains (one
    robust pass). Without enough colourful pixels the gain stays 1 and only the white balance is fitted."""
    h, w = src.shape[1:]
    gx, gy = grid(h, w)
    sel = trusted[1::4, 1::4].reshape(-1)
    s, d = _samples(src, sel), _samples(dst, sel)
    plane = np.array([1.0, 0.0, 0.0], np.float32)
    if s.shape[1] < 20:
        return ChromaFit(plane, 1.0, np.zeros(2, np.float32), 1.0)
    colourful = np.abs(s).sum(axis=0) > COLOURFUL
    upper = 1.0
    if int(colourful.sum()) >= max(20, s.shape[1] // 20):
        sc, dc = s[:, colourful], d[:, colourful]
        g = (sc * dc).sum(axis=0) / (sc * sc).sum(axis=0)
        px = np.broadcast_to(gx, (h, w))[1::4, 1::4].reshape(-1)[sel][colourful]
        py = np.broadcast_to(gy, (h, w))[1::4, 1::4].reshape(-1)[sel][colourful]
        k50, k75 = len(g) // 2, (3 * len(g)) // 4
        part = np.partition(g, (k50, k75))
        upper = float(part[k75])
        design = np.stack([np.ones_like(px), px, py], axis=1)
        keep = np.abs(g - float(part[k50])) < max(3.0 * 1.4826 * median(np.abs(g - float(part[k50]))), 0.1)
        if int(keep.sum()) >= 10:
            a = design[keep]
            plane = np.linalg.solve(a.T @ a + np.diag([0.0, 1e-3, 1e-3]).astype(np.float32) * len(a),
                                    a.T @ g[keep]).astype(np.float32)
        plane[0] = min(max(float(plane[0]), 0.0), 4.0)
        field = ChromaFit(plane, upper, np.zeros(2, np.float32), 0.0).field(h, w)[1::4, 1::4].reshape(-1)[sel]
        r = d - field[None, :] * s
    else:
        r = d - s
    offset = np.array([median(r[0]), median(r[1])], np.float32)
    sigma = max(1.4826 * median(np.abs(r - offset[:, None]).sum(axis=0)), 0.5)
    return ChromaFit(plane, upper, offset, sigma)


def _regions(h: int, w: int, sel: np.ndarray) -> np.ndarray:
    """The region index (0 .. REGIONS**2 - 1) of each sample of ``_samples``."""
    rows = (np.arange(1, h, 4) * REGIONS // h)[:, None]
    cols = (np.arange(1, w, 4) * REGIONS // w)[None, :]
    return (rows * REGIONS + cols).reshape(-1)[sel]


def _monochrome(tint: np.ndarray) -> bool:
    k = (9 * len(tint)) // 10
    return float(np.partition(tint, k)[k]) <= MONO_TINT


def colour_switch(src: np.ndarray, dst: np.ndarray, trusted: np.ndarray,
                  luma_changed: Callable[[], np.ndarray], faded: bool = True) -> str:
    """"colour_left" | "colour_back" | "" between a background's and a frame's (2, h, w) chroma planes, on
    ``trusted`` pixels; ``luma_changed()`` marks the pixels whose luma changed beyond the light (called only
    when needed); ``faded`` false:
    the chroma fit saw the colourful pixels keep their colour (``ChromaFit.upper`` >= 0.5), so a picture that
    is not monochrome cannot have lost it (see the module's rule)."""
    h, w = src.shape[1:]
    sel = trusted[1::4, 1::4].reshape(-1)
    if int(sel.sum()) < 20 * REGIONS * REGIONS:
        return ""
    s, d = _samples(src, sel), _samples(dst, sel)
    s_tint, d_tint = np.abs(s).sum(axis=0), np.abs(d).sum(axis=0)
    src_mono, dst_mono = _monochrome(s_tint), _monochrome(d_tint)
    if src_mono == dst_mono and not faded:  # the common case: nothing to judge
        return ""
    moved = luma_changed()[1::4, 1::4].reshape(-1)[sel].astype(bool)
    region = _regions(h, w, sel)
    n = REGIONS * REGIONS
    per_region = np.maximum(np.bincount(region, minlength=n), 1)
    src_tinted = np.bincount(region, weights=s_tint >= TINT, minlength=n) >= 0.5 * per_region
    dst_tinted = np.bincount(region, weights=d_tint >= TINT, minlength=n) >= 0.5 * per_region

    def in_place(pixels: np.ndarray) -> bool:
        """The colour changed where the scene did not: most of those pixels kept their luma (an object that
        brings or takes colour changes its luma as well)."""
        return int(pixels.sum()) >= 20 and float(moved[pixels].mean()) < 0.5

    if src_mono and not dst_mono:
        gained = (d_tint >= TINT) & (s_tint < TINT)
        spread = int(np.ceil(SPREAD * n)) if int(src_tinted.sum()) else 0
        return "colour_back" if in_place(gained) and int(dst_tinted.sum()) >= max(spread, 4) else ""
    if dst_mono and not src_mono:
        return "colour_left" if in_place((s_tint >= TINT) & (d_tint < TINT)) else ""
    if int(src_tinted.sum()) < int(np.ceil(SPREAD * n)):
        return ""
    # a picture that keeps a trace of colour (some cameras' infrared mode): most of the colour faded everywhere
    colourful = s_tint > COLOURFUL
    g = (s * d).sum(axis=0) / np.maximum((s * s).sum(axis=0), 1e-6)
    had = np.bincount(region, weights=colourful, minlength=n)
    lost_n = np.bincount(region, weights=colourful & (g < 0.5), minlength=n)
    lost = src_tinted & (~dst_tinted | ((had >= 3) & (lost_n > 0.5 * had)))
    if int(lost.sum()) < SPREAD * int(src_tinted.sum()):
        return ""
    return "colour_left" if in_place(colourful & (g < 0.5)) else ""
