"""H.264 clips written at run time with PyAV (libx264): the one clip writer of the tests and the benchmark.

Media is generated where it is used, never checked in (tests/media.py re-exports this for the tests; the bench's
ingest section writes its 1080p30 stream with it). It lives in tools/ because tools must not import tests, while
the tests' conftest puts tools/ on sys.path. The GOP is explicit and B-frames are on (``bf=2``): the capture
path's keyframe-only skipping and its handling of reordered frames are exercised by every clip.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_square(size: tuple[int, int]) -> Callable[[int], np.ndarray]:
    """Frame ``i``: a white square sliding right over a background whose blue level ramps with ``i``."""
    h, w = size

    def image(i: int) -> np.ndarray:
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[:, :, 2] = (i * 8) % 255
        x = (i * 7) % (w - 40)
        img[h // 3 : h // 3 + 40, x : x + 40] = 255
        return img

    return image


def write_h264(
    path: Path,
    seconds: float = 3.0,
    fps: int = 15,
    size: tuple[int, int] = (240, 320),
    gop: int = 15,
    *,
    preset: str = "ultrafast",
    image: Callable[[int], np.ndarray] | None = None,
    b_frames: int = 2,
    bitrate: int | None = None,
) -> Path:
    """An MP4 (or any container PyAV infers from the suffix): ``seconds`` at ``fps``, keyframe every ``gop``
    frames, ``size`` (height, width). Frame ``i`` is ``image(i)`` (RGB uint8 of ``size``), by default a moving
    square; ``preset`` is libx264's speed/size trade-off; ``b_frames`` 0 like most cameras; ``bitrate`` in bit/s
    (None: libx264's constant-quality default)."""
    h, w = size
    draw = image or moving_square(size)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bitrate is not None:
            stream.bit_rate = bitrate
        stream.codec_context.options = {"g": str(gop), "preset": preset, "bf": str(b_frames), "threads": "1"}
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(draw(i), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
