"""One synchronous engine step (vLLM v1's shape): plan with the pure scheduler, run the plan, return outcomes.

``EngineLoop.step()`` = ``run(plan())``. ``plan`` takes the scheduler's queues (pure bookkeeping; the worker
calls it under its lock), ``run`` does the model work (the worker calls it outside the lock): apply the published
contexts, admit questions (each prepared, a lazy encode included, then routed by ``scheduler.route`` into a decode
slot or onto the unbatched path), advance every decoding answer by one step, and run the planned encode. No
threads, queues or futures here: the worker (``worker.py``) owns those; warm-up, the bench and the tests drive
``step()`` directly.

A model failure fails only the jobs it touched (EngineError); a bug while admitting or stepping fails the
answers involved with a fixed message (logged with its traceback) and the loop goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livewatch.engine.batch import BatchDecoder, Outcome
from livewatch.engine.answer import Answer
from livewatch.engine.core import EncodeReport, EngineCore
from livewatch.engine.generate import SamplingParams
from livewatch.engine.scheduler import AskJob, Plan, Route, Scheduler, route
from livewatch.errors import CancelledRequest, EngineError, RecoverableError
from livewatch.log import bind, get_logger

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


class EngineLoop:
    def __init__(self, core: EngineCore, batch: BatchDecoder, scheduler: Scheduler | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.core = core
        self.batch = batch
        self.scheduler = scheduler or Scheduler()
        self._stopping = stopping

    def has_work(self) -> bool:
        return self.scheduler.has_work() or bool(self.batch.active)

    def plan(self) -> Plan:
        return self.scheduler.plan(self.batch.free_slots(), decoding=bool(self.batch.active))

    def step(self) -> StepResult:
        return self.run(self.plan())

    def run(self, plan: Plan) -> StepResult:
        result = StepResult()
        for camera, update in plan.contexts.items():
            if update is None:
                self.core.drop_camera(camera)
            else:
                self.core.set_context(camera, update.pairs, update.version)
        for job in plan.admit:
            outcome = self._admit(job)
            if outcome is not None:
                result.answers.append(outcome)
        if self.batch.active:
            result.answers.extend(self._decode())
        if plan.encode is not None:
            result.encodes.append(self._encode(plan.encode))
        return result

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

    def _encode(self, camera: str) -> EncodeOutcome:
        bind(camera=camera, request=None)
        if not self.core.needs_encode(camera):
            return EncodeOutcome(camera)
        try:
            report = self.core.encode(camera)
        except RecoverableError as exc:
            log.error("engine.encode_failed", error=str(exc))
            return EncodeOutcome(camera, error=exc)
        except Exception:
            log.exception("engine.encode_crashed")
            return EncodeOutcome(camera, error=EngineError(INTERNAL))
        log.info("engine.encoded", kind=report.kind.value, encode_ms=round(report.encode_ms, 1),
                 pairs_encoded=report.pairs_encoded, prefill_tokens=report.prefill_tokens)
        return EncodeOutcome(camera, report=report)


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
