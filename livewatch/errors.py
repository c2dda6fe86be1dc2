"""Every exception livewatch raises on purpose, in one tree.

    LivewatchError
    ├── FatalError                 the daemon cannot run: main() turns these into exit codes
    │   ├── ConfigError            the config file or an override is invalid
    │   ├── ModelUnavailableError  the model cannot be loaded (missing, offline, corrupt)
    │   ├── StateDirBusyError      another daemon holds the state directory's lock
    │   └── EngineDiedError        the engine thread died: the daemon stops rather than serve a zombie
    └── RecoverableError           one camera or one request fails; the daemon keeps serving
        ├── CameraError            a camera URL cannot work (bad scheme, malformed, file missing)
        ├── StorageError           the frame store could not write (disk full, read-only)
        ├── RequestError           a client request is invalid; carries a stable protocol code
        ├── CancelledRequest       a request was cancelled by its client or by shutdown
        └── EngineError            the model failed one job (CUDA out-of-memory, bad input)

Causes are always chained (``raise ... from exc``). Library code raises; only ``cli.main`` picks exit codes.

``ErrorCode`` is the protocol's stable vocabulary of request failures, and ``error_code`` the one mapping from an
exception to it: every layer that fails a request raises one of the errors above, and only that mapping (used by
the connection handler for every kind of request) decides what a client sees.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from livewatch.log import get_logger

_log = get_logger("livewatch.errors")


class ErrorCode(str, Enum):
    BAD_REQUEST = "bad_request"  # not JSON, not an object, a missing or mistyped field
    UNKNOWN_TYPE = "unknown_type"  # a type the server does not know
    TOO_LARGE = "too_large"  # the message or the question is over its limit
    UNAUTHORIZED = "unauthorized"  # (HTTP 401 before the upgrade; never sent on an open connection)
    UNKNOWN_CAMERA = "unknown_camera"
    UNKNOWN_WATCH = "unknown_watch"  # watch.remove of a name that is not a watch
    UNKNOWN_DIGEST = "unknown_digest"  # digest.run of a name that is not a configured digest
    UNKNOWN_REQUEST = "unknown_request"  # cancel of an id with nothing in flight
    DUPLICATE_ID = "duplicate_id"  # an ask whose id is still in flight on this connection
    CAMERA_EXISTS = "camera_exists"
    INVALID_CAMERA = "invalid_camera"  # camera.add with a URL that can never work or that the policy refuses
    NO_FRAMES = "no_frames"  # the camera has not delivered frames yet
    BUSY = "busy"  # too many questions or camera operations in flight (per connection or in total); retry later
    RATE_LIMITED = "rate_limited"  # camera.add over security.camera_adds_per_minute; retry later
    TOO_MANY_CAMERAS = "too_many_cameras"  # camera.add beyond security.max_cameras
    MODEL_ERROR = "model_error"  # the model failed this request (out-of-memory included); the daemon goes on
    CANCELLED = "cancelled"  # the client cancelled the request
    SHUTTING_DOWN = "shutting_down"  # the daemon is stopping
    UNAVAILABLE = "unavailable"  # cluster: the camera's shard is gone and it waits for another; retry later
    INTERNAL = "internal"  # a bug or a state-directory failure; logged with a traceback


class LivewatchError(Exception):
    """Base of every error raised on purpose by livewatch."""


class FatalError(LivewatchError):
    """The daemon cannot start or continue; ``exit_code`` is what ``main`` returns."""

    exit_code = 1


class ConfigError(FatalError):
    """Invalid configuration. The message names the file, the key and the allowed values."""

    exit_code = 78  # EX_CONFIG from sysexits.h; systemd shows it as "config"


class ModelUnavailableError(FatalError):
    """The model could not be loaded. The message names the model and how to provide it."""

    exit_code = 69  # EX_UNAVAILABLE


class StateDirBusyError(FatalError):
    """Another livewatch process uses this state directory (two would delete each other's frames)."""

    exit_code = 75  # EX_TEMPFAIL: systemd may retry once the other one is gone


class EngineDiedError(FatalError):
    """The engine thread died of a bug; pending questions were failed. systemd restarts the daemon."""

    exit_code = 70  # EX_SOFTWARE


class RecoverableError(LivewatchError):
    """An error confined to one camera or one request."""


class CameraError(RecoverableError):
    """A camera URL that can never work (unknown scheme, malformed URL, missing file)."""


class SourceBoundError(CameraError):
    """A source over a bound every camera is held to (capture.max_source_pixels): permanent, so the camera turns
    ``failed`` after a few opens instead of retrying forever, an API camera too (its status stays generic)."""


class StorageError(RecoverableError):
    """A write to the state directory failed (disk full, read-only, I/O error)."""


class RequestError(RecoverableError):
    """A client request cannot be served. ``code`` is the stable protocol error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[RequestError], tuple[ErrorCode, str]]:
        """Pickled whole (a cluster shard's error crosses Ray to the front)."""
        return (type(self), (self.code, str(self)))


class TimeRangeError(RecoverableError, ValueError):
    """A client's time (``since``/``until``) that cannot be read. The message is ours, safe to show the client."""


class MaskError(RecoverableError, ValueError):
    """Privacy masks that are not a list of polygons in relative coordinates (the text says which and why)."""


class ZoneError(RecoverableError, ValueError):
    """A zone camera's crop or source that cannot work (the text says why)."""


class ScheduleError(RecoverableError, ValueError):
    """A digest's schedule that is neither an interval nor a cron expression (the text says why)."""


class CancelledRequest(RecoverableError):
    """A request stopped before it finished because its client or the daemon cancelled it."""


class EngineError(RecoverableError):
    """The model failed one job. ``out_of_memory`` tells the caller that caches were freed."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def error_code(exc: BaseException, *, shutting_down: bool = False) -> ErrorCode:
    """The protocol code of a request's failure. Anything not raised on purpose is INTERNAL: its text must not
    reach the client (the caller logs it)."""
    if isinstance(exc, RequestError):
        return exc.code
    if isinstance(exc, CameraError):
        return ErrorCode.INVALID_CAMERA
    if isinstance(exc, EngineError):
        return ErrorCode.MODEL_ERROR
    if isinstance(exc, CancelledRequest):
        return ErrorCode.SHUTTING_DOWN if shutting_down else ErrorCode.CANCELLED
    return ErrorCode.INTERNAL


INTERNAL_MESSAGE = "internal error; see the daemon's log"


def public_failure(exc: Exception, *, shutting_down: bool, event: str, **fields: Any) -> tuple[ErrorCode, str]:
    """A request's failure as its client sees it: requests' own errors say what went wrong; anything else is
    ``internal`` with a fixed message, and the log gets ``event`` with the detail and the traceback."""
    code = error_code(exc, shutting_down=shutting_down)
    if code is not ErrorCode.INTERNAL:
        return code, str(exc)
    _log.error(event, **fields, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
    return code, INTERNAL_MESSAGE


class DeliveryError(RecoverableError):
    """One attempt to deliver an item failed.

    ``reason`` is generic text safe to log and to show in stats ("timeout", "HTTP 503"): never a URL, a body or a
    secret. ``error`` is the class of what failed ("ConnectError", "HTTPStatus"). ``retryable`` False fails the
    item at once (an HTTP 404); ``offline`` marks the destination as down as a whole, so the attempt does not
    count against the item's ``max_attempts``. ``retry_after_s`` is the destination's own hint (HTTP 429).
    """

    def __init__(self, reason: str, *, error: str, retryable: bool = True, offline: bool = False,
                 retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.retryable = retryable
        self.offline = offline
        self.retry_after_s = retry_after_s
