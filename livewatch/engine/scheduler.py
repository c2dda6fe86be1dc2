"""Which engine job runs next: pure bookkeeping, no threads, no tensors.

Three kinds of work reach the engine:

- context updates from the memory (one per camera and frame batch). Only the newest per camera matters, so a
  newer update replaces a pending one ("keep latest"); they are applied before any other job, so a question
  always sees the newest frames the memory published.
- questions, in a queue bounded by ``max_queued`` (when it is full, ``push_ask`` raises ``RequestError("busy")``
  instead of letting the queue grow), served round-robin across clients (a client's own questions in order), so
  one busy client cannot starve the others.
- background encodes (eager mode), at most one pending per camera (a set), run only when no question waits:
  questions outrank encodes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from livewatch.errors import RequestError
from livewatch.frames import FramePair


@dataclass
class AskJob:
    camera: str
    question: str
    params: Any  # SamplingParams
    received_at: float
    on_text: Any = None  # Callable[[str], None], called on the worker thread
    cancelled: Any = None  # threading.Event
    result: Any = None  # concurrent.futures.Future-like: set_result / set_exception
    id: str = ""
    client: str = ""  # who asked (connection id); the unit of fairness


@dataclass
class ContextUpdate:
    pairs: tuple[FramePair, ...]
    version: int


@dataclass
class Scheduler:
    max_queued: int = 32
    by_client: OrderedDict[str, deque[AskJob]] = field(default_factory=OrderedDict)
    queued: int = 0
    contexts: dict[str, ContextUpdate | None] = field(default_factory=dict)  # None: remove the camera
    encodes: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def push_ask(self, job: AskJob) -> None:
        if self.queued >= self.max_queued:
            raise RequestError("busy", f"the engine has {self.queued} questions waiting; try again shortly")
        self.by_client.setdefault(job.client or job.camera, deque()).append(job)
        self.queued += 1

    def next_ask(self) -> AskJob | None:
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

    def next_encode(self) -> str | None:
        if self.encodes:
            camera, _ = self.encodes.popitem(last=False)
            return camera
        return None

    def push_context(self, camera: str, pairs: Sequence[FramePair], version: int, eager: bool) -> None:
        self.contexts[camera] = ContextUpdate(tuple(pairs), version)
        if eager:
            self.encodes[camera] = None

    def push_remove(self, camera: str) -> None:
        self.contexts[camera] = None
        self.encodes.pop(camera, None)

    def take_contexts(self) -> dict[str, ContextUpdate | None]:
        pending, self.contexts = self.contexts, {}
        return pending

    def has_work(self) -> bool:
        return bool(self.queued or self.contexts or self.encodes)

    def drain_asks(self) -> list[AskJob]:
        jobs = [job for q in self.by_client.values() for job in q]
        self.by_client.clear()
        self.queued = 0
        return jobs
