"""One synchronous engine step (vLLM v1's shape): plan with the pure scheduler, run the plan, return outcomes.

``EngineLoop.step()`` = ``run(plan())``. ``plan`` takes the scheduler's queues (pure bookkeeping; the worker
calls it under its lock), ``run`` does the model work (the worker calls it outside the lock): apply the published
contexts, admit questions (each prepared, a lazy encode included, then routed by ``scheduler.route`` into a decode
slot or onto the unbatched path), advance every decoding answer by one step, run the planned encodes (several
cameras together, within the step's token budget; the rest is handed back to the scheduler), and evaluate the
watches of every watched camera whose prefix holds a context they have not seen (one batched forward). No
threads, queues or futures here: the worker (``worker.py``) owns those; warm-up, the bench and the tests drive
``step()`` directly.

A model failure fails only the jobs it touched (EngineError); a bug while admitting or stepping fails the
answers involved with a fixed message (logged with its traceback) and the loop goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from livewatch.engine.batch import BatchDecoder, Outcome
from livewatch.engine.answer import Answer
from livewatch.engine.core import EncodeReport, EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.scheduler import AskJob, Plan, Route, Scheduler, route
from livewatch.engine.watcheval import WatchEvaluator
from livewatch.engine.results import WatchResult
from livewatch.errors import CancelledRequest, EngineError, RecoverableError
from livewatch.log import Throttle, bind, get_logger

log = get_logger("livewatch.engine")
INTERNAL = "internal error in the engine; the daemon's log has the detail"  # what a client sees of a bug


@dataclass
class EncodeOutcome:
    camera: str
    report: EncodeReport | None = None  # None: nothing to do, or failed (then ``error``)
    error: RecoverableError | None = None


@dataclass
class StepResult:
    answers: list[Outcome] = field(default_factory=list)  # questions that ended; ``Outcome.key`` is the AskJob
    encodes: list[EncodeOutcome] = field(default_factory=list)
    deferred: list[tuple[str, float]] = field(default_factory=list)  # planned encodes over the step's budget
    watches: list[WatchResult] = field(default_factory=list)  # watches evaluated on new prefix versions


class EngineLoop:
    def __init__(self, core: EngineCore, batch: BatchDecoder, scheduler: Scheduler | None = None,
                 stopping: Callable[[], bool] = lambda: False, encode_tokens: int | None = None,
                 watch_batch: int = 32) -> None:
        self.core = core
        self.batch = batch
        self.scheduler = scheduler or Scheduler()
        self._stopping = stopping
        self.encode_tokens = encode_tokens  # new prefix tokens one step may compute (None: no bound)
        self.watch_eval: WatchEvaluator | None = None  # built at the first watch
        self.watch_versions: dict[str, int] = {}  # camera -> the context version its watches last saw
        self.watch_sets: dict[str, dict[str, str]] = {}  # camera -> the watches evaluated last
        # camera -> (the version being evaluated, its watches done so far, the watches' turn: longest waiting first)
        self._watch_round: dict[str, tuple[int, set[str], list[str]]] = {}
        self.watch_batch = watch_batch  # watch evaluations one step runs at most
        self.watches_pending = False  # the last step left watches of a context version unevaluated
        self.watch_failures = 0  # evaluation steps that failed (out of memory, a model error)
        self._watch_failure_logged = Throttle()

    def has_work(self, now: float = math.inf) -> bool:
        return self.scheduler.has_work(now) or bool(self.batch.active) or self.watches_pending

    def plan(self, now: float = math.inf) -> Plan:
        return self.scheduler.plan(self.batch.free_slots(), decoding=bool(self.batch.active), now=now)

    def step(self) -> StepResult:
        result = self.run(self.plan())
        self.scheduler.requeue(result.deferred)
        return result

    def run(self, plan: Plan) -> StepResult:
        result = StepResult()
        for camera, update in plan.contexts.items():
            if update is None:
                self.core.drop_camera(camera)
            else:
                self.core.set_context(camera, update.pairs, update.version, update.published_at or None)
        for job in plan.admit:
            outcome = self._admit(job)
            if outcome is not None:
                result.answers.append(outcome)
        if self.batch.active:
            result.answers.extend(self._decode())
        if plan.encode:
            self._encode(dict(plan.encode), result)
        if plan.watches:
            self._evaluate_watches(plan.watches, result)
        return result

    def _evaluate_watches(self, watches: dict[str, dict[str, str]], result: StepResult) -> None:
        """The watches of watched cameras whose prefix holds a context they have not all seen yet (however the
        prefix got there: an eager encode, or a question's), at most ``watch_batch`` in one batched forward: a
        question waits for one such forward, not for every watch of every camera (256 watches in one step held a
        question 8 s on a CPU). The rest run in the next steps, taken round-robin across cameras and, within a
        camera, the longest unevaluated first, so a camera whose context moves on faster than its watches are
        evaluated still has each watch evaluated in turn."""
        for camera in list(self.watch_versions):
            if camera not in watches:
                del self.watch_versions[camera]
                self._watch_round.pop(camera, None)
        per_camera: list[tuple[str, int, tuple[int, float], list[str]]] = []
        for camera in watches:
            if self.watch_sets.get(camera) != watches[camera]:  # a watch added or changed: evaluate at once
                self.watch_sets[camera] = watches[camera]
                self.watch_versions.pop(camera, None)
                self._watch_round[camera] = (-1, set(), list(watches[camera]))
            version = self.core.encoded_version(camera)
            end = self.core.context_end(camera)
            if version is None or end is None or self.watch_versions.get(camera) == version:
                continue
            seen_version, done, order = self._watch_round.get(camera, (-1, set(), list(watches[camera])))
            if seen_version != version:
                done = set()
            self._watch_round[camera] = (version, done, order)
            per_camera.append((camera, version, end, [n for n in order if n not in done]))
        self.watches_pending = False
        if not per_camera:
            return
        names: list[tuple[str, str]] = []
        for depth in range(max(len(todo) for *_, todo in per_camera)):  # round-robin across cameras
            names += [(camera, todo[depth]) for camera, _, _, todo in per_camera if depth < len(todo)]
        names = names[: self.watch_batch]
        bind(camera=None, request=None)
        t0 = time.perf_counter()
        try:
            if self.watch_eval is None:
                self.watch_eval = WatchEvaluator(self.core.lm)
            queries = [self.core.watch_query(camera, watches[camera][name]) for camera, name in names]
            probabilities = self.watch_eval.probabilities(queries)
        except Exception as exc:  # a model failure or a bug: these versions go unevaluated, the engine goes on
            self.watch_failures += 1
            oom = isinstance(exc, torch.OutOfMemoryError)
            if oom and self.core.lm.device.type == "cuda":
                torch.cuda.empty_cache()
            if self._watch_failure_logged.ready():  # one line a minute, with the count
                log.error("engine.watch_failed", cameras=len(per_camera), error=type(exc).__name__,
                          out_of_memory=oom, failures=self.watch_failures,
                          exc_info=not oom and not isinstance(exc, RuntimeError))
            for camera, version, _, _ in per_camera:
                self.watch_versions[camera] = version
            return
        ms = (time.perf_counter() - t0) * 1e3
        info = {camera: (version, end) for camera, version, end, _ in per_camera}
        for (camera, name), p in zip(names, probabilities):
            version, (frame_id, frame_time) = info[camera]
            result.watches.append(WatchResult(camera, name, p, frame_id, frame_time, version, ms,
                                              watches[camera][name]))
            _, done, order = self._watch_round[camera]
            done.add(name)
            order.remove(name)
            order.append(name)  # evaluated: to the back of the camera's turn
        for camera, version, _, _ in per_camera:  # watches_pending is False since the start of this call
            if not set(watches[camera]) - self._watch_round[camera][1]:
                self.watch_versions[camera] = version
            else:
                self.watches_pending = True

    def _admit(self, job: AskJob) -> Outcome | None:
        bind(camera=job.camera, request=job.id)
        if job.cancelled.is_set():
            return Outcome(job, error=CancelledRequest("the request was cancelled"))

        def cancelled() -> bool:
            return job.cancelled.is_set() or self._stopping()

        try:
            prepared = self.core.prepare(job.camera, job.question, job.params.max_new_tokens, job.received_at)
            way = route(prepared.prefix_tokens, len(prepared.suffix), job.params.max_new_tokens, self.batch.max_len)
            if way is Route.BATCHED:
                return self.batch.admit(job, prepared, job.params, job.on_text, cancelled)
            return Outcome(job, answer=self.core.run_prepared(prepared, job.params, job.on_text, cancelled))
        except RecoverableError as exc:
            return Outcome(job, error=exc)
        except Exception:  # a bug must not kill the thread that serves every camera
            log.exception("engine.admit_crashed")
            return Outcome(job, error=EngineError(INTERNAL))

    def _decode(self) -> list[Outcome]:
        try:
            return self.batch.step()
        except Exception:  # a bug must not kill the thread that serves every camera
            log.exception("engine.step_crashed")
            return self.batch.cancel_all(EngineError(INTERNAL))

    def _encode(self, cameras: dict[str, float], result: StepResult) -> None:
        """Encode the planned cameras together, up to the step's token budget (the rest is handed back)."""
        bind(camera=None, request=None)
        try:
            batch = self.core.encode_many(list(cameras), self.encode_tokens)
        except Exception:  # a bug must not kill the thread that serves every camera
            log.exception("engine.encode_crashed", cameras=len(cameras))
            result.encodes.extend(EncodeOutcome(c, error=EngineError(INTERNAL)) for c in cameras)
            return
        result.deferred.extend((c, cameras[c]) for c in batch.deferred)
        for camera, error in batch.failed:
            log.error("engine.encode_failed", camera=camera, error=str(error))
            result.encodes.append(EncodeOutcome(camera, error=error))
        for camera, report in batch.reports:
            result.encodes.append(EncodeOutcome(camera, report=report))
        if batch.reports:  # one line per batch; the figures of each camera are in status and /metrics
            reports = [r for _, r in batch.reports]
            log.info("engine.encoded", cameras=len(reports), encode_ms=round(reports[0].encode_ms, 1),
                     vision_ms=round(reports[0].vision_ms, 1), pairs_encoded=sum(r.pairs_encoded for r in reports),
                     prefill_tokens=sum(r.prefill_tokens for r in reports), deferred=len(batch.deferred),
                     kinds=sorted({r.kind.value for r in reports}), max_lag_s=round(max(r.lag_s for r in reports), 3))


def answer_now(loop: EngineLoop, camera: str, question: str, params: SamplingParams,
               received_at: float | None = None, on_text: Callable[[str], None] | None = None) -> Outcome:
    """Ask one question through ``step()`` and step until it ends (warm-up, the bench, tests): the daemon's own
    path, one question at a time. Other work the scheduler holds runs too."""
    job = AskJob(camera, question, params, time.perf_counter() if received_at is None else received_at, on_text)
    loop.scheduler.push_ask(job)
    while True:
        for outcome in loop.step().answers:
            if outcome.key is job:
                return outcome


def answer_all(loop: EngineLoop, jobs: list[AskJob]) -> dict[int, Outcome]:
    """Push every job, step until all have ended; outcomes by position in ``jobs``."""
    for job in jobs:
        loop.scheduler.push_ask(job)
    index = {id(job): i for i, job in enumerate(jobs)}
    out: dict[int, Outcome] = {}
    while len(out) < len(jobs):
        for outcome in loop.step().answers:
            out[index[id(outcome.key)]] = outcome
    return out


def answer_of(outcome: Outcome) -> Answer:
    """The answer of an outcome that must have succeeded (raises its error otherwise)."""
    if outcome.answer is None:
        raise outcome.error or EngineError("no answer")
    return outcome.answer
