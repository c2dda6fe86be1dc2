"""Synthetic camera frames: the one maker for the start-up warm-up, the tests and the benchmark.

Where no camera is, frames still have to look enough like a camera's: the warm-up needs frames of the real shape
(kernel selection and allocator growth depend on sizes only) that are not all alike (no cache or compressor may
short-cut them); the tests need pairs whose vision features differ, so a reference comparison cannot pass on a
degenerate answer; the benchmark needs frames that cost what real ones cost to JPEG- and H.264-encode and to
score for importance. Zeros compress to nothing and pure noise costs far more than any scene, so a frame here is a
scene: two colour gradients whose offsets depend on the seed, a bright block whose place moves with the seed, and
sensor noise (uniform, sigma ~8).

Pure numpy (no I/O), deterministic in (seed, size): a frame's seed is its sequence number unless given, so a pair
index names the same two images wherever it is made. ``FrameBank`` reuses a few images for many pairs, which
keeps host memory small for long contexts (160 frames of 1080p would be 1 GB).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from livewatch.frames import Frame, FramePair

START = 1_780_000_000.0  # the wall time from which mono_time counts
NOISE = 14  # uniform in [-14, 14]: sigma 8.4, a camera sensor's order of magnitude


def image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """One RGB uint8 scene of ``size`` (height, width): gradients, a moving block, sensor noise."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy = (np.arange(h, dtype=np.int16) * 255 // max(h - 1, 1))[:, None]
    xx = (np.arange(w, dtype=np.int16) * 255 // max(w - 1, 1))[None, :]
    img = np.empty((h, w, 3), dtype=np.int16)  # integer arithmetic: a 720p frame in ~10 ms, not ~40 in float
    img[..., 0] = xx * 4 // 5 + (seed * 13) % 60
    img[..., 1] = yy * 7 // 10 + (seed * 7) % 50
    img[..., 2] = (xx + yy) * 3 // 10
    s = max(1, min(h, w) // 5)
    y0, x0 = (seed * 37) % max(h - s, 1), (seed * 91) % max(w - s, 1)
    img[y0 : y0 + s, x0 : x0 + s] = 240
    img += rng.integers(-NOISE, NOISE + 1, (h, w, 3), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def frame(seq: int, t: float, size: tuple[int, int], *, seed: int | None = None, start: float = START) -> Frame:
    """Frame ``seq`` taken at wall time ``t``; its image is ``image(seed)``, ``seed`` defaulting to ``seq``."""
    return Frame(seq=seq, wall_time=t, mono_time=t - start, image=image(seq if seed is None else seed, size))


def pair(index: int, t: float, size: tuple[int, int], *, start: float = START) -> FramePair:
    """Pair ``index``: frames 2*index and 2*index+1, at ``t`` and one second later (1 fps sampling)."""
    return FramePair(index, frame(2 * index, t, size, start=start), frame(2 * index + 1, t + 1.0, size, start=start))


def pairs(n: int, size: tuple[int, int], *, start: float = START, spacing: float = 2.0) -> list[FramePair]:
    """``n`` consecutive pairs from ``start``, one every ``spacing`` seconds."""
    return [pair(i, start + spacing * i, size, start=start) for i in range(n)]


class FrameBank:
    """``distinct`` images of one size, reused by any number of pairs: pair ``index`` shows images 2*index and
    2*index+1 modulo ``distinct``. Same frame numbering and times as ``pair``."""

    def __init__(self, size: tuple[int, int], distinct: int = 16, start: float = START) -> None:
        self.size = size
        self.start = start
        self.images: Sequence[np.ndarray] = [image(i, size) for i in range(distinct)]

    def pair(self, index: int, t: float) -> FramePair:
        n = len(self.images)
        first = Frame(2 * index, t, t - self.start, self.images[(2 * index) % n])
        second = Frame(2 * index + 1, t + 1.0, t + 1.0 - self.start, self.images[(2 * index + 1) % n])
        return FramePair(index, first, second)
