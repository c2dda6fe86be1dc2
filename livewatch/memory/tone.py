"""The global light between two luma planes: a quadratic tone curve times a gain that varies smoothly across the
frame (``change.py``, item 2, says where it sits in the detector). Pure: planes in, coefficients out."""

from __future__ import annotations

import functools

import numpy as np

from livewatch.memory.cells import grid, median


def fit_tone(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """The light between two luma planes: dst ~ c0 + c1*u + c2*u^2 + (c3*x + c4*y + c5*x^2 + c6*y^2)*s, with
    s = src/255, u = s - 0.5 and x, y the pixel's position in -1..1: a quadratic tone curve (exposure, gain,
    gamma-like contrast) and a gain that varies smoothly across the frame (sun and shade sweeping, vignetting, a
    flood light from one side, and the way back from it). Fitted robustly on every fourth row and column (a
    median start, then three least-squares passes without the pixels beyond 3 robust sigmas); returns the
    coefficients and the robust scale (1.4826 MAD) of the inliers' residuals. Clipped pixels (< 5 or > 250) do
    not vote."""
    px, py = _positions(*src.shape)
    x = src[1::4, 1::4].reshape(-1)
    y = dst[1::4, 1::4].reshape(-1)
    ok = (x > 5) & (x < 250) & (y > 5) & (y < 250)
    if int(ok.sum()) >= 50:
        x, y, px, py = x[ok], y[ok], px[ok], py[ok]
    # start from "no change but an offset", so that an object does not pull the first least-squares pass
    d = y - x
    shift = median(d)
    res = np.abs(d - shift)
    sigma = max(1.4826 * median(res), 0.5)
    keep = res < max(3.0 * sigma, 3.0)
    design = np.empty((len(x), 7), np.float32)
    s = x * np.float32(1 / 255.0)
    design[:, 0] = 1.0
    u = np.subtract(s, np.float32(0.5), out=design[:, 1])
    np.multiply(u, u, out=design[:, 2])
    np.multiply(px, s, out=design[:, 3])
    np.multiply(py, s, out=design[:, 4])
    np.multiply(px, design[:, 3], out=design[:, 5])
    np.multiply(py, design[:, 4], out=design[:, 6])
    coef = np.array([127.5 + shift, 255.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    for _ in range(3):
        n = int(keep.sum())
        if n < 20:
            break
        a = design[keep]
        coef = np.linalg.solve(a.T @ a + _RIDGE * n, a.T @ y[keep]).astype(np.float32)
        res = np.abs(y - design @ coef)
        sigma = max(1.4826 * median(res[keep]), 0.5)
        keep = res < max(3.0 * sigma, 3.0)
    return coef, sigma


# a narrow range of grey or of positions says little about curvature or slopes: keep them near zero then
_RIDGE = np.diag(np.array([1e-6, 1e-6, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3], np.float32))


@functools.lru_cache(maxsize=8)
def _positions(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The x and y positions (-1..1) of the samples ``fit_tone`` takes: every fourth row and column."""
    gx, gy = grid(h, w)
    return (np.ascontiguousarray(np.broadcast_to(gx, (h, w))[1::4, 1::4]).reshape(-1),
            np.ascontiguousarray(np.broadcast_to(gy, (h, w))[1::4, 1::4]).reshape(-1))


def apply_tone(coef: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``fit_tone``'s model applied to a whole (h, w) luma plane, clipped to 0..255."""
    gx, gy = grid(*values.shape)
    s = values * np.float32(1 / 255.0)
    u = s - np.float32(0.5)
    out = coef[0] + u * (coef[1] + coef[2] * u) + s * ((coef[3] + coef[5] * gx) * gx + (coef[4] + coef[6] * gy) * gy)
    return np.clip(out, 0.0, 255.0, out=out)
