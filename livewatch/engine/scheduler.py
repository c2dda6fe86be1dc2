"""What the engine does next: all of the engine's policy, as pure bookkeeping (no threads, no tensors).

Three kinds of work reach the engine:

- context updates from the memory (one per camera and frame batch). Only the newest per camera matters, so a
  newer update replaces a pending one ("keep latest"); every plan applies all pending updates first, so a question
  always sees the newest frames the memory published.
- questions, in a queue bounded by ``max_queued`` (when it is full, ``push_ask`` raises RequestError(BUSY) instead
  of letting the queue grow), admitted into free decode slots round-robin across clients (a client's own
  questions in order), so one busy client cannot starve the others.
- background encodes (eager mode), at most one pending per camera. Questions outrank them: an encode runs when no
  question waits or decodes. So that answers streaming back to back cannot starve a camera's context, an encode
  that has waited ``max_encode_wait`` decode steps runs between two of them anyway.

``plan`` turns the queues into one step's ``Plan`` (what ``EngineLoop.step`` runs); ``route`` says whether an
admitted question fits a decode slot or takes the unbatched path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from livewatch.errors import ErrorCode, RequestError
from livewatch.frames import FramePair

if TYPE_CHECKING:
    from livewatch.engine.generate import SamplingParams


class ResultSink(Protocol):
    """Where a question's answer or error goes (the worker completes an asyncio future with it)."""

    def succeed(self, value: Any) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


@dataclass
class AskJob:
    camera: str
    question: str
    params: SamplingParams
    received_at: float  # perf_counter() when the request arrived: TTFT counts from here
    on_text: Callable[[str], None] | None = None  # called on the engine thread with each text delta
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: ResultSink | None = None
    id: str = ""
    client: str = ""  # who asked (connection id); the unit of fairness


@dataclass(frozen=True)
class ContextUpdate:
    pairs: tuple[FramePair, ...]
    version: int


@dataclass(frozen=True)
class Plan:
    """One engine step: contexts to apply (None: drop the camera), questions to admit, a camera to encode."""

    contexts: dict[str, ContextUpdate | None] = field(default_factory=dict)
    admit: tuple[AskJob, ...] = ()
    encode: str | None = None


class Route(Enum):
    BATCHED = "batched"  # a decode slot: prefix + question + answer fit ``slot_tokens``
    UNBATCHED = "unbatched"  # too long for a slot: answered alone on the eager path


def route(prefix_tokens: int, question_tokens: int, max_new_tokens: int, slot_tokens: int) -> Route:
    return Route.BATCHED if prefix_tokens + question_tokens + max_new_tokens <= slot_tokens else Route.UNBATCHED


@dataclass
class Scheduler:
    max_queued: int = 32
    max_encode_wait: int = 64  # decode steps a pending encode waits behind answers before it runs between two
    by_client: OrderedDict[str, deque[AskJob]] = field(default_factory=OrderedDict)
    queued: int = 0
    contexts: dict[str, ContextUpdate | None] = field(default_factory=dict)
    encodes: OrderedDict[str, None] = field(default_factory=OrderedDict)
    encode_waited: int = 0  # decode steps since the oldest pending encode could have run

    # -- intake -------------------------------------------------------------------------------------------------

    def push_ask(self, job: AskJob) -> None:
        if self.queued >= self.max_queued:
            raise RequestError(ErrorCode.BUSY, f"the engine has {self.queued} questions waiting; try again shortly")
        self.by_client.setdefault(job.client or job.camera, deque()).append(job)
        self.queued += 1

    def push_context(self, camera: str, pairs: Sequence[FramePair], version: int, eager: bool) -> None:
        self.contexts[camera] = ContextUpdate(tuple(pairs), version)
        if eager:
            self.encodes[camera] = None

    def push_remove(self, camera: str) -> None:
        self.contexts[camera] = None
        self.encodes.pop(camera, None)

    def has_work(self) -> bool:
        return bool(self.queued or self.contexts or self.encodes)

    def drain_asks(self) -> list[AskJob]:
        jobs = [job for q in self.by_client.values() for job in q]
        self.by_client.clear()
        self.queued = 0
        return jobs

    # -- planning -----------------------------------------------------------------------------------------------

    def plan(self, free_slots: int, decoding: bool) -> Plan:
        """The next step, given the free decode slots and whether answers are being decoded."""
        contexts, self.contexts = self.contexts, {}
        admit: list[AskJob] = []
        while len(admit) < free_slots and (job := self._next_ask()) is not None:
            admit.append(job)
        busy = bool(admit) or decoding
        encode = None
        if self.encodes and not contexts:  # a camera whose context just changed is encoded from the new one
            if not busy or self.encode_waited >= self.max_encode_wait:
                encode = self._next_encode()
            elif decoding:
                self.encode_waited += 1
        return Plan(contexts, tuple(admit), encode)

    def _next_ask(self) -> AskJob | None:
        """The oldest question of the client served longest ago (round-robin over clients)."""
        if not self.by_client:
            return None
        client, jobs = next(iter(self.by_client.items()))
        job = jobs.popleft()
        del self.by_client[client]
        if jobs:
            self.by_client[client] = jobs  # to the back of the line
        self.queued -= 1
        return job

    def _next_encode(self) -> str:
        camera, _ = self.encodes.popitem(last=False)
        self.encode_waited = 0
        return camera
