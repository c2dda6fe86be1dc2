"""What a shard streams back to the front, as typed messages (pickled by Ray; no torch, no Ray here).

An answer is ``AnswerText``... then ``AnswerDone`` or ``Failed``; a search is ``FindProgress``... then ``FindDone``
or ``Failed``. ``Failed`` carries the public error the client sees (its code and message): a request's own error
says what went wrong, anything else is ``internal``, logged on the shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livewatch.errors import ErrorCode, RequestError
from livewatch.server.protocol import Answered


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
