"""Structured logging: JSON lines for journald, a console renderer on a terminal, credentials never logged.

Log calls name a fixed event and pass fields: ``log.info("camera.connected", camera=name, url=redact_url(url))``.
Context (camera, connection, request ids) is bound with ``bind(...)`` on structlog's contextvars, so it follows the
task or thread that set it. As a second line of defence, a processor redacts ``user:password@`` and secret-looking
query parameters (``?user=admin&pwd=...``) in every string field of every event, including messages of
third-party libraries routed through the stdlib bridge and rendered tracebacks: it runs after the traceback is
rendered. Tracebacks never carry local variables (structlog's default shows them, and a local may be a camera
URL with its password or the API token).
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

import structlog

# scheme://user[:password]@  ->  scheme://***@   (also inside longer text such as FFmpeg error messages). The
# userinfo runs to the last '@' before whitespace: a password with an unencoded '/', '?' or '#' is still covered
# (a URL parser would end the host early there and see no credentials at all).
_CREDENTIALS_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s]*)@")

# ?user=admin&pwd=...  ->  ?user=***&pwd=***  (cameras that take their credentials in the query string)
_QUERY_SECRET_RE = re.compile(
    r"(?P<key>[?&;](?:user|username|usr|login|password|passwd|pass|pwd|psw|token|access_token|auth|authorization|"
    r"key|apikey|api_key|secret|sig|signature|session|sessionid)=)(?P<value>[^&;#\s\"']*)",
    re.IGNORECASE,
)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_url(url: str) -> str:
    """Remove credentials from a URL: ``rtsp://u:p@h/x`` -> ``rtsp://***@h/x``; other URLs are unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.username is None and parts.password is None:
        return redact_text(url)
    host = parts.netloc.rpartition("@")[2]
    return redact_text(urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment)))


def redact_text(text: str) -> str:
    """Remove every ``scheme://user:password@`` and every secret-looking query parameter found in a text."""
    if "@" in text:
        text = _CREDENTIALS_RE.sub(r"\g<scheme>***@", text)
    if "=" in text:
        text = _QUERY_SECRET_RE.sub(r"\g<key>***", text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    return value


def _redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _redact_value(v) for k, v in event_dict.items()}


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and route the stdlib ``logging`` of libraries through it)."""
    out = stream if stream is not None else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    exceptions: Any  # renders exc_info into the event, before redaction sees it
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback)
        exceptions = structlog.processors.format_exc_info
    else:
        renderer = structlog.processors.JSONRenderer()
        exceptions = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            exceptions,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                _redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))  # library debug chatter stays out unless asked for below
    if level == "debug":
        root.setLevel(logging.DEBUG)
    # websockets logs every connection at INFO with object reprs; our own conn.open/conn.closed events say it better
    logging.getLogger("websockets").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()


def bind(**fields: Any) -> None:
    """Bind context fields (camera, conn, request) to the current task or thread."""
    structlog.contextvars.bind_contextvars(**fields)


def unbind(*names: str) -> None:
    structlog.contextvars.unbind_contextvars(*names)


class Throttle:
    """At most one log line per key every ``interval`` seconds, so a flood (refused connections, a camera that
    keeps failing, a lagging GPU) is a line a minute with a count rather than a line per occurrence, which
    journald would rate-limit along with everything else."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._seen: dict[Hashable, tuple[int, float]] = {}  # occurrences held back since the last line, its time

    def ready(self, key: Hashable = None) -> int:
        """0: hold this occurrence back (counted); else log now: the occurrences since the last line, this one
        included."""
        held, last = self._seen.get(key, (0, -math.inf))
        now = self._clock()
        if now - last >= self.interval:
            self._seen[key] = (0, now)
            return held + 1
        self._seen[key] = (held + 1, last)
        return 0
