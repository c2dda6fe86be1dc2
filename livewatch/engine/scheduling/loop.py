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
from livewatch.engine.scheduling.scheduler import AskJob, Plan, Route, Scheduler, WatchRounds, route
from livewatch.engine.model.watcheval import WatchEvaluator
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
        self.watch_rounds = WatchRounds(watch_batch)  # which watches a step evaluates
        self.watch_failures = 0  # evaluation steps that failed (out of memory, a model error)
        self._watch_failure_logged = Throttle()

    def has_work(self, now: float = math.inf) -> bool:
        return self.scheduler.has_work(now) or bool(self.batch.active) or self.watch_rounds.pending

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
        """This step's due watches (``WatchRounds``: a bounded batch, round-robin) in one batched forward."""

        def encoded(camera: str) -> tuple[int, tuple[int, float]] | None:
            version, end = self.core.encoded_version(camera), self.core.context_end(camera)
            return None if version is None or end is None else (version, end)

        due = self.watch_rounds.due(watches, encoded)
        if not due:
            return
        bind(camera=None, request=None)
        t0 = time.perf_counter()
        try:
            if self.watch_eval is None:
                self.watch_eval = WatchEvaluator(self.core.lm)
            queries = [self.core.watch_query(d.camera, watches[d.camera][d.watch]) for d in due]
            probabilities = self.watch_eval.probabilities(queries)
        except Exception as exc:  # a model failure or a bug: these versions go unevaluated, the engine goes on
            self.watch_failures += 1
            oom = isinstance(exc, torch.OutOfMemoryError)
            if oom and self.core.lm.device.type == "cuda":
                torch.cuda.empty_cache()
            if self._watch_failure_logged.ready():  # one line a minute, with the count
                log.error("engine.watch_failed", cameras=len({d.camera for d in due}), error=type(exc).__name__,
                          out_of_memory=oom, failures=self.watch_failures,
                          exc_info=not oom and not isinstance(exc, RuntimeError))
            self.watch_rounds.failed()
            return
        ms = (time.perf_counter() - t0) * 1e3
        for d, p in zip(due, probabilities):
            frame_id, frame_time = d.end
            result.watches.append(WatchResult(d.camera, d.watch, p, frame_id, frame_time, d.version, ms,
                                              watches[d.camera][d.watch]))
        self.watch_rounds.evaluated(due, watches)

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
