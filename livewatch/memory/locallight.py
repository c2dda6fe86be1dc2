"""Change that local light explains: a cloud's shadow or a headlight's pool (``change.py``, item 5, says where it
sits in the detector and what it measured). Pure: luma planes in, masks out."""

from __future__ import annotations

import cv2
import numpy as np

from livewatch.memory.cells import CELL, CLIP_LEVEL, KERNEL, cell_means, median

LIGHT_NCC = 0.8  # a cell whose texture correlates this well with the background's is lit, not covered
COVERED_NCC = 0.5  # a textured cell correlating less than this is covered by something else
WAY_MIN = 0.05  # |mean log gain| of a region's lit or flat cells below which it has no clear way (5% of light)
LIGHT_TEXTURE = 1.5  # grey levels of texture (std over a cell) a cell needs for its correlation to mean anything


_CELL_KERNEL = np.ones((CELL, CELL), np.uint8)
_NEAR_KERNEL = np.ones((5, 5), np.uint8)  # cells within 2 cells
_RAMP = np.arange(CELL, dtype=np.float32) - np.float32((CELL - 1) / 2)
_RAMP_NORM = float((_RAMP * _RAMP).sum()) / CELL  # mean over a cell of a ramp's square


def _upsampled(cells: np.ndarray, h: int, w: int) -> np.ndarray:
    """Each cell's value over its CELL x CELL pixels."""
    return cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST)


def _ramps(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) position within each cell, rows and columns, centred: the plane a cell's light slope follows."""
    return (np.broadcast_to(np.tile(_RAMP, h // CELL)[:, None], (h, w)),
            np.broadcast_to(np.tile(_RAMP, w // CELL)[None, :], (h, w)))


def _cell_moments(f: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per cell of two (h, w) planes: their means, the energies of their texture without its plane (a light's
    slope across a cell: a headlight's pool falls off by tens of grey levels over a few cells, is not texture) and
    the two textures' covariance. From cell means of products (one area resize of a stacked image) instead of
    per-cell arrays: the plane is the least-squares fit on the two ramps, orthogonal to each other and to a
    constant over a cell, so removing it takes its projection's energy off."""
    h, w = f.shape
    fm, bm = cell_means(f), cell_means(b)
    df, db = f - _upsampled(fm, h, w), b - _upsampled(bm, h, w)
    ry, rx = _ramps(h, w)
    m = cell_means(np.stack([df * df, db * db, df * db, df * ry, df * rx, db * ry, db * rx], axis=-1))
    s = np.float32(1.0 / _RAMP_NORM)  # mean(d * ramp) / mean(ramp^2): the slope per pixel
    fy, fx, by, bx = m[..., 3] * s, m[..., 4] * s, m[..., 5] * s, m[..., 6] * s
    r = np.float32(_RAMP_NORM)
    f_energy = np.maximum(m[..., 0] - (fy * fy + fx * fx) * r, 0.0)
    b_energy = np.maximum(m[..., 1] - (by * by + bx * bx) * r, 0.0)
    cov = m[..., 2] - (fy * by + fx * bx) * r
    return fm, bm, f_energy, b_energy, cov


def light_cells(frame_y: np.ndarray, bg_y: np.ndarray, clip: np.ndarray,
                changed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per CELL x CELL cell: (lit, covered, flat, edged, gain), ``gain`` the ratio of the cell's mean to the
    background's. ``lit``: a changed cell (``changed``: its fraction of changed pixels
    >= 0.3) where the background's texture is still there at its place, scaled with the light (correlation >=
    LIGHT_NCC, gain 0.2..5, texture within a factor 2.5 of the gain's: the background is an average of slightly
    shaken frames, softer than any one). ``covered``: textured, the background's texture under this light would
    stand twice over the noise, and the correlation is under COVERED_NCC: what the background showed there is
    hidden. Faint background texture (half the floor or more) that the frame shows over the floor, correlated
    and scaled as lit texture is, is lit too: a dark background holds the ground's grain under one frame's noise
    (it averages many frames) and a headlight's pool brings it out; that is not an object's new edge. Of the changed cells where the background is flat (no texture over the noise): ``flat`` if the
    frame is flat there too (a shadow's soft edge is a slope, which is not texture) or the cell clipped brighter (a
    pool's centre), ``edged`` if the frame has
    clear texture there (an object's outline over smooth ground). Clipped, noise-bound and in-between cells are
    none of these: they say nothing. The noise is this
    frame's own: the median over cells of what is left of the frame's texture after the background's, scaled
    by the cell's gain (a shadow's misfit of the global light model does not count as noise)."""
    h, w = frame_y.shape
    ch, cw = h // CELL, w // CELL
    f, b = frame_y[: ch * CELL, : cw * CELL], bg_y[: ch * CELL, : cw * CELL]
    fm, bm, f_energy, b_energy, cov = _cell_moments(f, b)
    fs, bs = np.sqrt(f_energy), np.sqrt(b_energy)
    ncc = cov / np.maximum(fs * bs, 1e-3)
    texture_gain = cov / np.maximum(b_energy, 1e-3)
    left = np.maximum(f_energy - 2.0 * texture_gain * cov + texture_gain * texture_gain * b_energy, 0.0)
    noise = max(median(np.sqrt(left).reshape(-1)), 0.3)
    gain = fm / np.maximum(bm, 1.0)
    ratio = fs / np.maximum(bs, 1e-3) / np.maximum(gain, 1e-3)
    bright = np.stack([clip[: ch * CELL, : cw * CELL], (b >= CLIP_LEVEL).astype(np.float32)], axis=-1)
    clipped = cell_means(bright).max(axis=-1) > 0
    floor = max(LIGHT_TEXTURE, 1.5 * noise)
    textured = (bs >= floor) & ~clipped
    # faint texture that light brings out: a dark background holds the ground's grain under the frame's noise
    # (it averages many frames), and a headlight's pool shows it; the frame's texture is then the background's,
    # scaled, so it correlates with it as lit texture does
    revealed = (bs >= 0.5 * floor) & (fs >= 0.5 * floor) & ~clipped
    same = (ncc >= LIGHT_NCC) & (gain >= 0.2) & (gain <= 5.0) & (ratio >= 0.4) & (ratio <= 2.5)
    lit = (changed >= 0.3) & (textured | revealed) & same
    covered = textured & (ncc < COVERED_NCC) & (gain * bs >= 2.0 * noise)
    smooth = (changed >= 0.3) & (bs < floor) & ~clipped
    # a cell clipped by added light (the centre of a headlight's pool) is as consistent with light as a flat one
    flat = (smooth & (fs < floor) & (gain >= 0.2) & (gain <= 5.0)) | ((changed >= 0.3) & clipped & (gain > 1.1))
    edged = smooth & (fs >= 2.0 * floor) & ~lit
    return lit, covered, flat, edged, gain


def without_light(raw: np.ndarray, frame_y: np.ndarray, bg_y: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """``raw`` without what local light explains (a cloud's shadow, a headlight's pool). A connected region of
    changed pixels is light when its cells that say something (lit, flat, covered, edged: ``light_cells``) are
    at least 30% of the cells it changed (a cell its edge only grazes, under 30% changed, counts for neither),
    at least half of them lit or flat, at least 2 lit (texture vouches for the light), no more covered or
    edged than lit, and its flat cells did not go the other way from its lit ones (a quarter of them brighter by
    WAY_MIN where the lit cells are darker, or the reverse):
    light falling differently on the same scene, but for its covered or edged cells in groups of 2 or more and
    a cell around them (an object in the shadow or the pool stays change). A region of flat cells alone, with
    nothing covered or edged, is light only within 2 cells of such a region and changed the same way (the
    light beyond where texture shows it); elsewhere a region that says little, or only flat (a uniform car on a
    smooth road), stays change."""
    changed = cell_means(raw.astype(np.float32))
    lit, covered, flat, edged, gain = light_cells(frame_y, bg_y, clip, changed)
    n, labels = cv2.connectedComponents(raw, connectivity=8)
    if n <= 1:
        return raw
    ch, cw = lit.shape
    # a cell's label: the highest among its pixels (a 5x5 dilation read at each cell's centre)
    cell_labels = cv2.dilate(labels.astype(np.float32), _CELL_KERNEL)[CELL // 2: ch * CELL: CELL,
                                                                     CELL // 2: cw * CELL: CELL].astype(np.int64)
    lit_n = np.bincount(cell_labels[lit], minlength=n)
    covered_n = np.bincount(cell_labels[covered], minlength=n)
    flat_n = np.bincount(cell_labels[flat], minlength=n)
    edged_n = np.bincount(cell_labels[edged], minlength=n)
    cells_n = np.bincount(cell_labels[changed >= 0.3], minlength=n)
    says = lit_n + flat_n + covered_n + edged_n  # the cells that say something (not noise-bound, not in-between)
    # brighter or darker: the mean log gain of a region's lit cells (its way, when WAY_MIN or more: within it the
    # region is about as bright as the background). Light takes the flat cells its way too: a quarter of them going
    # clearly the other way (the dark bars of light through blinds) is not light; without a way of the lit cells,
    # the flat ones must not have one either
    log_gain = np.log(np.maximum(gain, 1e-3))
    lit_way = np.bincount(cell_labels[lit], weights=log_gain[lit], minlength=n) / np.maximum(lit_n, 1)
    flat_way = np.bincount(cell_labels[flat], weights=log_gain[flat], minlength=n) / np.maximum(flat_n, 1)
    clear = np.abs(lit_way) >= WAY_MIN
    against = flat & clear[cell_labels] & (log_gain * np.sign(lit_way)[cell_labels] <= -WAY_MIN)
    opposed = np.where(clear, np.bincount(cell_labels[against], minlength=n) >= 0.25 * flat_n,
                       np.abs(flat_way) >= WAY_MIN)
    said = (says >= 0.3 * cells_n) & (lit_n + flat_n >= 0.5 * says)
    light = said & (lit_n >= 2) & (covered_n + edged_n <= lit_n) & ((flat_n == 0) | ~opposed)
    light[0] = False
    if not light.any():
        return raw
    # a region of flat cells alone (nothing covered, no new edge) within 2 cells of a lit region that changed the
    # same way is that light beyond where texture shows it: a pool spilling onto smooth plaster, its clipped
    # centre, or a piece of it cut off where the background learned the sweeps' motion (their path, repeated,
    # raises the thresholds there and breaks the pool into pieces)
    near = cv2.dilate(light[cell_labels].astype(np.uint8), _NEAR_KERNEL).astype(bool)
    touching = np.bincount(cell_labels[near], minlength=n) > 0
    way = float((lit_way * lit_n)[light].sum())
    light |= said & (lit_n == 0) & (flat_n >= 2) & (covered_n + edged_n == 0) & touching & (flat_way * way > 0)
    light[0] = False
    # in a lit region only what covers the background or brings new edges stays change (an object in a shadow,
    # or at its edge), with a cell around it for its outline; the rest is the light. A lone such cell (no
    # neighbour of its kind) is the noise of a dark frame, not an object of 2% of the view (11 cells)
    hidden = (covered | edged).astype(np.uint8)
    hidden &= (cv2.filter2D(hidden, -1, KERNEL, borderType=cv2.BORDER_CONSTANT) >= 2).astype(np.uint8)
    keep = cv2.dilate(hidden, KERNEL)
    keep_px = _upsampled(keep, ch * CELL, cw * CELL)
    out = raw.copy()
    region = light[labels[: ch * CELL, : cw * CELL]]
    out[: ch * CELL, : cw * CELL][region & (keep_px == 0)] = 0
    return out
