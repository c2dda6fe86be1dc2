"""What the front calls on a shard (``ShardAPI``, which ``ShardHost`` implements) and what a shard streams back,
as typed messages (pickled by Ray; no torch, no Ray here). The front names a call by the protocol's method
(``ShardAPI.describe``), never by a string, so mypy checks its arguments and its result.

An answer is ``AnswerText``... then ``AnswerDone`` or ``Failed``; a search is ``FindProgress``... then ``FindDone``
or ``Failed``. ``Failed`` carries the public error the client sees (its code and message): a request's own error
says what went wrong, anything else is ``internal``, logged on the shard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec
from livewatch.engine.results import WatchResult
from livewatch.errors import ErrorCode, RequestError
from livewatch.server.protocol import Answered, Ask
from livewatch.server.watchproto import Find


@dataclass(frozen=True)
class AnswerText:
    text: str  # what the engine streamed since the last item


@dataclass(frozen=True)
class AnswerDone:
    answer: Answered


@dataclass(frozen=True)
class FindProgress:
    done: int
    total: int


@dataclass(frozen=True)
class FindDone:
    moments: list[dict[str, Any]]


@dataclass(frozen=True)
class Failed:
    code: str  # an ErrorCode's value
    message: str

    def error(self) -> RequestError:
        """The RequestError the front raises for its client (an unknown code: ``internal``)."""
        try:
            code = ErrorCode(self.code)
        except ValueError:
            code = ErrorCode.INTERNAL
        return RequestError(code, self.message)


AnswerItem = AnswerText | AnswerDone | Failed
FindItem = FindProgress | FindDone | Failed


class ShardAPI(Protocol):
    """Every call the front makes on a shard actor (cluster/shard.py ``ShardHost``)."""

    async def start(self) -> dict[str, Any]:
        """Load the model and start the engine; where the shard runs (device, pid, node)."""

    async def attach(self, name: str, spec: SourceSpec | None, untrusted: bool, error: str | None,
                     watches: dict[str, str]) -> None: ...

    async def detach(self, name: str, delete: bool) -> None: ...

    async def set_watches(self, camera: str, watches: dict[str, str]) -> None: ...

    async def set_masks(self, camera: str, masks: Masks) -> None: ...

    def watch_results(self) -> AsyncIterator[list[WatchResult]]: ...

    def ask(self, request: Ask, camera: str, client: str) -> AsyncIterator[AnswerItem]: ...

    def find(self, request: Find) -> AsyncIterator[FindItem]: ...

    async def describe(self, camera: str, question: str, tokens: int) -> str: ...

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]: ...

    async def evidence(self, camera: str, frame_id: int, size: int | None) -> bytes | None: ...

    async def status(self) -> dict[str, Any]: ...

    async def stop(self) -> None: ...
