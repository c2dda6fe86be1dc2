"""The previous importance score (livewatch <= 2026-11), kept only so ``tools/bench_memory.py`` can measure it
beside ``livewatch.memory.importance`` on the same footage in the same run. Nothing in the daemon uses it.

Why it was replaced (measured on synthetic 1080p frames): sensor noise of +-2 grey levels alone scored 0.257
(the hue of near-grey pixels is unstable, so the colour histogram moves), a +30 brightness step scored 1.0 and
was admitted as a star, while a dark person covering 2-10% of the frame scored 0.53-0.60 and was not.

Original description:

Pure functions over numpy arrays. Each frame is reduced once to a small signature: a 64x36 blurred grey
thumbnail and a normalised hue/saturation histogram (OpenCV). The distance between two frames combines

- colour change: the Bhattacharyya distance of the histograms (0 same colours, 1 disjoint), and
- structural/motion change: the fraction of thumbnail pixels whose grey level moved by more than
  ``MOTION_DELTA`` (the blur and the threshold make sensor noise and slow lighting drift count for ~nothing),

as a soft OR, 1 - (1 - colour) * (1 - motion), so either kind of change alone can make a pair new. A pair's
distance to another pair is the mean over its two frames. The score of a new pair is the mean of its novelty
against the previous pair and its novelty against the most similar star (1 when there are no stars): a cut to a
new scene scores near 1, a return to a scene already in the star memory scores about half, a static scene ~0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

THUMB_SIZE = (64, 36)  # (width, height)
MOTION_DELTA = 25  # grey levels out of 255
HIST_BINS = (16, 8)  # hue, saturation


@dataclass(frozen=True)
class Signature:
    thumb: np.ndarray  # (36, 64) uint8, blurred grey
    hist: np.ndarray  # (16*8,) float32, normalised to sum 1


def frame_signature(image: np.ndarray) -> Signature:
    """Signature of one RGB uint8 frame."""
    small = cv2.resize(image, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, list(HIST_BINS), [0, 180, 0, 256]).reshape(-1)
    hist = (hist / max(float(hist.sum()), 1.0)).astype(np.float32)
    return Signature(thumb=grey, hist=hist)


def frame_distance(a: Signature, b: Signature) -> float:
    colour = float(cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA))
    colour = min(max(colour, 0.0), 1.0)
    moved = np.abs(a.thumb.astype(np.int16) - b.thumb.astype(np.int16)) > MOTION_DELTA
    motion = float(moved.mean())
    return 1.0 - (1.0 - colour) * (1.0 - motion)


LegacySignature = tuple[Signature, Signature]


def legacy_signature(first: np.ndarray, second: np.ndarray) -> LegacySignature:
    sig = frame_signature(first)
    return (sig, sig) if second is first else (sig, frame_signature(second))


def legacy_distance(a: LegacySignature, b: LegacySignature) -> float:
    return 0.5 * (frame_distance(a[0], b[0]) + frame_distance(a[1], b[1]))


def novelty(new: LegacySignature, others: Sequence[LegacySignature]) -> float:
    """Distance to the most similar of ``others``; 1 when there are none."""
    return min((legacy_distance(new, o) for o in others), default=1.0)


def legacy_importance(
    new: LegacySignature, previous: LegacySignature | None, stars: Sequence[LegacySignature]
) -> float:
    """Score in 0..1 of a new pair given the previous pair and the star memory."""
    prev = 1.0 if previous is None else legacy_distance(new, previous)
    return 0.5 * prev + 0.5 * novelty(new, stars)
