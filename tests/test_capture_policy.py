"""Pure capture logic: backoff, the camera state machine, sampling, wall clock, URL parsing. No I/O, no sleeps."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from livewatch.capture.policy import Backoff, CameraState, Supervisor
from livewatch.capture.sampler import Sampler, WallClock
from livewatch.capture.source import parse_source
from livewatch.errors import CameraError


def test_backoff_grows_exponentially_with_bounded_jitter_and_a_cap() -> None:
    b = Backoff(initial_s=0.5, max_s=8.0, multiplier=2.0, jitter=0.2, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(10)]
    for i, d in enumerate(delays):
        base = min(0.5 * 2**i, 8.0)
        assert base * 0.8 - 1e-9 <= d <= min(base * 1.2, 8.0) + 1e-9
    assert max(delays) <= 8.0 and delays[-1] >= 6.4
    b.reset()
    assert b.next_delay() <= 0.6


def test_state_machine_transient_faults_retry_forever() -> None:
    sup = Supervisor(backoff=Backoff(initial_s=1, max_s=4, jitter=0, rng=random.Random(0)))
    assert sup.state is CameraState.CONNECTING
    sup.frame(now=0.0)
    assert sup.state is CameraState.STREAMING
    delays = []
    for k in range(20):
        delays.append(sup.fault(now=float(k), error="ConnectionRefusedError"))
        assert sup.state is CameraState.BACKOFF and sup.retry_at == k + delays[-1]
        sup.connecting()
        assert sup.state is CameraState.CONNECTING
    assert delays[:4] == [1, 2, 4, 4] and sup.reconnects == 20 and sup.last_error == "ConnectionRefusedError"


def test_streaming_long_enough_resets_the_backoff() -> None:
    sup = Supervisor(backoff=Backoff(initial_s=1, max_s=60, jitter=0), stable_after_s=10)
    for _ in range(4):
        sup.fault(0.0, "timeout")
    sup.connecting()
    sup.frame(100.0)
    sup.frame(105.0)
    assert sup.fault(106.0, "timeout") == 16  # not stable yet: the backoff keeps growing
    sup.connecting()
    sup.frame(107.0)
    sup.frame(118.0)
    assert sup.fault(119.0, "timeout") == 1


def test_permanent_errors_fail_after_a_few_attempts() -> None:
    sup = Supervisor(backoff=Backoff(jitter=0), max_permanent=3)
    assert sup.fault(0.0, "404 Not Found", permanent=True) is not None
    assert sup.fault(1.0, "404 Not Found", permanent=True) is not None
    assert sup.fault(2.0, "404 Not Found", permanent=True) is None
    assert sup.state is CameraState.FAILED and sup.last_error == "404 Not Found"
    sup.connecting()
    assert sup.state is CameraState.FAILED  # no more retries


def test_stop_and_end_of_file() -> None:
    sup = Supervisor()
    sup.frame(0.0)
    sup.ended()
    assert sup.state is CameraState.STOPPED
    assert sup.fault(2.0, "late error") is None
    other = Supervisor()
    other.stop()
    assert other.state is CameraState.STOPPED


def test_sampler_keeps_one_frame_per_period_by_media_time() -> None:
    s = Sampler(fps=1.0)
    kept = [t / 30 for t in range(300) if s.want(t / 30)]  # 10 s of a 30 fps stream
    assert len(kept) == 10
    assert all(abs((b - a) - 1.0) < 0.05 for a, b in zip(kept, kept[1:]))


def test_sampler_restarts_after_a_jump_without_a_burst() -> None:
    s = Sampler(fps=1.0)
    assert s.want(0.0) and not s.want(0.5) and s.want(1.0)
    assert s.want(500.0)  # a jump: take this frame, restart the slots
    assert not s.want(500.5) and s.want(501.0)
    assert s.want(3.0)  # timestamps reset (reconnect): same
    assert not s.want(3.4)


def test_wall_clock_receive_clock_discounts_late_burst_and_stays_monotonic() -> None:
    w = WallClock()
    # media 0 arrives 1.5 s late (probe buffering), media 1 only 0.1 s after it, later frames on time
    t0 = w.time_of(0.0, arrival=101.5)
    t1 = w.time_of(1.0, arrival=101.6)
    t2 = w.time_of(2.0, arrival=102.6)
    assert t0 == 101.5 and t1 == pytest.approx(101.6) and t2 == pytest.approx(102.6)
    w.new_session()
    t3 = w.time_of(0.0, arrival=102.0)  # a reconnect whose clock would go back
    assert t3 > t2 and w.clamped == 1


def test_wall_clock_rtcp() -> None:
    w = WallClock()
    w.use_rtcp(1000.0, 0.0)
    assert w.time_of(2.5, arrival=5000.0) == 1002.5


def test_parse_sources(tmp_path: Path) -> None:
    spec = parse_source("rtsp://cam.local:554/stream1")
    assert spec.kind == "rtsp" and spec.options["rtsp_transport"] == "tcp" and spec.live
    assert parse_source("rtsp://cam.local/s#transport=udp").options["rtsp_transport"] == "udp"
    assert parse_source("rtsp://cam.local/s#transport=udp").target == "rtsp://cam.local/s"
    assert parse_source("http://cam.local/mjpeg").kind == "http"
    t = parse_source("testsrc://?size=640x360&rate=15")
    assert (t.target, t.format, t.realtime) == ("testsrc2=size=640x360:rate=15", "lavfi", True)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    f = parse_source(f"{video}#loop=1")
    assert f.kind == "file" and f.loop and f.realtime and not f.live
    assert parse_source(f"file://{video}").target == str(video)


@pytest.mark.parametrize(
    "url,message",
    [
        ("ftp://u:secret@host/x", "unsupported scheme 'ftp'"),
        ("rtsp:///nohost", "no host"),
        ("rtsp://u:secret@host:99999/x", "bad port"),
        ("rtsp://u:secret@host/x#transport=sctp", "#transport must be tcp or udp"),
        ("/no/such/file.mp4", "no such readable file"),
        ("webcam:abc", "expected webcam:N"),
        ("webcam:97", "no such video device"),
        ("testsrc://?size=big", "size must look like"),
        ("", "empty camera URL"),
    ],
)
def test_urls_that_can_never_work(url: str, message: str) -> None:
    with pytest.raises(CameraError, match=message) as err:
        parse_source(url)
    assert "secret" not in str(err.value)
