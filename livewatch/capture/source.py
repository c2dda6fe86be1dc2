"""Camera URLs to PyAV open arguments. Pure: checks syntax, the URL rules of ``urlpolicy`` and, for files and
webcams, that the path exists.

Supported:
    rtsp://host[:port]/path, rtsps://...   TCP transport unless the fragment says ``#transport=udp``
    http(s)://host/...                      MJPEG, HLS or MPEG-TS, probed by FFmpeg
    /path/to/file.mp4, file:///path          played at its real rate; ``#loop=1`` loops it
    /dev/videoN, webcam:N                    V4L2; ``?size=1280x720&fps=30&input_format=mjpeg``
    testsrc://?size=1280x720&rate=30         FFmpeg's moving test pattern (testsrc2), at its real rate

livewatch's own options travel in the URL fragment, which is never sent to a camera; an unknown one is an error.
Network URLs reach FFmpeg rebuilt from their checked parts, and every source carries FFmpeg's protocol and
format whitelists for its kind plus a decoder pixel cap. A URL that can never work raises CameraError (always
with credentials redacted).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, urlsplit

from livewatch.capture.masks import NO_MASKS, Masks
from livewatch.capture.zones import Crop
from livewatch.capture.urlpolicy import canonical, check_host, check_text, ffmpeg_whitelists
from livewatch.errors import CameraError
from livewatch.log import redact_url

_SIZE_RE = re.compile(r"(\d{2,5})x(\d{2,5})")
_INPUT_FORMAT_RE = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True)
class SourceLimits:
    """The most a camera may cost: decoded pixels per frame, frames per second asked of a generator, decoder
    threads (with the pixel cap, the bound on the decoder's picture buffers)."""

    max_pixels: int = 3840 * 2160
    max_fps: float = 60.0
    decoder_threads: int = 2


@dataclass(frozen=True)
class CaptureParams:
    """How every camera is read (``Settings.capture_params``)."""

    fps: float = 1.0  # frames sampled per second of media time
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    limits: SourceLimits = SourceLimits()


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # rtsp | http | file | webcam | testsrc | zone
    target: str = field(repr=False)  # what av.open receives (may hold credentials)
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    realtime: bool = False  # pace decoding to the media clock (files, test pattern)
    loop: bool = False
    live: bool = True  # end of stream is a fault to reconnect from (not for files)
    redacted: str = ""
    host: str | None = None  # network sources: the checked host (what the network policy resolves)
    max_pixels: int = SourceLimits.max_pixels  # decoder cap (FFmpeg's max_pixels) and the open-time check
    decoder_threads: int = SourceLimits.decoder_threads
    masks: Masks = NO_MASKS  # privacy masks, painted on every sampled frame by the reader
    crop: Crop | None = None  # kind "zone": the rectangle of the parent camera (``target``) it is cut from


def _query_options(text: str) -> dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=16)
    except ValueError as exc:
        raise CameraError("too many options in the camera URL") from exc
    return {k: v[-1] for k, v in parsed.items()}


def _fragment(parts: SplitResult, allowed: set[str], redacted: str) -> dict[str, str]:
    frag = _query_options(parts.fragment)
    unknown = sorted(set(frag) - allowed)
    if unknown:
        known = ", ".join(f"#{k}" for k in sorted(allowed)) or "none"
        raise CameraError(f"{redacted}: unknown livewatch option(s) {', '.join(unknown)} (known: {known})")
    return frag


def _flag(value: str | None, name: str, redacted: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise CameraError(f"{redacted}: #{name} must be 0 or 1, got {value[:16]!r}")


def _size(value: str, redacted: str, limits: SourceLimits) -> tuple[int, int]:
    m = _SIZE_RE.fullmatch(value)
    if not m:
        raise CameraError(f"{redacted}: size must look like 1280x720, got {value[:32]!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 16 or h < 16 or w * h > limits.max_pixels:
        raise CameraError(f"{redacted}: size {w}x{h} is outside 16x16 .. {limits.max_pixels} pixels "
                          f"(capture.max_source_pixels)")
    return w, h


def _rate(value: str, redacted: str, limits: SourceLimits) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = float("nan")
    if not 0 < rate <= limits.max_fps:  # also false for nan
        raise CameraError(f"{redacted}: rate must be a number of frames per second in (0, {limits.max_fps:g}] "
                          f"(capture.max_source_fps)")
    return rate


def _network(parts: SplitResult, scheme: str, redacted: str, timeout_s: float) -> SourceSpec:
    try:
        port = parts.port
        username, password = parts.username, parts.password
    except ValueError:
        raise CameraError(f"{redacted}: malformed URL, bad port") from None
    if port == 0:
        raise CameraError(f"{redacted}: malformed URL, bad port")
    if parts.netloc.count("@") > 1:
        raise CameraError(f"{redacted}: malformed URL, more than one '@' before the host")
    try:
        host = check_host(parts.hostname or "")
    except CameraError as exc:
        raise CameraError(f"{redacted}: {exc}") from None
    target = canonical(scheme, username, password, host, port, parts.path, parts.query)
    us = str(int(timeout_s * 1_000_000))
    if scheme in ("rtsp", "rtsps"):
        transport = _fragment(parts, {"transport"}, redacted).get("transport", "tcp")
        if transport not in ("tcp", "udp"):
            raise CameraError(f"{redacted}: #transport must be tcp or udp, got {transport[:16]!r}")
        # A short probe (1 s / 1 MB) and no input buffering: otherwise FFmpeg reads seconds of stream before the
        # first frame and then delivers them in a burst, late.
        options = {"rtsp_transport": transport, "timeout": us, "analyzeduration": "1000000", "probesize": "1000000",
                   "fflags": "nobuffer"}
        kind, fmt = "rtsp", "rtsp"
    else:
        _fragment(parts, set(), redacted)
        options, kind, fmt = {"rw_timeout": us}, "http", None
    return SourceSpec(kind, target, fmt, {**options, **ffmpeg_whitelists(kind)}, redacted=redact_url(target),
                      host=host)


def _testsrc(parts: SplitResult, redacted: str, limits: SourceLimits) -> SourceSpec:
    _fragment(parts, set(), redacted)
    q = _query_options(parts.query)
    unknown = sorted(set(q) - {"size", "rate"})
    if unknown or parts.netloc or parts.path not in ("", "/"):
        raise CameraError(f"{redacted}: testsrc takes only ?size=WxH&rate=FPS")
    w, h = _size(q.get("size", "1280x720"), redacted, limits)
    rate = _rate(q.get("rate", "30"), redacted, limits)
    return SourceSpec("testsrc", f"testsrc2=size={w}x{h}:rate={rate:g}", "lavfi", ffmpeg_whitelists("testsrc"),
                      realtime=True, live=True, redacted=redacted)


def _webcam(parts: SplitResult, scheme: str, redacted: str, limits: SourceLimits) -> SourceSpec:
    _fragment(parts, set(), redacted)
    if scheme == "webcam":
        index = parts.netloc or parts.path
        if not index.isdigit() or len(index) > 3:
            raise CameraError(f"{redacted}: expected webcam:N (N a device number)")
        device = f"/dev/video{int(index)}"
    else:
        device = parts.path
        if not re.fullmatch(r"/dev/video[0-9]{1,3}", device):
            raise CameraError(f"{redacted}: expected /dev/videoN")
    q = _query_options(parts.query)
    unknown = sorted(set(q) - {"size", "fps", "input_format"})
    if unknown:
        raise CameraError(f"{redacted}: unknown webcam option(s) {', '.join(unknown)} (size, fps, input_format)")
    options = {"timestamps": "mono2abs"}
    if "size" in q:
        w, h = _size(q["size"], redacted, limits)
        options["video_size"] = f"{w}x{h}"
    if "fps" in q:
        options["framerate"] = f"{_rate(q['fps'], redacted, limits):g}"
    if "input_format" in q:
        if not _INPUT_FORMAT_RE.fullmatch(q["input_format"]):
            raise CameraError(f"{redacted}: input_format must be a pixel or codec name such as mjpeg")
        options["input_format"] = q["input_format"]
    if not Path(device).exists():
        raise CameraError(f"{device}: no such video device")
    return SourceSpec("webcam", device, "v4l2", {**options, **ffmpeg_whitelists("webcam")}, redacted=device)


def _file(parts: SplitResult, scheme: str, url: str, redacted: str) -> SourceSpec:
    frag = _fragment(parts, {"loop"}, redacted)
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise CameraError(f"{redacted}: file URLs name a local path (file:///path)")
    path = Path(parts.path if scheme == "file" else url.split("#", 1)[0])
    # one answer for "missing" and "unreadable", so the check is no oracle for files the daemon may not read
    if not path.is_absolute() or not path.is_file() or not os.access(path, os.R_OK):
        raise CameraError(f"{path}: no such readable file (an absolute path to a video file)")
    return SourceSpec("file", str(path), None, ffmpeg_whitelists("file"), realtime=True,
                      loop=_flag(frag.get("loop"), "loop", redacted), live=False, redacted=str(path))


def source_scheme(url: str) -> str:
    """The scheme a URL will be handled as: a bare path is ``file``, ``/dev/videoN`` is ``webcam``."""
    scheme = url.split(":", 1)[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url) else ""
    if scheme == "":
        return "webcam" if url.startswith("/dev/video") else "file"
    return scheme


def parse_source(url: str, timeout_s: float = 10.0, limits: SourceLimits = SourceLimits(),
                 scheme_check: Callable[[str], None] | None = None) -> SourceSpec:
    """Check a camera URL and turn it into open arguments. ``scheme_check`` (the API's scheme policy) runs before
    anything touches the file system, so a refused scheme says nothing about what exists."""
    redacted = redact_url(url)
    scheme = source_scheme(url)
    try:
        check_text(url, network=scheme not in ("file", "webcam"))
    except CameraError as exc:
        raise CameraError(f"{redacted[:200]!r}: {exc}") from None
    if scheme_check is not None:
        scheme_check(scheme)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise CameraError(f"{redacted}: malformed URL (brackets, port or host cannot be read)") from None
    if scheme in ("rtsp", "rtsps", "http", "https"):
        spec = _network(parts, scheme, redacted, timeout_s)
    elif scheme == "testsrc":
        spec = _testsrc(parts, redacted, limits)
    elif scheme == "webcam":
        spec = _webcam(parts, "webcam" if parts.scheme else "", redacted, limits)
    elif scheme == "file":
        spec = _file(parts, parts.scheme.lower(), url, redacted)
    else:
        raise CameraError(
            f"{redacted}: unsupported scheme {scheme!r} (use rtsp, rtsps, http, https, file, webcam or testsrc)"
        )
    return replace(spec, max_pixels=limits.max_pixels, decoder_threads=limits.decoder_threads)
