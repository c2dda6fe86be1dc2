"""Importance of a frame pair: how much notable local change it shows that the star memory does not hold yet.

Pure (numpy in, numbers out); the state is one ``ImportanceModel`` per camera, fed the pairs in time order.

**The scale.** The score is a fixed curve of the *novel changed area* ``a`` (fraction of the frame):

    score = 1 / (1 + (HALF_AREA / a) ** 2),  HALF_AREA = 1% of the frame

    changed area  0.25%  0.5%  1%    1.22%  2%    5%    10%   25%
    score         0.06   0.20  0.50  0.60   0.80  0.96  0.99  0.998

so the default star threshold 0.6 means "clearly notable": a new object that changes 1.2% of the frame or more,
appearing or leaving. An object's changed area includes its blurred outline at the analysis size (160 pixels
wide), so on the event suite a compact 2% object measures 2.2-2.5% (score 0.83-0.86), a 2% person 3.1% (0.9),
a 0.5% person 0.9% (0.45) and a 1% one 1.7% (0.74). Sensor noise, compression, exposure steps, slow drift, a
day/night switch and learned periodic motion (foliage, rain, a fan) change no area at all and score 0
(``livewatch.memory.change`` says how and why). The changed area is measured by the camera's background model
(``ChangeDetector``); each frame of a pair is scored and the pair takes the higher.

**Novelty against the star memory.** Of the changed area, only the part that no star shows as its own change
counts. A frame's changed cells (17x32 cells of 5x5 analysis pixels) are block-matched against each star's
*changed* cells, after matching the light between the two (a gain and offset on luma, offsets on chroma, from
the statistics of the cells where each did not change): at the displacement of at most 2 cells where most of
them match (each within 8 grey levels of luma and 8 of chroma of the range the star shows over that cell and
its 4 neighbours, since an edge that moved by part of a cell holds a new mix of the same colours), and with the
same mean colour overall, the matching cells are known; thin unknown cells next to them (edges) are forgiven.
The novel area against the most similar star is what the curve scores. So one event (same place, same look)
does not fill the star memory: its first pair becomes a star, the following pairs of the same event score ~0,
even as it moves a little; a different object at the same place, or the same object 10% of the frame away, is
new; the empty road where a parked car was is new when the car leaves (a star's scenery says nothing, only its
change does). ``pair_distance`` is the same measure made symmetric, on the same scale, for the star memory's
duplicate rule (``StarMemory.duplicate_distance`` 0.15: what differs between two pairs would score under 0.15,
under 0.42% of the frame).

**Episodes.** Pairs with local change in either frame are numbered by *episode*: a run of such pairs, ended by a
pair without any and cut every EPISODE_MAX_S (10 s), so an hour of constant traffic is many episodes. The star
memory keeps one star per episode (``livewatch.memory.star``, rule 2): the pair that caught a person walking in
and the one that shows them standing are one event.

A pair's ``PairSignature`` is the cells and per-cell changed fraction of its more important frame. After a
restart the frame store holds no background, so ``pair_signature(first, second, model)`` measures restored pairs
against a model seeded from the restored window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from livewatch.memory.change import ChangeDetector, ChangeParams, FrameChange, analysis_image

HALF_AREA = 0.01  # novel changed area (fraction of the frame) that scores 0.5
NOVEL_LUMA = 8.0  # grey levels between a cell's means for it to look different
NOVEL_CHROMA = 8.0  # |dCr| + |dCb| between a cell's means for it to look different
QUIET_CELL = 0.05  # a cell with less changed area than this is scenery, used to fit the light between two pairs
EPISODE_MAX_S = 10.0  # an episode (a run of pairs with change) is cut into pieces of at most this long
MOVE_CELLS = 2  # an object that moved this many cells (10 analysis pixels, 6% of the width) is the same object
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def area_score(area: float) -> float:
    """The importance scale: 0 for no area, 0.5 at HALF_AREA (1% of the frame), 0.6 at 1.22%, 0.8 at 2%, -> 1."""
    if area <= 0.0:
        return 0.0
    return 1.0 / (1.0 + (HALF_AREA / area) ** 2)


@dataclass(frozen=True, eq=False)
class PairSignature:
    """What a pair showed, coarsely: per cell the mean Y, Cr, Cb, and the fraction that was changed.

    Derived once, when first compared (most signatures never are): each channel's range over every cell and its
    4 neighbours, and the light of the scenery (the cells with less than QUIET_CELL changed): its median luma,
    its luma spread (1.4826 MAD) and its median chroma."""

    cells: np.ndarray  # (ch, cw, 3) float32
    changed: np.ndarray  # (ch, cw) float32

    @functools.cached_property
    def low(self) -> np.ndarray:
        """Per channel, the minimum over the cell and its 4 neighbours."""
        return cv2.erode(self.cells, _CROSS, borderType=cv2.BORDER_REPLICATE)

    @functools.cached_property
    def high(self) -> np.ndarray:
        return cv2.dilate(self.cells, _CROSS, borderType=cv2.BORDER_REPLICATE)

    @functools.cached_property
    def light(self) -> np.ndarray:
        """(luma median, luma spread, Cr median, Cb median) of the scenery."""
        quiet = self.changed < QUIET_CELL
        scenery = self.cells[quiet] if int(quiet.sum()) >= 10 else self.cells.reshape(-1, 3)
        k = len(scenery) // 2
        med = np.partition(scenery, k, axis=0)[k]
        dev = np.abs(scenery[:, 0] - med[0])
        spread = 1.4826 * float(np.partition(dev, k)[k])
        return np.array([med[0], spread, med[1], med[2]], np.float32)

    @property
    def area(self) -> float:
        return float(self.changed.mean())


def _light_map(a: PairSignature, b: PairSignature) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel that bring ``b``'s cells under ``a``'s light, from the two sceneries'
    statistics (luma median and spread, chroma medians): a star from noon still matches the same object at dusk."""
    gain = float(a.light[1] / b.light[1]) if b.light[1] > 2.0 and a.light[1] > 2.0 else 1.0
    gain = min(max(gain, 0.5), 2.0)
    scale = np.array([gain, 1.0, 1.0], np.float32)
    shift = np.array([a.light[0] - gain * b.light[0], a.light[2] - b.light[2], a.light[3] - b.light[3]], np.float32)
    return scale, shift


def _looks_alike(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = np.abs(x - y)
    return (d[..., 0] <= NOVEL_LUMA) & (d[..., 1] + d[..., 2] <= NOVEL_CHROMA)


def _within(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Range test: each channel of ``x`` within [low, high] widened by the tolerances. A cell that an edge
    crosses a little differently holds a mix of colours that its neighbourhood holds too."""
    out = np.maximum(np.maximum(low - x, x - high), 0.0)
    return (out[..., 0] <= NOVEL_LUMA) & (out[..., 1] + out[..., 2] <= NOVEL_CHROMA)


def _in_blocks(mask: np.ndarray) -> np.ndarray:
    """The cells of ``mask`` that belong to a full 2x2 block of it (a morphological opening by a 2x2 square,
    written out: OpenCV's shifts by a cell for even kernels)."""
    block = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    out = np.zeros_like(mask)
    out[:-1, :-1] |= block
    out[1:, :-1] |= block
    out[:-1, 1:] |= block
    out[1:, 1:] |= block
    return out


def _next_to(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def novel_area(sig: PairSignature, star: PairSignature) -> float:
    """Fraction of the frame changed in ``sig`` that ``star`` does not show as its own change.

    The star shows this change when, at one displacement of at most MOVE_CELLS cells (an object that moved a
    little is the same object), most of the changed cells look like cells that changed in the star; the cells
    that match are then known. A star's scenery says nothing: an older star that shows the empty road does not
    make a parked car's leaving old news. Of the unknown cells, the thin ones (in no 2x2 block of unknown cells)
    next to known ones are forgiven: the edges of an object that moved by part of a cell hold new mixes of its
    colours and the road's."""
    if sig.changed.shape != star.changed.shape:
        return sig.area
    changed = sig.changed > 0
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if len(rows) == 0:
        return 0.0
    r = MOVE_CELLS
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    ch, cw = changed.shape
    sy0, sy1, sx0, sx1 = max(y0 - r, 0), min(y1 + r, ch), max(x0 - r, 0), min(x1 + r, cw)
    star_changed = star.changed[sy0:sy1, sx0:sx1] >= QUIET_CELL
    if not star_changed.any():
        return sig.area
    scale, shift = _light_map(sig, star)
    # the star's region padded to a fixed margin, unchanged cells marked never to match
    pad = ((sy0 - (y0 - r), (y1 + r) - sy1), (sx0 - (x0 - r), (x1 + r) - sx1), (0, 0))
    low = np.pad(star.low[sy0:sy1, sx0:sx1] * scale + shift, pad, mode="edge")
    high = np.pad(star.high[sy0:sy1, sx0:sx1] * scale + shift, pad, mode="edge")
    cells = np.pad(star.cells[sy0:sy1, sx0:sx1] * scale + shift, pad, mode="edge")
    usable = np.pad(star_changed, pad[:2])
    here = sig.cells[y0:y1, x0:x1]
    mine = changed[y0:y1, x0:x1]
    h, w = y1 - y0, x1 - x0
    known = np.zeros((h, w), bool)
    best = (0, 0)
    for dy in range(2 * r + 1):  # the displacement at which most of the changed cells match (block matching)
        for dx in range(2 * r + 1):
            hit = mine & usable[dy: dy + h, dx: dx + w] & _within(here, low[dy: dy + h, dx: dx + w],
                                                                  high[dy: dy + h, dx: dx + w])
            if hit.sum() > known.sum():
                known, best = hit, (dy, dx)
    if 2 * int(known.sum()) < int(mine.sum()):  # not the same object: a few cells matching by chance
        return sig.area
    # and the same colours overall: each cell may lie between its neighbours' colours by chance (a grey car where
    # a star shows a white van's body, windows and wheels), the object's mean colour does not
    there = cells[best[0]: best[0] + h, best[1]: best[1] + w]
    if not _looks_alike(here[known].mean(axis=0), there[known].mean(axis=0)):
        return sig.area
    unknown = mine & ~known
    forgiven = unknown & ~_in_blocks(unknown) & _next_to(known)
    return float((sig.changed[y0:y1, x0:x1] * (unknown & ~forgiven)).sum()) / changed.size


def pair_distance(a: PairSignature, b: PairSignature) -> float:
    """0 (same moment) .. 1 (clearly different), on the importance scale: the score that what differs between the
    two pairs would get. Two pairs without local change compare their whole frames."""
    if a.changed.shape != b.changed.shape:
        return 1.0
    if not a.changed.any() and not b.changed.any():
        scale, shift = _light_map(a, b)
        return area_score(float((~_looks_alike(a.cells, b.cells * scale + shift)).mean()))
    return area_score(max(novel_area(a, b), novel_area(b, a)))


@dataclass(frozen=True, eq=False)
class Importance:
    """The score of one pair and its parts (what status reports as ``last_importance``)."""

    score: float
    change_area: float  # fraction of the frame in changed blobs (the pair's more important frame)
    largest_blob: float
    blobs: int
    novel_area: float  # the part of change_area that no star shows
    light: float  # global light change explained away: mean change of the relit background, grey levels
    gain: float
    colour: float  # chroma gain (1 unchanged, ~0: the picture went monochrome)
    noise: float  # robust noise of the residual, grey levels
    dynamic_area: float  # fraction of the frame learned as periodic motion
    global_change: str  # "" | "lightning" | "colour_switch": the pair saw a global change, discounted
    warming_up: bool
    signature: PairSignature = field(repr=False, compare=False)
    episode: int = -1  # the run of pairs with local change this pair belongs to (-1: no local change)

    def parts(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "change_area": round(self.change_area, 5),
            "largest_blob": round(self.largest_blob, 5),
            "blobs": self.blobs,
            "novel_area": round(self.novel_area, 5),
            "light": round(self.light, 2),
            "gain": round(self.gain, 3),
            "colour": round(self.colour, 3),
            "noise": round(self.noise, 2),
            "dynamic_area": round(self.dynamic_area, 4),
            "global_change": self.global_change,
            "warming_up": self.warming_up,
            "episode": self.episode,
        }


def _signature(change: FrameChange) -> PairSignature:
    return PairSignature(cells=change.cells, changed=change.cell_change)


class ImportanceModel:
    """One camera's scorer: its background model, fed every frame in time order."""

    def __init__(self, params: ChangeParams | None = None) -> None:
        self.detector = ChangeDetector(params)
        self.episodes = 0  # episodes started so far
        self._episode_start: float | None = None  # of the current episode; None after a pair without change

    def learn(self, image: np.ndarray, time: float) -> None:
        """Feed a frame without scoring it (seeding from a restored window)."""
        self.detector.observe(image, time)

    def score_pair(
        self, first: np.ndarray, first_time: float, second: np.ndarray | None, second_time: float,
        stars: Sequence[PairSignature],
    ) -> Importance:
        """Score a new pair (``second`` None: a lone frame paired with itself) against the star memory."""
        changes = [self.detector.observe(first, first_time)]
        if second is not None:
            changes.append(self.detector.observe(second, second_time))
        stars = [s for s in stars if s.changed.any()]  # a star without change (the reference) knows no change
        best: tuple[float, float, int] | None = None
        chosen = changes[-1]
        novel_of_chosen = 0.0
        for i, change in enumerate(changes):
            sig = _signature(change)
            novel = min((novel_area(sig, s) for s in stars), default=change.area) if change.area > 0 else 0.0
            key = (area_score(novel), change.area, i)  # the more important frame; ties: more change, then later
            if best is None or key > best:
                best, chosen, novel_of_chosen = key, change, novel
        glob = next((c.global_change for c in changes if c.global_change), "")
        episode = -1
        if any(c.area > 0 for c in changes):
            if self._episode_start is None or first_time - self._episode_start >= EPISODE_MAX_S:
                self.episodes += 1
                self._episode_start = first_time
            episode = self.episodes
        else:
            self._episode_start = None
        return Importance(
            score=area_score(novel_of_chosen), change_area=chosen.area, largest_blob=chosen.largest,
            blobs=chosen.blobs, novel_area=novel_of_chosen, light=max(c.light for c in changes), gain=chosen.gain,
            colour=min(c.colour for c in changes), noise=chosen.noise, dynamic_area=chosen.dynamic,
            global_change=glob, warming_up=any(c.warming_up for c in changes), signature=_signature(chosen),
            episode=episode,
        )

    def signature(self, first: np.ndarray, second: np.ndarray | None = None) -> PairSignature:
        """The signature of a stored pair against the current background, without learning from it."""
        changes = [self.detector.probe(first)] + ([self.detector.probe(second)] if second is not None else [])
        return _signature(max(changes, key=lambda c: c.area))


def pair_signature(first: np.ndarray, second: np.ndarray, model: ImportanceModel | None = None) -> PairSignature:
    """A pair's signature: against ``model``'s background when given, else its cells with no change marked (such a
    signature still compares by appearance: another pair's change is new unless these cells show it too)."""
    if model is not None:
        return model.signature(first, None if second is first else second)
    cells = analysis_image(second).cells
    return PairSignature(cells=cells, changed=np.zeros(cells.shape[:2], np.float32))
