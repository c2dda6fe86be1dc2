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
5. **Local light is explained too** (on the changed pixels, before the cleanup). A cloud's shadow or a headlight's
   pool changes brightness over part of the frame, which the smooth global model cannot follow. Per cell of 5x5
   analysis pixels the frame's texture is compared with the background's, each without its plane (a pool's
   slope is not texture): a changed cell whose texture is still the background's, scaled with the light, is
   *lit*; one whose texture is gone is *covered*; where the background is flat, a cell that stays flat (or
   clips brighter: a pool's centre) is *flat*, one with new edges *edged*. A connected region of change that
   lit and flat cells dominate (with texture to vouch for it) is light, but for its covered and edged cells and
   a cell around them (``livewatch.memory.locallight`` has the numbers). The background does not learn from
   lit pixels either, so a pool sweeping by leaves no ghost. ``tools/heldout_suite.py`` measures it per class
   (README, "Held out, per class").
6. **The lightning rule** (Frigate's name). When more than ``lightning_area`` of the frame (40%) changed at
   once (and local light explains less than 40% of it), or over half of the frame clips where the background
   did not (or the reverse), or the colour left the whole picture or came back to all of it (the switch to or
   from infrared, decided by spatial spread: ``livewatch.memory.colour``; a colourful object over part of a grey
   scene is an object), the change is global: nothing counts as local change in that frame, and the background
   restarts from it.
7. **The update.** Background pixels follow the frame with a time constant of ``adapt_s`` (10 s); changed pixels
   are frozen, so an object passing through leaves no ghost when it goes and stays visible for as long as it
   stays. A pixel that stays changed for ``stationary_s`` (60 s) is taken into the background at once: a parked
   car becomes scene, and its leaving is then a change like its arrival. Rates are per second of frame time,
   not per frame, so they hold at any sampling rate; a gap in the stream counts at most ``max_dt_s``.

**No blind time.** For ``warmup_frames`` frames (6) after the background (re)starts, it *settles*: it averages
the new frames quickly, and change is detected as usual from the frame after the restart. After a global change,
the background from before it is kept while settling: what it explains under the new frame's light (fitted
anew) is not change, so the light coming back after a flash, or the rest of a switch, is learned at once, while
an object arriving 1 s after the switch differs from both and is an event. A camera's second frame only measures
(with one frame before it, swaying leaves and an arrival look alike; the first two frames make the scene's
reference pair); during its first frames the range of values a pixel and its 5x5 neighbourhood showed so far
stands for its learned motion, so leaves and a fan that revisit their values raise their thresholds while an
arrival over still scenery, a new value, does not.

Cost, measured on this repository's 2-core CPU: 0.9-1.0 ms of CPU per frame at 224x420 (analysis image 0.25,
the two light fits 0.3, thresholds, blobs and update 0.4) before the local-light test, which adds ~1 ms per frame
with change in it, all of it numpy and OpenCV on 85x160 planes (2026-11-27; the machine ran ~2x slower on
2026-12-08: README, "Star memory", has the breakdown of then);
``tools/bench_memory.py`` reports it per pair with novelty included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from livewatch.memory.cells import CELL, CLIP_LEVEL, KERNEL, cell_means
from livewatch.memory.colour import ChromaFit, colour_switch, fit_chroma
from livewatch.memory.tone import apply_tone, fit_tone
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


def _relight(planes: np.ndarray, coef: np.ndarray, chroma: ChromaFit) -> np.ndarray:
    """Planes under the frame's light: the tone model on luma, the chroma fit on chroma. The clip plane stays as
    observed, so a pixel frozen while clipped keeps distrusting its chroma until it is seen again."""
    out = np.empty_like(planes)
    out[Y] = apply_tone(coef, planes[Y])
    out[CLIP] = planes[CLIP]
    out[CR:] = (planes[CR:] - np.float32(128.0)) * chroma.field(*planes.shape[1:]) + \
        (chroma.offset + np.float32(128.0))[:, None, None]
    return out


def _exceeds(x: np.ndarray, relit: np.ndarray, unclipped: np.ndarray, thr_y2: np.ndarray,
             thr_c2: np.ndarray) -> np.ndarray:
    """uint8 mask of the pixels whose luma or chroma residual against ``relit`` exceeds the squared thresholds."""
    diff = np.abs(x - relit)
    res_y = diff[Y]
    if not unclipped.all():
        # A clipped channel is a bound, not a value: where the background clipped, the scene may be brighter
        # than predicted (only darker is change); where the frame clips, it may be darker than predicted.
        signed = x[Y] - relit[Y]
        bg_clip, x_clip = relit[CLIP] >= 1.0, x[CLIP] >= 1.0
        res_y = np.where(bg_clip & ~x_clip, np.maximum(-signed, 0.0), res_y)
        res_y = np.where(x_clip & ~bg_clip, np.maximum(signed, 0.0), res_y)
        res_y = np.where(x_clip & bg_clip, 0.0, res_y)
    res_c = diff[CR] + diff[CB]
    res_c *= unclipped  # where a colour channel clips (now or when last learned) chroma says nothing
    return ((res_y * res_y > thr_y2) | (res_c * res_c > thr_c2)).astype(np.uint8)


def _clipping_jumped(bg: np.ndarray, x: np.ndarray) -> bool:
    """Most of the frame clips where the background did not, or the reverse (an exposure step of x2.5 on a
    bright scene): what is left unclipped says nothing reliable about the light, so the change is global."""
    now, before = float(x[CLIP].mean()) / 255.0, float(bg[CLIP].mean()) / 255.0
    return max(now, before) > 0.5 and max(now, before) > 2.0 * min(now, before)


def _differs(ref: np.ndarray, x: np.ndarray, thr_y2: np.ndarray, thr_c2: np.ndarray) -> np.ndarray:
    """``_exceeds`` against another background ``ref``, relit to this frame's light by its own fits, without what
    local light explains."""
    unclipped = (x[CLIP] < 1.0) & (ref[CLIP] < 1.0)
    coef, _ = fit_tone(ref[Y], x[Y])
    relit = _relight(ref, coef, fit_chroma(ref[CR:], x[CR:], unclipped))
    raw = _exceeds(x, relit, unclipped, thr_y2, thr_c2)
    return without_light(raw, x[Y], relit[Y], x[CLIP]) if raw.any() else raw


_SPREAD_KERNEL = np.ones((5, 5), np.uint8)


def _spread(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(2, h, w) motion terms from per-pixel value ranges: the squared range of luma and of chroma (|Cr| + |Cb|),
    the largest over each pixel's 5x5 neighbourhood."""
    width = high - low
    out = np.empty((2, *low.shape[1:]), np.float32)
    out[0] = cv2.dilate(width[Y] * width[Y], _SPREAD_KERNEL)
    c = width[CR] + width[CB]
    out[1] = cv2.dilate(c * c, _SPREAD_KERNEL)
    return out


@dataclass(frozen=True)
class _Learning:
    """What ``_compare`` hands to ``_learn``."""

    changed: np.ndarray  # uint8: the change the background does not learn from (local light included)
    against_new: np.ndarray  # uint8: change against the current background alone (before a global change aside)
    relit: np.ndarray  # the background under this frame's light
    prev_relit: np.ndarray  # the previous frame under this frame's light
    sigmas: tuple[float, float]  # the fits' luma and chroma residual scales


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
        self._before: np.ndarray | None = None  # the background before a global change, while settling after it
        # or while ``_absorbed`` holds pixels: what was change (an object) when the background restarted
        self._absorbed: np.ndarray | None = None
        self._absorbed_s = 0.0
        self._first: tuple[np.ndarray, np.ndarray] | None = None  # a camera's first frames: per pixel the
        # lowest and highest values seen so far
        self._last_t = float("-inf")

    @property
    def settling(self) -> bool:
        """Within ``warmup_frames`` of the background's (re)start: a camera's first frames or a global change."""
        return self._bg is None or self.frames <= self.params.warmup_frames

    def observe(self, image: np.ndarray, t: float) -> FrameChange:
        a = analysis_image(image)
        if self._bg is None or self._bg.shape != a.planes.shape:
            self._start(a.planes)
            self._last_t = t
            return self._quiet(a, warming_up=True)
        dt = min(max(t - self._last_t, 0.0), self.params.max_dt_s)
        self._last_t = max(self._last_t, t)
        self.frames += 1
        result, learning = self._compare(a)
        self._learn(a.planes, dt, result, learning)
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
        self._before = None
        self._absorbed = None
        self._first = (x.copy(), x.copy())
        self.frames = 1

    def _quiet(self, a: Analysis, warming_up: bool, global_change: str = "", f: _Global | None = None) -> FrameChange:
        f = f or _Global()
        return FrameChange(
            area=0.0, largest=0.0, blobs=0, cells=a.cells, cell_change=np.zeros(a.cells.shape[:2], np.float32),
            gain=f.gain, offset=f.offset, light=f.light, colour=f.colour, noise=f.noise, dynamic=f.dynamic,
            global_change=global_change, warming_up=warming_up,
        )

    def _compare(self, a: Analysis) -> tuple[FrameChange, _Learning]:
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
        relit = _relight(bg, coef, chroma)
        prev_relit = _relight(prev, coef, chroma)
        if self._first is not None:
            # a camera's first frames, before motion is learned: the range of what each pixel and its neighbours
            # showed so far stands for it (swaying leaves and a fan have shown most of their values within a
            # few frames; an arrival over still scenery brings a new one)
            motion = _spread(*self._first)
        k2 = np.float32(p.k * p.k)
        thr_y2 = np.maximum(k2 * (np.float32(sigma_y * sigma_y) + np.float32(0.5) * motion[0]),
                            np.float32(p.min_luma ** 2))
        thr_c2 = np.maximum(k2 * (np.float32(sigma_c * sigma_c) + np.float32(0.5) * motion[1]),
                            np.float32(p.min_chroma ** 2))
        raw = _exceeds(x, relit, unclipped, thr_y2, thr_c2)
        f = _Global(
            gain=float(coef[1] / 255.0), offset=float(coef[0] - 127.5),
            light=float(np.mean(np.abs(relit[Y, ::3, ::3] - bg[Y, ::3, ::3]))),
            colour=float(chroma.gain[0]), noise=sigma_y,
            dynamic=float(np.mean(thr_y2 > np.float32(2.25 * max(p.k * sigma_y, p.min_luma) ** 2))),
        )
        switched = colour_switch(bg[CR:], x[CR:], unclipped, lambda: (x[Y] - relit[Y]) ** 2 > thr_y2,
                                 chroma.upper < 0.5) != ""
        against_new = raw
        if self._before is not None and raw.any() and not switched:
            # settling after a global change: what the background before it explains under this frame's light
            # is not change either (the light came back after a flash; the switch's own transition); later, where
            # an object stood when the background restarted, the ground it uncovers is no ghost
            explained = _differs(self._before, x, thr_y2, thr_c2)
            if self.settling:
                raw = raw & explained
            elif self._absorbed is not None:
                raw = np.where(self._absorbed, raw & explained, raw)
        changed = raw  # what the background does not learn from: light explained or not (no ghost of a pool)
        if not switched and raw.any():
            raw = without_light(raw, x[Y], relit[Y], x[CLIP])
        # a change over most of the frame is global unless local light explains nearly all of it (a cloud's
        # shadow over half the view is light; a flash through blinds, which light explains only in part, is not)
        unexplained = float(raw.mean())
        if unexplained > p.lightning_area or (float(changed.mean()) > p.lightning_area
                                              and unexplained > 0.6 * float(changed.mean())) or _clipping_jumped(bg, x):
            kind = "lightning"
        else:
            kind = "colour_switch" if switched else ""
        learning = _Learning(changed, against_new, relit, prev_relit, (fit_y, chroma.sigma))
        if kind:
            return self._quiet(a, self.settling, kind, f), learning
        if self._before is None and self.frames <= 2:
            # a camera's second frame only measures: with one frame before it, swaying leaves and an arrival
            # look alike (the two make the scene's reference pair)
            return self._quiet(a, True, "", f), learning
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
            light=f.light, colour=f.colour, noise=f.noise, dynamic=f.dynamic, global_change="",
            warming_up=self.settling,
        )
        return result, learning

    def _learn(self, x: np.ndarray, dt: float, result: FrameChange, learning: _Learning) -> None:
        p = self.params
        motion, fg_s, bg = self._motion, self._fg_s, self._bg
        assert motion is not None and fg_s is not None and bg is not None
        raw, relit = learning.changed, learning.relit
        settling = self.settling
        if result.global_change:
            # the background restarts from this frame; the one before stays for the settling frames, to judge what
            # differs beyond the light (the frame-to-frame difference across the switch is not motion), and for
            # as long as an object that was change then (now in the background) may still leave
            if self._before is None:
                self._before = bg
            held = cv2.dilate((fg_s > 0).astype(np.uint8), KERNEL).astype(bool)
            if held.any():
                self._absorbed = held if self._absorbed is None else (self._absorbed | held)
                self._absorbed_s = 0.0
            self._bg = x.copy()
            self._prev = x
            fg_s[:] = 0.0
            self._noise = None  # the switch to infrared brings its own noise: measured again from the next frame
            self.frames = 1
            return
        # a camera's first frames learn its motion fast (a plain mean, not winsorised); later, and after a global
        # change, a sample counts at most 16x the current value
        fast = settling and self._before is None
        a_m = 1.0 - math.exp(-dt / p.motion_s) if dt > 0 else 0.0
        if fast:
            a_m = max(a_m, 1.0 / max(self.frames - 1, 1))
        # the camera's noise follows the fits' residual scales on frames where little changed
        if self._noise is None:
            self._noise = learning.sigmas
        elif float(raw.mean()) < 0.2:
            self._noise = (self._noise[0] + a_m * (learning.sigmas[0] - self._noise[0]),
                           self._noise[1] + a_m * (learning.sigmas[1] - self._noise[1]))
        d = np.abs(x - learning.prev_relit)
        sample = np.empty_like(motion)
        np.multiply(d[Y], d[Y], out=sample[0])
        np.add(d[CR], d[CB], out=sample[1])
        sample[1] *= sample[1]
        if fast and self._first is not None:
            np.minimum(self._first[0], x, out=self._first[0])
            np.maximum(self._first[1], x, out=self._first[1])
        if not fast:
            self._first = None
            cap = motion * np.float32(16.0)
            cap[0] += np.float32(16.0 * result.noise ** 2)
            cap[1] += np.float32(16.0)
            np.minimum(sample, cap, out=sample)
        motion += np.float32(a_m) * (sample - motion)
        self._prev = x
        rate = 1.0 - math.exp(-dt / p.adapt_s) if dt > 0 else 0.0
        fg = cv2.dilate(raw, KERNEL).astype(bool)
        explained = learning.against_new.astype(bool) & ~fg  # by the background before a global change
        if settling:
            # a young background averages its first frames; what the background before a global change explains
            # (the light back after a flash) replaces it at once; change stays frozen, as later
            step = np.where(fg, np.float32(0.0), np.float32(max(rate, 1.0 / self.frames)))
            if self._before is not None:
                step[explained] = 1.0
        else:
            step = np.where(fg, np.float32(0.0), np.float32(rate))
            if self._absorbed is not None:  # the ground an absorbed object uncovered replaces it at once
                healed = self._absorbed & explained
                step[healed] = 1.0
                self._absorbed &= ~healed
                self._absorbed_s += dt
                if not self._absorbed.any() or self._absorbed_s >= p.stationary_s:
                    self._absorbed = None
            if self._absorbed is None:
                self._before = None
        bg = relit + step * (x - relit)
        fg_s += np.float32(dt)
        fg_s[~fg] = 0.0
        settled = fg_s >= p.stationary_s
        if settled.any():
            bg[:, settled] = x[:, settled]
            fg_s[settled] = 0.0
        self._bg = bg
