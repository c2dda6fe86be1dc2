"""What the servers share: the daemon's ``Service`` as connections see it, the admission of questions (one count
across the WebSocket and the OpenAI-compatible API) and the one mapping of a cancelled request to its error."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from livewatch.capture.masks import Masks
from livewatch.errors import ErrorCode
from livewatch.server import protocol as p
from livewatch.server import watchproto as wp


class Service(Protocol):
    """What the daemon offers to connections."""

    shutting_down: bool

    def camera_names(self) -> list[str]: ...

    async def ask(self, request: p.Ask, camera: str, on_text: Callable[[str], None], client: str) -> p.Answered:
        """Answer ``request`` about ``camera`` (resolved by the connection), streaming text to ``on_text``."""

    def status(self) -> dict[str, Any]: ...

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        """The frames of the camera's context, by time (RequestError for an unknown camera)."""

    async def add_camera(self, name: str, url: str) -> str: ...

    async def remove_camera(self, name: str) -> None: ...

    async def run_digest(self, name: str) -> dict[str, Any]:
        """Run a configured digest now; the digest (also pushed to subscribers and sinks)."""

    def list_digests(self) -> dict[str, Any]: ...

    async def camera_masks(self, camera: str, masks: Masks | None) -> Masks:
        """The camera's privacy masks, replaced first when ``masks`` is given (kept across restarts)."""

    async def add_watch(self, request: wp.WatchAdd) -> dict[str, Any]:
        """Add or replace a watch; returns it as stored."""

    async def remove_watch(self, name: str) -> None: ...

    def list_watches(self) -> list[dict[str, Any]]: ...

    def subscribe(self, client: str, watches: tuple[str, ...] | None, send: Callable[[str], None]) -> None:
        """Send ``client`` the events of ``watches`` (None: all) through ``send`` until ``unsubscribe``."""

    def unsubscribe(self, client: str) -> None: ...

    async def find(self, request: wp.Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        """The best moments for ``request``, calling ``progress(done, total)`` as chunks are scored."""


class CancelReason(str, Enum):
    """Why a connection cancelled one of its ask tasks (the message of ``Task.cancel``)."""

    CLIENT = "client"  # a cancel request
    SHUTDOWN = "shutdown"  # the daemon is stopping


def cancel_error(reason: object, *, cut: bool = False) -> tuple[ErrorCode, str] | None:
    """The error a request cancelled for ``reason`` (a ``Task.cancel`` message) gets; None: not one of ours (the
    connection went away: nobody to tell). ``cut``: the answer had started streaming."""
    if reason == CancelReason.SHUTDOWN:
        return ErrorCode.SHUTTING_DOWN, "the daemon is shutting down; the answer was cut" if cut else \
            "the daemon is shutting down"
    if reason == CancelReason.CLIENT:
        return ErrorCode.CANCELLED, "cancelled"
    return None


class Admission:
    """Questions in flight across all connections and both APIs (the event loop's thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def refusal(self, shutting_down: bool) -> tuple[ErrorCode, str] | None:
        """Why a new question cannot start now (None: it can)."""
        if shutting_down:
            return ErrorCode.SHUTTING_DOWN, "the daemon is shutting down"
        if self.count >= self.limit:
            return ErrorCode.BUSY, "the daemon is answering as many questions as it can; retry shortly"
        return None
