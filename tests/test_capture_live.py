"""Capture against real sources: GStreamer's RTSP server, H.264 files made at test time, broken inputs."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path

import pytest

from media import RtspServer, free_port, wait_until, write_h264
from livewatch.capture.handoff import LatestHandoff
from livewatch.capture.policy import Backoff, CameraState
from livewatch.capture.reader import CameraReader
from livewatch.capture.source import parse_source
from livewatch.frames import Frame

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/python3").exists() or shutil.which("gst-launch-1.0") is None,
    reason="GStreamer RTSP server not installed (tools/dev.sh installs it)",
)


class Collector:
    """Runs a reader with its hand-off on a private event loop thread-free: frames are drained by polling."""

    def __init__(self, url: str, fps: float = 2.0, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.handoff: LatestHandoff[Frame] = LatestHandoff(self.loop, maxlen=64)
        kw.setdefault("backoff", Backoff(initial_s=0.2, max_s=1.0, rng=random.Random(0)))
        self.reader = CameraReader("cam", parse_source(url), self.handoff, fps=fps, **kw)
        self.frames: list[tuple[Frame, float]] = []

    def __enter__(self) -> Collector:
        self.reader.start()
        return self

    def __exit__(self, *exc) -> None:
        self.reader.stop(5)
        self.loop.close()

    def drain(self) -> int:
        while len(self.handoff):
            item = self.loop.run_until_complete(self.handoff.get())
            if item is not None:
                self.frames.append((item, time.time()))
        return len(self.frames)

    def wait_frames(self, n: int, timeout: float) -> None:
        wait_until(lambda: self.drain() >= n, timeout)


@pytest.fixture()
def rtsp():
    server = RtspServer().start()
    yield server
    server.kill()


def assert_monotonic(frames) -> None:
    walls = [f.wall_time for f, _ in frames]
    assert all(b > a for a, b in zip(walls, walls[1:]))
    assert [f.seq for f, _ in frames] == list(range(frames[0][0].seq, frames[0][0].seq + len(frames)))


def test_rtsp_frames_arrive_at_the_configured_rate_with_correct_timestamps(rtsp: RtspServer) -> None:
    with Collector(rtsp.url, fps=2.0) as c:
        c.wait_frames(8, timeout=20)
        frames = c.frames[2:8]  # past the connection's first frames
        gaps = [b.wall_time - a.wall_time for (a, _), (b, _) in zip(frames, frames[1:])]
        assert all(0.35 < g < 0.65 for g in gaps), gaps
        assert all(abs(f.wall_time - arrived) < 1.0 and f.wall_time <= arrived + 0.05 for f, arrived in frames)
        assert frames[0][0].image.shape == (360, 640, 3)
        stats = c.reader.stats()
        assert stats["state"] == "streaming" and stats["codec"] == "h264" and stats["resolution"] == "640x360"
        assert not stats["keyframes_only"]  # a keyframe per second cannot serve 2 samples per second


def test_rtsp_at_one_fps_decodes_keyframes_only(rtsp: RtspServer) -> None:
    with Collector(rtsp.url, fps=1.0) as c:
        c.wait_frames(3, timeout=20)
        before = c.reader.stats()
        c.wait_frames(6, timeout=20)
        after = c.reader.stats()
        assert after["keyframes_only"]
        # from then on only keyframes (one per sampled frame, 1 in 15) reach the decoder
        assert after["frames_decoded"] - before["frames_decoded"] <= 4
        assert after["packets_skipped"] - before["packets_skipped"] >= 30
        frames = c.frames[2:6]
        assert all(0.8 < b.wall_time - a.wall_time < 1.2 for (a, _), (b, _) in zip(frames, frames[1:]))


def test_rtsp_server_killed_then_restarted(rtsp: RtspServer) -> None:
    with Collector(rtsp.url, fps=2.0) as c:
        c.wait_frames(3, timeout=20)
        rtsp.kill()
        wait_until(lambda: c.reader.state is CameraState.BACKOFF, timeout=15)
        assert c.reader.stats()["last_error"]
        down_at = len(c.drain() * [0])
        time.sleep(1.5)
        rtsp.start()  # same port
        c.wait_frames(down_at + 3, timeout=60)  # backoff cap (1 s) + connection set-up, on a loaded machine
        assert c.reader.state is CameraState.STREAMING
        assert_monotonic(c.frames)
        stats = c.reader.stats()
        assert stats["reconnects"] >= 1 and stats["gaps"] and stats["gaps"][-1]["gap_s"] > 1.0


def test_file_plays_at_its_real_rate_and_stops_at_the_end(tmp_path: Path) -> None:
    video = write_h264(tmp_path / "clip.mp4", seconds=3.0, fps=15)
    t0 = time.monotonic()
    with Collector(str(video), fps=2.0) as c:
        wait_until(lambda: c.reader.state is CameraState.STOPPED, timeout=15)
        elapsed = time.monotonic() - t0
        c.drain()
        assert elapsed > 2.5  # real rate, not as fast as the decoder can go (slower is a loaded machine)
        assert 5 <= len(c.frames) <= 7
        assert_monotonic(c.frames)
        assert c.frames[0][0].image.shape == (240, 320, 3)


def test_looped_file_keeps_playing(tmp_path: Path) -> None:
    video = write_h264(tmp_path / "clip.mp4", seconds=1.0, fps=15)
    with Collector(f"{video}#loop=1", fps=4.0) as c:
        c.wait_frames(10, timeout=10)  # more than one pass of a 1 s clip holds
        assert c.reader.state is CameraState.STREAMING
        assert_monotonic(c.frames)


def test_truncated_and_corrupted_files_are_reported_not_fatal(tmp_path: Path) -> None:
    video = write_h264(tmp_path / "clip.ts", seconds=3.0, fps=15)  # MPEG-TS: no index to lose
    data = video.read_bytes()
    truncated = tmp_path / "truncated.ts"
    truncated.write_bytes(data[: len(data) // 2])
    corrupted = tmp_path / "corrupted.ts"
    damaged = bytearray(data)
    rng = random.Random(5)
    for i in rng.sample(range(len(data) // 4, len(data)), 400):
        damaged[i] ^= 0xFF
    corrupted.write_bytes(bytes(damaged))
    for path, at_least in ((truncated, 2), (corrupted, 3)):
        with Collector(str(path), fps=4.0) as c:
            wait_until(lambda: c.reader.state is CameraState.STOPPED, timeout=15)
            c.drain()
            assert len(c.frames) >= at_least, path.name  # what could be decoded was delivered
            assert_monotonic(c.frames)
    stats = c.reader.stats()  # the corrupted file
    assert stats["corrupt_packets"] > 0 and "corrupt data" in stats["last_error"]


def test_garbage_file_fails_with_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(random.Random(1).randbytes(50_000))
    with Collector(str(junk), backoff=Backoff(initial_s=0.05, max_s=0.1)) as c:
        wait_until(lambda: c.reader.state is CameraState.FAILED, timeout=10)
        assert "InvalidData" in c.reader.stats()["last_error"]


def test_unreachable_host_retries_with_backoff_and_redacts_credentials(capsys) -> None:
    port = free_port()
    with Collector(f"rtsp://admin:hunter2@127.0.0.1:{port}/stream") as c:
        wait_until(lambda: c.reader.stats()["reconnects"] >= 3, timeout=15)
        stats = c.reader.stats()
        assert stats["state"] in ("backoff", "connecting")  # transient: retried, never failed
        assert "refused" in stats["last_error"].lower()
        assert "hunter2" not in str(stats) and stats["source"] == f"rtsp://***@127.0.0.1:{port}/stream"
    out = capsys.readouterr()
    assert "hunter2" not in out.out + out.err


def test_wrong_path_fails_after_a_few_attempts(rtsp: RtspServer) -> None:
    url = f"rtsp://viewer:pw123@127.0.0.1:{rtsp.port}/nope"
    with Collector(url, backoff=Backoff(initial_s=0.05, max_s=0.2)) as c:
        wait_until(lambda: c.reader.state is CameraState.FAILED, timeout=20)
        stats = c.reader.stats()
        assert "404" in stats["last_error"] or "Not Found" in stats["last_error"]
        assert stats["reconnects"] == 2 and "pw123" not in str(stats)


def test_http_mpegts_stream(tmp_path: Path) -> None:
    """An http:// MPEG-TS stream from a real HTTP server on loopback."""
    import functools
    import http.server
    import threading

    write_h264(tmp_path / "live.ts", seconds=3.0, fps=15)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://user:sekrit@127.0.0.1:{server.server_address[1]}/live.ts"
        with Collector(url, fps=2.0) as c:
            c.wait_frames(4, timeout=20)
            stats = c.reader.stats()
            assert stats["codec"] == "h264" and stats["resolution"] == "320x240"
            assert stats["source"].startswith("http://***@127.0.0.1:") and "sekrit" not in str(stats)
            assert_monotonic(c.frames)
    finally:
        server.shutdown()
