"""Change that local light explains: a cloud's shadow or a headlight's pool (``change.py``, item 5, says where it
sits in the detector and what it measured). Pure: luma planes in, masks out."""

from __future__ import annotations

import cv2
import numpy as np

from livewatch.memory.cells import CELL, CLIP_LEVEL, KERNEL, cell_means, median

LIGHT_NCC = 0.8  # a cell whose texture correlates this well with the background's is lit, not covered
COVERED_NCC = 0.5  # a textured cell correlating less than this is covered by something else
LIGHT_TEXTURE = 1.5  # grey levels of texture (std over a cell) a cell needs for its correlation to mean anything


_RAMP = (np.arange(CELL, dtype=np.float32) - (CELL - 1) / 2)


def _detrended(d: np.ndarray) -> np.ndarray:
    """(ch, CELL, cw, CELL) zero-mean cells without their plane: a light's slope across a cell (a headlight's pool
    falls off by tens of grey levels over a few cells) is not texture."""
    ramp = _RAMP
    norm = np.float32(CELL * float((ramp * ramp).sum()))
    sy = (d * ramp[None, :, None, None]).sum(axis=(1, 3)) / norm
    sx = (d * ramp[None, None, None, :]).sum(axis=(1, 3)) / norm
    return d - sy[:, None, :, None] * ramp[None, :, None, None] - sx[:, None, :, None] * ramp[None, None, None, :]


def light_cells(frame_y: np.ndarray, bg_y: np.ndarray, clip: np.ndarray,
                changed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per CELL x CELL cell: (lit, covered, flat, edged). ``lit``: a changed cell (``changed``: its fraction of changed pixels
    >= 0.3) where the background's texture is still there at its place, scaled with the light (correlation >=
    LIGHT_NCC, gain 0.2..5, texture within a factor 2.5 of the gain's: the background is an average of slightly
    shaken frames, softer than any one). ``covered``: textured, the background's texture under this light would
    stand twice over the noise, and the correlation is under COVERED_NCC: what the background showed there is
    hidden. Of the changed cells where the background is flat (no texture over the noise): ``flat`` if the
    frame is flat there too (a shadow's soft edge is a slope, which is not texture) or the cell clipped brighter (a
    pool's centre), ``edged`` if the frame has
    clear texture there (an object's outline over smooth ground). Clipped, noise-bound and in-between cells are
    none of these: they say nothing. The noise is this
    frame's own: the median over cells of what is left of the frame's texture after the background's, scaled
    by the cell's gain (a shadow's misfit of the global light model does not count as noise)."""
    h, w = frame_y.shape
    ch, cw = h // CELL, w // CELL
    f = frame_y[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL)
    b = bg_y[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL)
    fm, bm = f.mean(axis=(1, 3)), b.mean(axis=(1, 3))
    fd, bd = _detrended(f - fm[:, None, :, None]), _detrended(b - bm[:, None, :, None])
    fs, bs = np.sqrt((fd * fd).mean(axis=(1, 3))), np.sqrt((bd * bd).mean(axis=(1, 3)))
    cov = (fd * bd).mean(axis=(1, 3))
    ncc = cov / np.maximum(fs * bs, 1e-3)
    texture_gain = cov / np.maximum(bs * bs, 1e-3)
    left = fd - texture_gain[:, None, :, None] * bd
    noise = max(median(np.sqrt((left * left).mean(axis=(1, 3))).reshape(-1)), 0.3)
    gain = fm / np.maximum(bm, 1.0)
    ratio = fs / np.maximum(bs, 1e-3) / np.maximum(gain, 1e-3)
    clipped = (clip[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL).max(axis=(1, 3)) > 0) | \
        (b.max(axis=(1, 3)) >= CLIP_LEVEL)
    floor = max(LIGHT_TEXTURE, 1.5 * noise)
    textured = (bs >= floor) & ~clipped
    lit = (changed >= 0.3) & textured & (ncc >= LIGHT_NCC) & (gain >= 0.2) & (gain <= 5.0) & (ratio >= 0.4) & \
        (ratio <= 2.5)
    covered = textured & (ncc < COVERED_NCC) & (gain * bs >= 2.0 * noise)
    smooth = (changed >= 0.3) & (bs < floor) & ~clipped
    # a cell clipped by added light (the centre of a headlight's pool) is as consistent with light as a flat one
    flat = (smooth & (fs < floor) & (gain >= 0.2) & (gain <= 5.0)) | ((changed >= 0.3) & clipped & (gain > 1.1))
    edged = smooth & (fs >= 2.0 * floor)
    return lit, covered, flat, edged


def without_light(raw: np.ndarray, frame_y: np.ndarray, bg_y: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """``raw`` without what local light explains (a cloud's shadow, a headlight's pool). A connected region of
    changed pixels is light when its cells that say something (lit, flat, covered, edged: ``light_cells``) are
    at least 30% of it, at least half of them lit or flat, at least 2 and a quarter of the lit-or-flat ones lit
    (texture vouches for the light), and no more covered or edged than lit: light falling differently on the
    same scene, but for its covered or edged cells in groups of 2 or more and a cell around them (an object in
    the shadow or the pool stays change). A region that says little, or only flat (a uniform car on a smooth
    road), stays change."""
    lit, covered, flat, edged = light_cells(frame_y, bg_y, clip, cell_means(raw.astype(np.float32)))
    n, labels = cv2.connectedComponents(raw, connectivity=8)
    if n <= 1:
        return raw
    ch, cw = lit.shape
    cell_labels = labels[: ch * CELL, : cw * CELL].reshape(ch, CELL, cw, CELL).max(axis=(1, 3))
    lit_n = np.bincount(cell_labels[lit], minlength=n)
    covered_n = np.bincount(cell_labels[covered], minlength=n)
    flat_n = np.bincount(cell_labels[flat], minlength=n)
    edged_n = np.bincount(cell_labels[edged], minlength=n)
    cells_n = np.bincount(cell_labels.reshape(-1), minlength=n)
    says = lit_n + flat_n + covered_n + edged_n  # the cells that say something (not noise-bound, not in-between)
    light = (lit_n >= 2) & (says >= 0.3 * cells_n) & (lit_n + flat_n >= 0.5 * says) & \
        (covered_n + edged_n <= lit_n) & (lit_n >= 0.25 * (lit_n + flat_n))
    light[0] = False
    if not light.any():
        return raw
    # in a lit region only what covers the background or brings new edges stays change (an object in a shadow,
    # or at its edge), with a cell around it for its outline; the rest is the light. A lone such cell (no
    # neighbour of its kind) is the noise of a dark frame, not an object of 2% of the view (11 cells)
    hidden = (covered | edged).astype(np.uint8)
    hidden &= (cv2.filter2D(hidden, -1, KERNEL, borderType=cv2.BORDER_CONSTANT) >= 2).astype(np.uint8)
    keep = cv2.dilate(hidden, KERNEL)
    keep_px = np.repeat(np.repeat(keep, CELL, axis=0), CELL, axis=1)
    out = raw.copy()
    region = light[labels[: ch * CELL, : cw * CELL]]
    out[: ch * CELL, : cw * CELL][region & (keep_px == 0)] = 0
    return out
