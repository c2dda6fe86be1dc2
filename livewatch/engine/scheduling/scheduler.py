"""What the engine does next: all of the engine's policy, as pure bookkeeping (no threads, no tensors).

Three kinds of work reach the engine:

- context updates from the memory (one per camera and frame batch). Only the newest per camera matters, so a
  newer update replaces a pending one ("keep latest"); every plan applies all pending updates first, so a question
  always sees the newest frames the memory published.
- questions, in a queue bounded by ``max_queued`` (when it is full, ``push_ask`` raises RequestError(BUSY) instead
  of letting the queue grow), admitted into free decode slots round-robin across clients (a client's own
  questions in order), so one busy client cannot starve the others.
- background encodes (eager mode), at most one pending per camera, kept in the order their prefixes went stale
  (oldest lag first). Each step that encodes takes up to ``encode_batch`` of them, which the engine runs together
  (one vision call, one prefill forward) within a token budget and hands back the ones that did not fit
  (``requeue``: they keep their place at the front), so no camera starves and lag grows evenly across cameras
  when the GPU falls behind, instead of work piling up: a camera has one pending encode, of its newest context.
  Cameras publish at their own moments, so an engine that encoded each as it arrived would run one camera per
  step, each step paying the model's fixed cost (launches, host work); instead an encode is due once the oldest
  pending one has waited ``encode_gather_s`` (or ``encode_batch`` are pending), and the step takes every camera
  that went stale meanwhile: lag grows by at most that wait, the work per camera shrinks several-fold.
  Questions outrank encodes: an encode runs when no question waits or decodes, and so that answers streaming back
  to back cannot starve the contexts, encodes that have waited ``max_encode_wait`` decode steps run between two
  of them anyway. A question whose camera's prefix is stale does not wait for its turn: its admission encodes
  that camera first (it jumps the queue).

``plan`` turns the queues into one step's ``Plan`` (what ``EngineLoop.step`` runs); ``route`` says whether an
admitted question fits a decode slot or takes the unbatched path; ``WatchRounds`` says which watches a step
evaluates (the watches of a context version, a bounded batch a step, round-robin across cameras).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from livewatch.errors import ErrorCode, RequestError
from livewatch.frames import FramePair

if TYPE_CHECKING:
    from livewatch.engine.results import SamplingParams


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
    published_at: float = 0.0  # time.monotonic() when the memory published it: encode lag counts from here


@dataclass(frozen=True)
class Plan:
    """One engine step: contexts to apply (None: drop the camera), questions to admit, cameras to encode (oldest
    lag first; applied contexts first, so an encode sees the newest frames)."""

    contexts: dict[str, ContextUpdate | None] = field(default_factory=dict)
    admit: tuple[AskJob, ...] = ()
    encode: tuple[tuple[str, float], ...] = ()  # (camera, stale since)
    watches: dict[str, dict[str, str]] = field(default_factory=dict)  # camera -> {watch: condition} (read-only)


class Route(Enum):
    BATCHED = "batched"  # a decode slot: prefix + question + answer fit ``slot_tokens``
    UNBATCHED = "unbatched"  # too long for a slot: answered alone on the eager path


def route(prefix_tokens: int, question_tokens: int, max_new_tokens: int, slot_tokens: int) -> Route:
    return Route.BATCHED if prefix_tokens + question_tokens + max_new_tokens <= slot_tokens else Route.UNBATCHED


@dataclass
class Scheduler:
    max_queued: int = 32
    max_encode_wait: int = 64  # decode steps a pending encode waits behind answers before it runs between two
    encode_batch: int = 16  # cameras offered to one encode step
    encode_gather_s: float = 0.0  # an encode is due once the oldest pending one waited this long (or a batch is full)
    by_client: OrderedDict[str, deque[AskJob]] = field(default_factory=OrderedDict)
    queued: int = 0
    contexts: dict[str, ContextUpdate | None] = field(default_factory=dict)
    encodes: OrderedDict[str, float] = field(default_factory=OrderedDict)  # camera -> stale since, oldest first
    watched: dict[str, dict[str, str]] = field(default_factory=dict)  # camera -> {watch: condition}; encoded eagerly
    encode_waited: int = 0  # decode steps since the oldest pending encode could have run

    # -- intake -------------------------------------------------------------------------------------------------

    def push_ask(self, job: AskJob) -> None:
        if self.queued >= self.max_queued:
            raise RequestError(ErrorCode.BUSY, f"the engine has {self.queued} questions waiting; try again shortly")
        self.by_client.setdefault(job.client or job.camera, deque()).append(job)
        self.queued += 1

    def push_context(self, camera: str, pairs: Sequence[FramePair], version: int, eager: bool,
                     now: float = 0.0) -> None:
        """A new context (``now``: time.monotonic()); a pending encode of the camera keeps its place and age."""
        self.contexts[camera] = ContextUpdate(tuple(pairs), version, now)
        if eager or camera in self.watched:
            self.encodes.setdefault(camera, now)

    def requeue(self, cameras: Sequence[tuple[str, float]]) -> None:
        """Encodes a step took but did not run (over its budget), with their stale times: back to the front, in
        their order (older than anything queued since), unless the camera was removed meanwhile."""
        for camera, since in reversed(cameras):
            if camera in self.contexts and self.contexts[camera] is None:
                continue  # removed since
            self.encodes.pop(camera, None)
            self.encodes[camera] = since
            self.encodes.move_to_end(camera, last=False)

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        """The watches of a camera (name -> condition); none: the camera follows the encode mode again."""
        watched = {c: w for c, w in self.watched.items() if c != camera}  # replaced, never mutated: plans hold it
        if watches:
            watched[camera] = dict(watches)
        self.watched = watched

    def push_remove(self, camera: str) -> None:
        self.contexts[camera] = None
        self.encodes.pop(camera, None)

    def has_work(self, now: float = math.inf) -> bool:
        """Whether a step has something to do at ``now`` (time.monotonic(); default: any pending encode)."""
        due = self.encode_due(now)
        return bool(self.queued or self.contexts) or (due is not None and due <= now)

    def encode_due(self, now: float) -> float | None:
        """When the pending encodes are due (<= now: due), None without any."""
        if not self.encodes:
            return None
        if len(self.encodes) >= self.encode_batch:
            return -math.inf
        return next(iter(self.encodes.values())) + self.encode_gather_s

    def drain_asks(self) -> list[AskJob]:
        jobs = [job for q in self.by_client.values() for job in q]
        self.by_client.clear()
        self.queued = 0
        return jobs

    # -- planning -----------------------------------------------------------------------------------------------

    def plan(self, free_slots: int, decoding: bool, now: float = math.inf) -> Plan:
        """The next step, given the free decode slots, whether answers are being decoded, and the time
        (time.monotonic(); default: every pending encode is due)."""
        contexts, self.contexts = self.contexts, {}
        admit: list[AskJob] = []
        while len(admit) < free_slots and (job := self._next_ask()) is not None:
            admit.append(job)
        busy = bool(admit) or decoding
        encode: tuple[tuple[str, float], ...] = ()  # (camera, stale since)
        due = self.encode_due(now)
        if due is not None and due <= now:
            if not busy or self.encode_waited >= self.max_encode_wait:
                encode = self._next_encodes()
            elif decoding:
                self.encode_waited += 1
        return Plan(contexts, tuple(admit), encode, self.watched)

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

    def _next_encodes(self) -> tuple[tuple[str, float], ...]:
        taken: list[tuple[str, float]] = []
        while self.encodes and len(taken) < self.encode_batch:
            taken.append(self.encodes.popitem(last=False))
        self.encode_waited = 0
        return tuple(taken)


@dataclass(frozen=True)
class DueWatch:
    camera: str
    watch: str
    version: int  # the camera's encoded context version it is evaluated on
    end: Any  # the engine's (frame id, frame time) of that context's newest pair, passed through


class WatchRounds:
    """Which watches are due: each watched camera's watches are evaluated once on each context version its prefix
    holds (however the prefix got there: an eager encode, or a question's), at most ``batch`` in one step, so a
    question waits for one bounded forward, not for every watch of every camera (256 watches in one step held a
    question 8 s on a CPU). The rest run in the next steps (``pending``), taken round-robin across cameras and,
    within a camera, the longest unevaluated first, so a camera whose context moves on faster than its watches are
    evaluated still has each watch evaluated in turn. A watch added or changed is due at once."""

    def __init__(self, batch: int = 32) -> None:
        self.batch = batch
        self.versions: dict[str, int] = {}  # camera -> the context version its watches all saw
        self.sets: dict[str, dict[str, str]] = {}  # camera -> the watches evaluated last
        # camera -> (the version being evaluated, its watches done so far, the watches' turn: longest waiting first)
        self._rounds: dict[str, tuple[int, set[str], list[str]]] = {}
        self.pending = False  # the last step left watches of a context version unevaluated
        self._cameras: list[tuple[str, int]] = []  # the cameras (and versions) of the last ``due``

    def due(self, watches: dict[str, dict[str, str]],
            encoded: Callable[[str], tuple[int, Any] | None]) -> list[DueWatch]:
        """This step's watches; ``encoded(camera)``: the version and end of its encoded context (None: none)."""
        for camera in list(self.versions):
            if camera not in watches:
                del self.versions[camera]
                self._rounds.pop(camera, None)
        per_camera: list[tuple[str, int, Any, list[str]]] = []
        for camera in watches:
            if self.sets.get(camera) != watches[camera]:  # a watch added or changed: evaluate at once
                self.sets[camera] = watches[camera]
                self.versions.pop(camera, None)
                self._rounds[camera] = (-1, set(), list(watches[camera]))
            state = encoded(camera)
            if state is None or self.versions.get(camera) == state[0]:
                continue
            version, end = state
            seen_version, done, order = self._rounds.get(camera, (-1, set(), list(watches[camera])))
            if seen_version != version:
                done = set()
            self._rounds[camera] = (version, done, order)
            per_camera.append((camera, version, end, [n for n in order if n not in done]))
        self.pending = False
        self._cameras = [(camera, version) for camera, version, _, _ in per_camera]
        due: list[DueWatch] = []
        for depth in range(max((len(todo) for *_, todo in per_camera), default=0)):  # round-robin across cameras
            due += [DueWatch(camera, todo[depth], version, end)
                    for camera, version, end, todo in per_camera if depth < len(todo)]
        return due[: self.batch]

    def evaluated(self, due: Sequence[DueWatch], watches: dict[str, dict[str, str]]) -> None:
        """``due`` (the last ``due``'s) were evaluated: each to the back of its camera's turn; a camera whose
        watches all saw its version is done with it, else the rest are pending."""
        for item in due:
            _, done, order = self._rounds[item.camera]
            done.add(item.watch)
            order.remove(item.watch)
            order.append(item.watch)
        for camera, version in self._cameras:
            if not set(watches[camera]) - self._rounds[camera][1]:
                self.versions[camera] = version
            else:
                self.pending = True

    def failed(self) -> None:
        """The evaluation of the last ``due`` failed: its cameras' versions go unevaluated (the next version's
        watches run as usual)."""
        for camera, version in self._cameras:
            self.versions[camera] = version
