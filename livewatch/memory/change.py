"""Local change in a camera's frames against a per-camera background model. Pure: frames in, numbers out.

What a camera sees change all day is mostly not an event: sensor noise, compression, auto-exposure steps, slow
light drift, swaying foliage, rain, a fan, the switch to infrared at dusk. The model below is Frigate's motion
detector and OpenCV's background subtractors cut down to what one sampled frame a second needs:

1. **A small analysis image.** Each frame (already at the model's cap, 224x420 for 16:9) is resized to 160
   pixels wide, converted to YCrCb and lightly blurred: averaging ~7 source pixels per analysis pixel takes
   sensor noise of sigma 1.2 grey levels down to ~0.3 and smooths H.264 block edges. A fourth plane marks where
   a colour channel is near clipping: there chroma is not the scene's and is not compared, and luma is only a
   bound (a clipped background may hide a brighter scene; a clipped frame a darker one).
2. **Global light is explained, not detected.** The background's luma is mapped onto the frame's by a robust
   model of the light: a quadratic tone curve (exposure, gain, contrast) times a gain that varies smoothly
   across the frame (sun and shade sweeping, vignetting, a flood light from one side), fitted by a median
   start and three least-squares passes that drop pixels beyond 3 robust sigmas; its chroma by a gain toward
   grey (also varying across the frame) and a white-balance offset. Exposure steps (x1.3, x0.77, +-15 and +-30
   grey levels) and slow drift leave residuals at noise level; an object is an outlier of the fit as long as
   it covers well under half of the frame, so a camera's auto-exposure reacting to a big white van does not
   hide the van.
3. **Noise-adaptive per-pixel thresholds.** A pixel changed when its residual exceeds
   ``k * sqrt(noise^2 + motion / 2)`` (k = 4): ``noise`` is the fit's robust residual scale (so the threshold
   follows the camera's noise and compression level), capped at twice the camera's running noise so that a
   change over most of the frame cannot raise the threshold enough to hide itself; ``motion`` is a per-pixel
   running mean of squared frame-to-frame differences. Swaying leaves, rain and a fan raise their own pixels'
   thresholds within ~10-20 s and are learned as background; the update is winsorised (a sample counts at
   most 16x the current value), so one object passing by raises it only a little. Floors: 7 grey levels of
   luma, 8 of chroma (|dCr| + |dCb|).
4. **Cleanup and blobs.** A 3x3 opening and closing, then connected components; components smaller than
   ``min_blob`` of the frame (0.15%) are dropped (rain streaks, compression speckle, single leaves).
5. **Local light is explained too** (on the changed pixels, before the cleanup). A cloud's shadow or a headlight's pool changes brightness over part of the
   frame, which the smooth global model cannot follow. Per cell of 5x5 analysis pixels the frame's texture is
   compared with the background's, each without its plane (a pool's slope is not texture): a changed cell whose
   texture is still the background's at its place, scaled with the light (correlation >= 0.8), is *lit*; a
   textured cell whose correlation is under 0.5 where the background's texture would stand above this frame's
   noise is *covered*. A connected region of change most of whose cells are lit (at least 2, at least half of
   its cells, and under 15% of the cells that say anything covered) is light, but for its covered cells and
   a cell around them (an object in the shadow stays change). A region that says little (a car on a smooth road,
   whose edge cells alone look lit) stays change. The background does not learn from lit pixels either, so a
   pool sweeping by leaves no ghost. On ``tools/heldout_suite.py`` (quick subset): cloud shadows 360 -> 120
   false stars an hour, headlight sweeps 140 -> 62, events in shadows and after sweeps recalled as before.
6. **The lightning rule** (Frigate's name). When more than ``lightning_area`` of the frame (40%) changed at
   once (and local light does not explain all but a quarter of it), or the colour left the picture (three quarters of the colourful pixels lost half their colour: the
   switch to infrared) or came back, the change is global: nothing counts as local change, and the background
   restarts from this frame and warms up again (during warm-up a pixel that still differs is replaced, so
   neither a flash nor the old light lingers).
7. **The update.** Background pixels follow the frame with a time constant of ``adapt_s`` (10 s); changed pixels
   are frozen, so an object passing through leaves no ghost when it goes and stays visible for as long as it
   stays. A pixel that stays changed for ``stationary_s`` (60 s) is taken into the background at once: a parked
   car becomes scene, and its leaving is then a change like its arrival. Rates are per second of frame time,
   not per frame, so they hold at any sampling rate; a gap in the stream counts at most ``max_dt_s``.

The first ``warmup_frames`` frames (6: 6 s at the default 1 fps) only build the model: change reads zero while
``warming_up`` is true, so a camera's first seconds never make stars.

Cost, measured on this repository's 2-core CPU: 0.9-1.0 ms of CPU per frame at 224x420 (analysis image 0.25,
the two light fits 0.3, thresholds, blobs and update 0.4) before the local-light test, which adds ~1.5 ms per frame
with change in it (cell statistics 1.2 ms), all of it numpy and OpenCV on 85x160 planes;
``tools/bench_memory.py`` reports it per pair with novelty included.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from livewatch.memory.cells import CELL, CLIP_LEVEL, KERNEL, cell_means, median
from livewatch.memory.locallight import without_light

ANALYSIS_WIDTH = 160
Y, CLIP, CR, CB = 0, 1, 2, 3  # planes of an analysis image


@dataclass(frozen=True)
class ChangeParams:
    min_blob: float = 0.0015  # smallest changed region that counts, as a fraction of the frame
    lightning_area: float = 0.4  # a change over more of the frame than this is global, not an event
    stationary_s: float = 60.0  # an object that stays put this long becomes background
    adapt_s: float = 10.0  # time constant of the background where nothing changed
    motion_s: float = 30.0  # time constant of the per-pixel motion variance
    warmup_frames: int = 6
    k: float = 4.0  # threshold in robust sigmas
    min_luma: float = 7.0  # grey levels
    min_chroma: float = 8.0  # |dCr| + |dCb|
    max_dt_s: float = 10.0  # a gap in the stream counts at most this much for the update rates


@dataclass(frozen=True)
class FrameChange:
    """The local change of one frame against the background, with the global part that was explained away."""

    area: float  # fraction of the frame in changed blobs of at least min_blob
    largest: float  # fraction of the frame in the largest blob
    blobs: int
    cells: np.ndarray  # (ch, cw, 3) float32: the frame's mean Y, Cr, Cb per cell
    cell_change: np.ndarray  # (ch, cw) float32: fraction of each cell inside changed blobs
    gain: float  # tone-curve slope at mid grey (background -> frame)
    offset: float  # tone-curve shift at mid grey, grey levels
    light: float  # mean |background relit - background|: how much the light changed, grey levels
    colour: float  # chroma gain: 1 unchanged, ~0 when the picture went monochrome
    noise: float  # robust residual scale of luma, grey levels
    dynamic: float  # fraction of the frame whose threshold is raised by learned motion
    global_change: str  # "" | "lightning" | "colour_switch"
    warming_up: bool


@dataclass(frozen=True)
class _Global:
    """The global part of a frame's change (see FrameChange)."""

    gain: float = 1.0
    offset: float = 0.0
    light: float = 0.0
    colour: float = 1.0
    noise: float = 0.0
    dynamic: float = 0.0


@dataclass(frozen=True)
class Analysis:
    planes: np.ndarray  # (4, h, w) float32: Y, CLIP, CR, CB
    cells: np.ndarray  # (h / CELL, w / CELL, 3) float32 cell means of Y, Cr, Cb


def analysis_image(image: np.ndarray) -> Analysis:
    """RGB uint8 frame -> planes at ANALYSIS_WIDTH (h and w multiples of CELL) and their cell means.

    The resize is a bilinear step to twice the size then a 2x2 area average: OpenCV's area average at a
    non-integer ratio costs 0.25-0.4 ms on this CPU, this 0.09 ms. The clip plane is 255 where a colour channel
    of the analysis pixel or one of its 8 neighbours averages CLIP_LEVEL or more (a source pixel at 255 pulls
    its analysis pixel's average up to there when a few of its ~7 pixels clip), else 0."""
    h, w = image.shape[:2]
    aw = max(CELL, min(ANALYSIS_WIDTH, w) // CELL * CELL)
    ah = max(CELL, int(round(h * aw / w / CELL)) * CELL)
    if w >= 2 * aw and h >= 2 * ah:
        image = cv2.resize(image, (2 * aw, 2 * ah), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(image, (aw, ah), interpolation=cv2.INTER_AREA)
    ycc = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb).astype(np.float32), (3, 3), 0)
    planes = np.empty((4, ah, aw), np.float32)
    planes[Y], planes[CR], planes[CB] = cv2.split(ycc)
    top = cv2.max(cv2.max(small[..., 0], small[..., 1]), small[..., 2])
    planes[CLIP] = cv2.dilate(cv2.threshold(top, CLIP_LEVEL - 1, 255, cv2.THRESH_BINARY)[1], KERNEL)
    cells = cv2.resize(ycc, (aw // CELL, ah // CELL), interpolation=cv2.INTER_AREA)
    return Analysis(planes, cells)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal (1, w) and vertical (h, 1) coordinates in -1..1."""
    return (np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :], np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None])


def fit_tone(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """The light between two luma planes: dst ~ c0 + c1*u + c2*u^2 + (c3*x + c4*y + c5*x^2 + c6*y^2)*s, with
    s = src/255, u = s - 0.5 and x, y the pixel's position in -1..1: a quadratic tone curve (exposure, gain,
    gamma-like contrast) and a gain that varies smoothly across the frame (sun and shade sweeping, vignetting, a
    flood light from one side, and the way back from it). Fitted robustly on every fourth row and column (a
    median start, then three least-squares passes without the pixels beyond 3 robust sigmas); returns the
    coefficients and the robust scale (1.4826 MAD) of the inliers' residuals. Clipped pixels (< 5 or > 250) do
    not vote."""
    h, w = src.shape
    gx, gy = _grid(h, w)
    x = src[1::4, 1::4].reshape(-1)
    y = dst[1::4, 1::4].reshape(-1)
    px = np.broadcast_to(gx, (h, w))[1::4, 1::4].reshape(-1)
    py = np.broadcast_to(gy, (h, w))[1::4, 1::4].reshape(-1)
    ok = (x > 5) & (x < 250) & (y > 5) & (y < 250)
    if int(ok.sum()) >= 50:
        x, y, px, py = x[ok], y[ok], px[ok], py[ok]
    # start from "no change but an offset", so that an object does not pull the first least-squares pass
    d = y - x
    shift = median(d)
    res = np.abs(d - shift)
    sigma = max(1.4826 * median(res), 0.5)
    keep = res < max(3.0 * sigma, 3.0)
    s = x * np.float32(1 / 255.0)
    u = s - np.float32(0.5)
    design = np.stack([np.ones_like(u), u, u * u, px * s, py * s, px * px * s, py * py * s], axis=1)
    coef = np.array([127.5 + shift, 255.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    ridge = np.diag(np.array([1e-6, 1e-6, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3], np.float32))  # a narrow range of grey or
    for _ in range(3):  # of positions says little about curvature or slopes: keep them near zero then
        if int(keep.sum()) < 20:
            break
        a = design[keep]
        coef = np.linalg.solve(a.T @ a + ridge * len(a), a.T @ y[keep]).astype(np.float32)
        res = np.abs(y - design @ coef)
        sigma = max(1.4826 * median(res[keep]), 0.5)
        keep = res < max(3.0 * sigma, 3.0)
    return coef, sigma


def apply_tone(coef: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``fit_tone``'s model applied to a whole (h, w) luma plane, clipped to 0..255."""
    gx, gy = _grid(*values.shape)
    s = values * np.float32(1 / 255.0)
    u = s - np.float32(0.5)
    out = coef[0] + u * (coef[1] + coef[2] * u) + s * ((coef[3] + coef[5] * gx) * gx + (coef[4] + coef[6] * gy) * gy)
    return np.clip(out, 0.0, 255.0, out=out)


@dataclass(frozen=True)
class ChromaFit:
    """dst - 128 ~ G(x, y) * (src - 128) + offset, G = g0 + gx * x + gy * y (a light field scales colour as it
    scales luma)."""

    gain: np.ndarray  # (g0, gx, gy)
    upper: float  # 75th percentile of the per-pixel gains
    offset: np.ndarray  # (2,) white balance
    sigma: float  # robust scale of |residual| summed over both channels

    def field(self, h: int, w: int) -> np.ndarray:
        gx, gy = _grid(h, w)
        return self.gain[0] + self.gain[1] * gx + self.gain[2] * gy


def fit_chroma(src: np.ndarray, dst: np.ndarray, trusted: np.ndarray) -> ChromaFit:
    """The chroma half of the light between two frames, for (2, h, w) planes (Cr, Cb), on ``trusted`` pixels of
    every fourth row and column.

    The gain toward grey is measured on the background's colourful pixels (|Cr - 128| + |Cb - 128| > 8) as the
    projection of each pixel's new chroma on its old one; a plane over the frame is fitted to those gains (one
    robust pass). Their 75th percentile tells whether most of the colour left (< 0.5: the picture went
    monochrome; an object covers far less). When the background has almost no colour, a frame with colour over a
    fifth of it is the colour coming back (gain 4)."""
    h, w = src.shape[1:]
    gx, gy = _grid(h, w)
    sel = trusted[1::4, 1::4].reshape(-1)
    s = src[:, 1::4, 1::4].reshape(2, -1)[:, sel] - np.float32(128.0)
    d = dst[:, 1::4, 1::4].reshape(2, -1)[:, sel] - np.float32(128.0)
    plane = np.array([1.0, 0.0, 0.0], np.float32)
    if s.shape[1] < 20:
        return ChromaFit(plane, 1.0, np.zeros(2, np.float32), 1.0)
    colourful = np.abs(s).sum(axis=0) > 8.0
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
    elif float(np.mean(np.abs(d).sum(axis=0) > 8.0)) > 0.2:
        plane[0] = upper = 4.0
        r = d - plane[0] * s
    else:
        r = d - s
    offset = np.array([median(r[0]), median(r[1])], np.float32)
    sigma = max(1.4826 * median(np.abs(r - offset[:, None]).sum(axis=0)), 0.5)
    return ChromaFit(plane, upper, offset, sigma)


def _relight(planes: np.ndarray, coef: np.ndarray, chroma: ChromaFit) -> np.ndarray:
    """Planes under the frame's light: the tone model on luma, the chroma fit on chroma. The clip plane stays as
    observed, so a pixel frozen while clipped keeps distrusting its chroma until it is seen again."""
    out = np.empty_like(planes)
    out[Y] = apply_tone(coef, planes[Y])
    out[CLIP] = planes[CLIP]
    out[CR:] = (planes[CR:] - np.float32(128.0)) * chroma.field(*planes.shape[1:]) + \
        (chroma.offset + np.float32(128.0))[:, None, None]
    return out


class ChangeDetector:
    """One camera's background model. ``observe`` each frame in time order; ``probe`` compares without learning."""

    def __init__(self, params: ChangeParams | None = None) -> None:
        self.params = params or ChangeParams()
        self.frames = 0
        self._bg: np.ndarray | None = None  # (4, h, w) float32 planes
        self._prev: np.ndarray | None = None
        self._motion: np.ndarray | None = None  # (2, h, w): luma and chroma mean squared frame differences
        self._fg_s: np.ndarray | None = None  # (h, w): seconds each pixel has been changed without a break
        self._noise: tuple[float, float] | None = None  # running luma and chroma noise (robust residual scales)
        self._last_t = float("-inf")

    @property
    def ready(self) -> bool:
        return self._bg is not None and self.frames >= self.params.warmup_frames

    def observe(self, image: np.ndarray, t: float) -> FrameChange:
        a = analysis_image(image)
        if self._bg is None or self._bg.shape != a.planes.shape:
            self._start(a.planes)
            self._last_t = t
            return self._quiet(a, warming_up=True)
        dt = min(max(t - self._last_t, 0.0), self.params.max_dt_s)
        self._last_t = max(self._last_t, t)
        self.frames += 1
        result, raw, relit, prev_relit, sigmas = self._compare(a)
        self._learn(a.planes, raw, relit, prev_relit, dt, result, sigmas)
        return result

    def probe(self, image: np.ndarray) -> FrameChange:
        """The change of ``image`` against the current background, without learning from it."""
        a = analysis_image(image)
        if self._bg is None or self._bg.shape != a.planes.shape:
            return self._quiet(a, warming_up=True)
        return self._compare(a)[0]

    # -- internals ------------------------------------------------------------------------------------------

    def _start(self, x: np.ndarray) -> None:
        h, w = x.shape[1:]
        self._bg = x.copy()
        self._prev = x.copy()
        self._motion = np.full((2, h, w), (self.params.min_luma / self.params.k) ** 2, np.float32)
        self._fg_s = np.zeros((h, w), np.float32)
        self._noise = None
        self.frames = 1

    def _quiet(self, a: Analysis, warming_up: bool, global_change: str = "", f: _Global | None = None) -> FrameChange:
        f = f or _Global()
        return FrameChange(
            area=0.0, largest=0.0, blobs=0, cells=a.cells, cell_change=np.zeros(a.cells.shape[:2], np.float32),
            gain=f.gain, offset=f.offset, light=f.light, colour=f.colour, noise=f.noise, dynamic=f.dynamic,
            global_change=global_change, warming_up=warming_up,
        )

    def _compare(
        self, a: Analysis
    ) -> tuple[FrameChange, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
        p = self.params
        x = a.planes
        bg, prev, motion = self._bg, self._prev, self._motion
        assert bg is not None and prev is not None and motion is not None
        coef, fit_y = fit_tone(bg[Y], x[Y])
        unclipped = (x[CLIP] < 1.0) & (bg[CLIP] < 1.0)
        chroma = fit_chroma(bg[CR:], x[CR:], unclipped)
        # The fits' residual scales are the frame's noise as long as most of the frame is scenery; a change over
        # most of it would inflate them (and the thresholds with them) and hide itself, so they are capped at
        # twice the camera's running noise.
        sigma_y, sigma_c = fit_y, chroma.sigma
        if self._noise is not None:
            sigma_y = min(sigma_y, 2.0 * self._noise[0] + 0.5)
            sigma_c = min(sigma_c, 2.0 * self._noise[1] + 0.5)
        cgain, cupper = float(chroma.gain[0]), chroma.upper
        relit = _relight(bg, coef, chroma)
        prev_relit = _relight(prev, coef, chroma)
        signed = x[Y] - relit[Y]
        diff = np.abs(x - relit)
        res_y = diff[Y]
        if not unclipped.all():
            # A clipped channel is a bound, not a value: where the background clipped, the scene may be brighter
            # than predicted (only darker is change); where the frame clips, it may be darker than predicted.
            bg_clip, x_clip = bg[CLIP] >= 1.0, x[CLIP] >= 1.0
            res_y = np.where(bg_clip & ~x_clip, np.maximum(-signed, 0.0), res_y)
            res_y = np.where(x_clip & ~bg_clip, np.maximum(signed, 0.0), res_y)
            res_y = np.where(x_clip & bg_clip, 0.0, res_y)
        res_y2 = res_y * res_y
        res_c = diff[CR] + diff[CB]
        res_c *= unclipped  # where a colour channel clips (now or when last learned) chroma says nothing
        k2 = np.float32(p.k * p.k)
        thr_y2 = np.maximum(k2 * (np.float32(sigma_y * sigma_y) + np.float32(0.5) * motion[0]),
                            np.float32(p.min_luma ** 2))
        thr_c2 = np.maximum(k2 * (np.float32(sigma_c * sigma_c) + np.float32(0.5) * motion[1]),
                            np.float32(p.min_chroma ** 2))
        raw = ((res_y2 > thr_y2) | (res_c * res_c > thr_c2)).astype(np.uint8)
        f = _Global(
            gain=float(coef[1] / 255.0), offset=float(coef[0] - 127.5),
            light=float(np.mean(np.abs(relit[Y, ::3, ::3] - bg[Y, ::3, ::3]))),
            colour=cgain, noise=sigma_y,
            dynamic=float(np.mean(thr_y2 > np.float32(2.25 * max(p.k * sigma_y, p.min_luma) ** 2))),
        )
        colour_switch = cupper < 0.5 or cgain >= 4.0
        changed = raw  # what the background does not learn from: light explained or not (no ghost of a pool)
        if not colour_switch and raw.any():
            raw = without_light(raw, x[Y], relit[Y], x[CLIP])
        # a change over most of the frame is global unless local light explains nearly all of it (a cloud's
        # shadow over half the view is light; a flash through blinds, which light explains only in part, is not)
        unexplained = float(raw.mean())
        if unexplained > p.lightning_area or (float(changed.mean()) > p.lightning_area
                                              and unexplained > p.lightning_area / 4):
            kind = "lightning"
        else:
            kind = ""
        if colour_switch or kind:
            kind = "colour_switch" if colour_switch else kind
            return self._quiet(a, not self.ready, kind, f), changed, relit, prev_relit, (fit_y, chroma.sigma)
        if not self.ready:
            return self._quiet(a, True, "", f), changed, relit, prev_relit, (fit_y, chroma.sigma)
        clean = cv2.morphologyEx(raw, cv2.MORPH_OPEN, KERNEL)
        clean = cv2.morphologyEx(clean, cv2.MORPH_CLOSE, KERNEL)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(clean, connectivity=8)
        total = float(clean.size)
        areas = stats[1:, cv2.CC_STAT_AREA]
        big = np.flatnonzero(areas >= max(p.min_blob * total, 1.0)) + 1
        if len(big) == n - 1:
            kept = clean.astype(np.float32)
        else:
            lut = np.zeros(n, np.float32)
            lut[big] = 1.0
            kept = lut[labels]
        result = FrameChange(
            area=float(areas[big - 1].sum()) / total if len(big) else 0.0,
            largest=float(areas[big - 1].max()) / total if len(big) else 0.0,
            blobs=len(big), cells=a.cells, cell_change=cell_means(kept), gain=f.gain, offset=f.offset,
            light=f.light, colour=f.colour, noise=f.noise, dynamic=f.dynamic, global_change="", warming_up=False,
        )
        return result, changed, relit, prev_relit, (fit_y, chroma.sigma)

    def _learn(self, x: np.ndarray, raw: np.ndarray, relit: np.ndarray, prev_relit: np.ndarray, dt: float,
               result: FrameChange, sigmas: tuple[float, float]) -> None:
        p = self.params
        motion, fg_s = self._motion, self._fg_s
        assert motion is not None and fg_s is not None
        warm = self.frames <= p.warmup_frames
        # mean squared frame-to-frame differences, learned everywhere; winsorised once warm
        a_m = 1.0 - math.exp(-dt / p.motion_s) if dt > 0 else 0.0
        if warm:
            a_m = max(a_m, 1.0 / max(self.frames - 1, 1))
        # the camera's noise follows the fits' residual scales on frames where little changed, and restarts with
        # a global change (the switch to infrared brings its own noise)
        if self._noise is None or result.global_change:
            self._noise = sigmas
        elif float(raw.mean()) < 0.2:
            self._noise = (self._noise[0] + a_m * (sigmas[0] - self._noise[0]),
                           self._noise[1] + a_m * (sigmas[1] - self._noise[1]))
        d = np.abs(x - prev_relit)
        sample = np.empty_like(motion)
        np.multiply(d[Y], d[Y], out=sample[0])
        np.add(d[CR], d[CB], out=sample[1])
        sample[1] *= sample[1]
        if not warm:
            cap = motion * np.float32(16.0)
            cap[0] += np.float32(16.0 * result.noise ** 2)
            cap[1] += np.float32(16.0)
            np.minimum(sample, cap, out=sample)
        motion += np.float32(a_m) * (sample - motion)
        self._prev = x
        if result.global_change:
            # the background restarts from this frame and warms up again: the frames after a flash or a switch
            # replace whatever still differs, so neither the flash nor the old light lingers as change
            self._bg = x.copy()
            fg_s[:] = 0.0
            self.frames = 1
            return
        rate = 1.0 - math.exp(-dt / p.adapt_s) if dt > 0 else 0.0
        if warm:
            step = np.where(raw.astype(bool), np.float32(1.0), np.float32(max(rate, 1.0 / self.frames)))
            self._bg = relit + step * (x - relit)
            return
        fg = cv2.dilate(raw, KERNEL).astype(bool)
        step = np.where(fg, np.float32(0.0), np.float32(rate))
        bg = relit + step * (x - relit)
        fg_s += np.float32(dt)
        fg_s[~fg] = 0.0
        settled = fg_s >= p.stationary_s
        if settled.any():
            bg[:, settled] = x[:, settled]
            fg_s[settled] = 0.0
        self._bg = bg
