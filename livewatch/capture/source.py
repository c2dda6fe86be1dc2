"""Camera URLs to PyAV open arguments. Pure: checks only syntax and, for files, existence.

Supported:
    rtsp://host[:port]/path, rtsps://...   TCP transport unless the fragment says ``#transport=udp``
    http(s)://host/...                      MJPEG, HLS or MPEG-TS, probed by FFmpeg
    /path/to/file.mp4, file:///path          played at its real rate; ``#loop=1`` loops it
    /dev/videoN, webcam:N                    V4L2; ``?size=1280x720&fps=30&input_format=mjpeg``
    testsrc://?size=1280x720&rate=30         FFmpeg's moving test pattern (testsrc2), at its real rate

livewatch's own options travel in the URL fragment, which is never sent to a camera.
A URL that can never work raises CameraError (always with credentials redacted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from livewatch.errors import CameraError
from livewatch.log import redact_url

_SIZE_RE = re.compile(r"^\d{2,5}x\d{2,5}$")


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # rtsp | http | file | webcam | testsrc
    target: str = field(repr=False)  # what av.open receives (may hold credentials)
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    realtime: bool = False  # pace decoding to the media clock (files, test pattern)
    loop: bool = False
    live: bool = True  # end of stream is a fault to reconnect from (not for files)
    redacted: str = ""


def _fragment_options(fragment: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(fragment, keep_blank_values=True).items()}


def _flag(value: str | None, name: str, url: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise CameraError(f"{redact_url(url)}: #{name} must be 0 or 1, got {value!r}")


def parse_source(url: str, timeout_s: float = 10.0) -> SourceSpec:
    url = url.strip()
    redacted = redact_url(url)
    if not url:
        raise CameraError("empty camera URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise CameraError(f"{redacted}: malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    frag = _fragment_options(parts.fragment)
    base = url.split("#", 1)[0]

    if scheme in ("rtsp", "rtsps"):
        if not parts.hostname:
            raise CameraError(f"{redacted}: malformed RTSP URL, no host")
        try:
            parts.port
        except ValueError:
            raise CameraError(f"{redacted}: malformed URL, bad port") from None
        transport = frag.get("transport", "tcp")
        if transport not in ("tcp", "udp"):
            raise CameraError(f"{redacted}: #transport must be tcp or udp, got {transport!r}")
        us = str(int(timeout_s * 1_000_000))
        # A short probe (1 s / 1 MB) and no input buffering: otherwise FFmpeg reads seconds of stream before the
        # first frame and then delivers them in a burst, late.
        options = {
            "rtsp_transport": transport,
            "timeout": us,
            "analyzeduration": "1000000",
            "probesize": "1000000",
            "fflags": "nobuffer",
        }
        return SourceSpec("rtsp", base, "rtsp", options, redacted=redact_url(base))
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise CameraError(f"{redacted}: malformed HTTP URL, no host")
        us = str(int(timeout_s * 1_000_000))
        return SourceSpec("http", base, None, {"rw_timeout": us}, redacted=redact_url(base))
    if scheme == "testsrc":
        q = _fragment_options(parts.query)
        size = q.get("size", "1280x720")
        rate = q.get("rate", "30")
        if not _SIZE_RE.match(size):
            raise CameraError(f"{redacted}: size must look like 1280x720, got {size!r}")
        try:
            if not 0 < float(rate) <= 240:
                raise ValueError
        except ValueError:
            raise CameraError(f"{redacted}: rate must be a number of frames per second (0, 240]") from None
        return SourceSpec(
            "testsrc", f"testsrc2=size={size}:rate={rate}", "lavfi", realtime=True, live=True, redacted=redacted
        )
    if scheme == "webcam" or (scheme == "" and url.startswith("/dev/video")):
        if scheme == "webcam":
            index = parts.netloc or parts.path
            if not index.isdigit():
                raise CameraError(f"{redacted}: expected webcam:N (N a device number)")
            device = f"/dev/video{index}"
        else:
            device = parts.path
        q = _fragment_options(parts.query)
        options = {"timestamps": "mono2abs"}
        if "size" in q:
            if not _SIZE_RE.match(q["size"]):
                raise CameraError(f"{redacted}: size must look like 1280x720")
            options["video_size"] = q["size"]
        if "fps" in q:
            options["framerate"] = q["fps"]
        if "input_format" in q:
            options["input_format"] = q["input_format"]
        if not Path(device).exists():
            raise CameraError(f"{device}: no such video device")
        return SourceSpec("webcam", device, "v4l2", options, redacted=device)
    if scheme in ("", "file"):
        path = Path(parts.path if scheme == "file" else base)
        if not path.is_file():
            raise CameraError(f"{path}: no such file")
        return SourceSpec(
            "file", str(path), None, realtime=True, loop=_flag(frag.get("loop"), "loop", url), live=False,
            redacted=str(path),
        )
    raise CameraError(
        f"{redacted}: unsupported scheme {scheme!r} (use rtsp, rtsps, http, https, file, webcam or testsrc)"
    )
