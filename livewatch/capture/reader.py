"""The decode thread of one camera: open, demux, decode what sampling needs, hand frames to asyncio.

PyAV releases the GIL while FFmpeg demuxes, decodes and converts, so one thread per camera scales with cores.
Policy decisions (backoff, states, sampling, wall clock) live in pure modules; this file only does I/O.

Decoding only what sampling needs: B-frames nobody references are skipped by the decoder (skip_frame NONREF);
once the stream's keyframe interval is known to be no longer than the sampling period, only keyframe packets are
decoded at all (inter frames are dropped before the decoder), which cuts decode CPU several-fold at 1 fps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av

from livewatch.capture.zones import ZoneTap
from livewatch.capture.handoff import LatestHandoff
from livewatch.capture.policy import Backoff, CameraState, Supervisor
from livewatch.capture.sampler import Sampler, WallClock
from livewatch.capture.source import SourceSpec
from livewatch.errors import CameraError, SourceBoundError
from livewatch.frames import Frame, resize
from livewatch.log import bind, get_logger, redact_text

log = get_logger("livewatch.capture")


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl, macOS
        return None


_TRIM = _malloc_trim()

_PERMANENT = tuple(
    getattr(av.error, name)
    for name in ("HTTPNotFoundError", "HTTPUnauthorizedError", "HTTPForbiddenError", "PatchWelcomeError",
                 "DecoderNotFoundError", "ProtocolNotFoundError")
    if hasattr(av.error, name)
) + (FileNotFoundError, CameraError)


def release_heap() -> None:
    """Give freed heap memory back to the system (glibc's ``malloc_trim``). FFmpeg frees a closed source's
    buffers, but glibc keeps the freed pages in its arenas: removing a camera whose source had 1,000 streams left
    RSS 150 MB higher until a trim (measured, PyAV 18.1). No-op where the C library has no ``malloc_trim``."""
    if _TRIM is not None:
        _TRIM(0)


class _Stop(Exception):
    pass


class _EndOfStream(Exception):
    pass


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact_text(f"{type(exc).__name__}: {text}")


class CameraReader:
    def __init__(
        self,
        name: str,
        spec: SourceSpec,
        handoff: LatestHandoff[Frame],
        *,
        fps: float = 1.0,
        frame_size: Callable[[int, int], tuple[int, int]] | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        max_permanent: int = 3,
        connect_check: Callable[[], None] | None = None,
        uniform_errors: bool = False,
    ) -> None:
        self.name = name
        self.spec = spec
        self.handoff = handoff
        self.fps = fps
        self.frame_size = frame_size
        self.masks = spec.masks  # replaced whole by the daemon (set_masks): read once per sampled frame
        self.taps: tuple[ZoneTap, ...] = ()  # zones cut from this camera's frames (replaced whole, read per frame)
        self.timeouts = (open_timeout_s, read_timeout_s)
        self.connect_check = connect_check  # before every open: the network policy (raises CameraError)
        # API cameras: every failure before the first frame is handled alike (retried, never 'failed'), so the
        # state says nothing about what answered at the URL (a 404 from a refused port from a non-video reply)
        self.uniform_errors = uniform_errors
        self.supervisor = Supervisor(backoff=backoff or Backoff(), max_permanent=max_permanent)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"livewatch-capture-{name}", daemon=True)
        self._lock = threading.Lock()
        self.seq = 0
        self.wall = WallClock()
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.packets_skipped = 0
        self.decode_errors = 0
        self.corrupt_packets = 0
        self.cpu_seconds = 0.0
        self._cpu0 = 0.0
        self.resolution: tuple[int, int] | None = None
        self.codec: str | None = None
        self.keyframes_only = False
        self.gaps: deque[tuple[float, float]] = deque(maxlen=20)  # (wall time before, gap seconds)
        self._recent: deque[float] = deque(maxlen=10)

    # -- control ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop; True when it ended within ``timeout`` (a blocked read ends by its timeout)."""
        self._stop.set()
        self.supervisor.stop()
        if self._thread.is_alive():
            self._thread.join(timeout if timeout is not None else self.timeouts[1] + 2)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end by itself (a file source read to its end); True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def state(self) -> CameraState:
        return self.supervisor.state

    def stats(self) -> dict[str, Any]:
        """A snapshot: the capture thread appends to ``gaps`` and ``_recent`` under the same lock."""
        sup = self.supervisor
        with self._lock:
            recent = list(self._recent)
            gaps = list(self.gaps)
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return {
            "state": sup.state.value,
            "source": self.spec.redacted,
            "frames_decoded": self.frames_decoded,
            "frames_sampled": self.frames_sampled,
            "frames_dropped": self.handoff.dropped,
            "packets_skipped": self.packets_skipped,
            "decode_errors": self.decode_errors,
            "corrupt_packets": self.corrupt_packets,
            "reconnects": sup.reconnects,
            "last_error": sup.last_error,
            "retry_in_s": round(max(sup.retry_at - time.monotonic(), 0.0), 2) if sup.retry_at else None,
            "fps": round(fps, 3),
            "resolution": f"{self.resolution[1]}x{self.resolution[0]}" if self.resolution else None,
            "codec": self.codec,
            "keyframes_only": self.keyframes_only,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "timestamps_clamped": self.wall.clamped,
            "gaps": [{"at": round(at, 3), "gap_s": round(gap, 3)} for at, gap in gaps],
        }

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        bind(camera=self.name)
        try:
            self._loop()
        finally:
            self.handoff.close()
            release_heap()
            log.info("camera.reader_ended", state=self.supervisor.state.value)

    def _loop(self) -> None:
        sup = self.supervisor
        self._cpu0 = time.thread_time()
        looping = False  # a looped file starting its next pass is still streaming: no state flip, no log line
        while not self._stop.is_set():
            if not looping:
                sup.connecting()
                log.info("camera.connecting", source=self.spec.redacted)
            looping = False
            try:
                self._session()
                if self.spec.loop:
                    looping = True
                    continue
                if not self.spec.live:
                    sup.ended()
                    log.info("camera.ended", source=self.spec.redacted)
                    return
                raise _EndOfStream("the stream ended")
            except _Stop:
                return
            except Exception as exc:  # every failure of one camera is handled here, never fatal
                permanent = isinstance(exc, _PERMANENT)
                if isinstance(exc, av.error.InvalidDataError) and self.frames_decoded == 0 and not self.spec.live:
                    permanent = True  # a file that is not a video at all
                if isinstance(exc, av.error.ArgumentError) and self.frames_decoded == 0:
                    permanent = True  # refused by the protocol/format whitelists (a text file, a redirect to file:)
                if self.uniform_errors and self.frames_decoded == 0 and not isinstance(exc, SourceBoundError):
                    permanent = False  # a bound is the daemon's own rule: it fails an API camera too
                error = _describe(exc)
                delay = sup.fault(time.monotonic(), error, permanent=permanent)
                if delay is None:
                    log.error("camera.failed", error=error)
                    return
                log.warning("camera.backoff", error=error, retry_in_s=round(delay, 2), reconnects=sup.reconnects)
                self._stop.wait(delay)
            finally:
                self.cpu_seconds = time.thread_time() - self._cpu0

    def _session(self) -> None:
        spec = self.spec
        if self.connect_check is not None:
            self.connect_check()
        container = av.open(spec.target, format=spec.format, options=dict(spec.options), timeout=self.timeouts)
        try:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is None:
                raise av.error.InvalidDataError(0, "no video stream in the source")
            cc = stream.codec_context
            if cc.width * cc.height > spec.max_pixels:
                raise SourceBoundError(f"the stream's frames are {cc.width}x{cc.height}, over "
                                       f"capture.max_source_pixels")
            # the decoder refuses larger pictures too (a stream may change size mid-way: MJPEG, a hostile server)
            cc.options = {**cc.options, "max_pixels": str(spec.max_pixels)}
            # FFmpeg's default is a thread per core for every camera: 64 cameras on 16 cores would hold 1,024
            # decoder threads and their picture buffers
            cc.thread_count = spec.decoder_threads
            self.codec = cc.name
            if cc.name in ("h264", "hevc", "mpeg2video", "mpeg4"):
                cc.skip_frame = "NONREF"
            realtime_anchor = getattr(container, "start_time_realtime", None)
            self._decode(container, stream, realtime_anchor)
        finally:
            container.close()

    def _decode(self, container: Any, stream: Any, rtcp_anchor: int | None) -> None:
        sampler = Sampler(self.fps)
        period = 1.0 / self.fps
        first = True
        self.wall.new_session()
        pace: tuple[float, float] | None = None  # (media t0, monotonic t0)
        last_key: float | None = None
        self.keyframes_only = False
        consecutive_errors = 0
        # Every picture of an intra-only codec (MJPEG...) decodes alone: a packet the sampler would not keep is
        # never decoded, so a camera that sends 1,000 small JPEGs a second costs what one frame a second does.
        intra_only = bool(getattr(stream.codec_context.codec, "intra_only", False))
        for packet in container.demux(stream):
            if self._stop.is_set():
                raise _Stop
            if packet.size == 0:
                continue
            if packet.is_corrupt:
                self.corrupt_packets += 1
                self.supervisor.last_error = f"corrupt data in the stream ({self.corrupt_packets} packets so far)"
            if packet.is_keyframe and packet.pts is not None and packet.time_base is not None:
                kt = float(packet.pts * packet.time_base)
                if last_key is not None and 0 < kt - last_key <= period:
                    self.keyframes_only = True
                elif last_key is not None and kt - last_key > period:
                    self.keyframes_only = False
                last_key = kt
            if self.keyframes_only and not packet.is_keyframe:
                self.packets_skipped += 1
                continue
            if (intra_only and packet.pts is not None and packet.time_base is not None
                    and not sampler.would_want(float(packet.pts * packet.time_base))):
                self.packets_skipped += 1
                continue
            try:
                frames = packet.decode()
                consecutive_errors = 0
            except av.error.FFmpegError as exc:
                self.decode_errors += 1
                consecutive_errors += 1
                self.supervisor.last_error = _describe(exc)
                if consecutive_errors >= 50:
                    raise
                continue
            for frame in frames:
                self.frames_decoded += 1
                t = frame.time
                if t is None or frame.is_corrupt:  # a concealed, damaged picture is not worth a sample
                    continue
                if self.spec.realtime:
                    pace = self._pace(pace, t)
                if not sampler.want(t):
                    continue
                now_wall, now_mono = time.time(), time.monotonic()
                previous = self.wall.last
                if first and rtcp_anchor and abs(rtcp_anchor / 1e6 + t - now_wall) < 60:
                    self.wall.use_rtcp(rtcp_anchor / 1e6, 0.0)  # the sender's clock, if it is roughly right
                wall = self.wall.time_of(t, now_wall)
                if first and previous != float("-inf"):
                    with self._lock:
                        self.gaps.append((previous, wall - previous))
                first = False
                size = self.frame_size(frame.height, frame.width) if self.frame_size else (frame.height, frame.width)
                masks, taps = self.masks, self.taps
                if taps:  # zones: one conversion at full resolution, masked, then each crop and this frame's own
                    full = frame.to_ndarray(format="rgb24")
                    full = masks.apply(full if full.flags.writeable else full.copy())
                    for tap in taps:
                        tap.feed(full, wall, now_mono)
                    image = resize(full, size)
                else:
                    image = frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
                    if masks:  # before the frame leaves this thread: nothing downstream sees the masked pixels
                        image = masks.apply(image if image.flags.writeable else image.copy())
                self.resolution = (frame.height, frame.width)
                self.handoff.put(Frame(self.seq, wall, now_mono, image))
                self.seq += 1
                self.frames_sampled += 1
                with self._lock:
                    self._recent.append(now_mono)
                self.supervisor.frame(now_mono)
                self.cpu_seconds = time.thread_time() - self._cpu0

    def _pace(self, pace: tuple[float, float] | None, t: float) -> tuple[float, float]:
        """Hold decoding to the media clock (files and the test pattern play at their real rate)."""
        now = time.monotonic()
        if pace is None:
            return (t, now)
        target = pace[1] + (t - pace[0])
        if target - now > 5.0 or now - target > 1.0:  # a timestamp jump or a stall: start the clock again
            return (t, now)
        if target > now and self._stop.wait(target - now):
            raise _Stop
        return pace
