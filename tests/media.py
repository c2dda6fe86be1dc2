"""Real H.264 media generated at test time with PyAV (libx264), and the test RTSP server process."""

from __future__ import annotations

import socket
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def write_h264(path: Path, seconds: float = 3.0, fps: int = 15, size: tuple[int, int] = (240, 320), gop: int = 15) -> Path:
    """An MP4 with a moving square: ``seconds`` at ``fps``, keyframe every ``gop`` frames."""
    h, w = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.options = {"g": str(gop), "preset": "ultrafast", "bf": "2"}
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            img = np.zeros((h, w, 3), dtype=np.uint8)
            img[:, :, 2] = (i * 8) % 255
            x = (i * 7) % (w - 40)
            img[h // 3 : h // 3 + 40, x : x + 40] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """GStreamer's RTSP server in a child process (system Python with python3-gi)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self) -> RtspServer:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline().strip()
        if line != b"ready":
            raise RuntimeError(f"RTSP test server did not start: {line!r}")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def wait_until(predicate, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)
