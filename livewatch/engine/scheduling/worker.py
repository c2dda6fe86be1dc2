"""The thread that owns the model, and its hand-off to asyncio.

One named thread ("livewatch-engine") runs every EngineCore call; the event loop never waits on the GPU. The loop
side submits work to the ``Scheduler`` under a condition variable and awaits an asyncio future that the worker
completes with ``loop.call_soon_threadsafe``. Streamed text goes the same way, to a callback run on the loop.

The thread repeats one ``EngineLoop`` step: the plan is taken under the lock (pure bookkeeping: contexts,
admissions, an encode; the policy lives in scheduler.py), the model work runs outside it, and the outcomes
complete their futures. At start the thread captures the CUDA graphs of the decode path (reported in the log and
in status) and runs a synthetic camera through every path (warmup.py), before the daemon says it is ready.

A question whose awaiting task is cancelled (its client went away) sets an Event that is checked before every
decode step. A model failure fails only the jobs it touched (EngineError); the worker keeps serving. Shutdown
fails every waiting and running question with CancelledRequest and joins the thread.

If the thread dies anyway (a bug outside the per-job guards), its death is a message, not a hang: it logs
``engine.thread_died`` with the traceback, fails every waiting and running question with EngineError, refuses new
ones, and calls ``on_death`` so the daemon exits non-zero and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from livewatch.engine.scheduling import warmup
from livewatch.engine.batch import BatchDecoder, Outcome
from livewatch.engine.answer import Answer
from livewatch.engine.core import EncodeReport, EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.scheduling.loop import EngineLoop, StepResult
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.engine.scheduling.scheduler import AskJob, Scheduler
from livewatch.engine.results import WatchResult
from livewatch.errors import CancelledRequest, EngineError, LivewatchError
from livewatch.frames import FramePair
from livewatch.log import Throttle, bind, get_logger

log = get_logger("livewatch.engine")


class EngineWorker:
    def __init__(
        self,
        core: EngineCore,
        options: EngineOptions = EngineOptions(),
        *,
        on_encode: Callable[[EncodeReport], None] | None = None,
        on_death: Callable[[str], None] | None = None,
        on_watches: Callable[[list[WatchResult]], None] | None = None,
    ) -> None:
        self.core = core
        self._on_death = on_death
        self.died: str | None = None
        self._on_encode = on_encode
        self._on_watches = on_watches  # called on the engine thread with each step's watch results
        self._scores: dict[str, _LoopResult] = {}  # contexts of score() -> their caller
        self.eager = options.encode_mode == "eager"
        self.batch = BatchDecoder(core, options.slots, options.max_len, options.cuda_graphs,
                                  fused_kernels=options.fused_kernels)
        self._sched = Scheduler(max_queued=options.max_queued, encode_batch=options.encode_batch,
                                encode_gather_s=options.encode_gather_s)
        self.loop = EngineLoop(core, self.batch, self._sched, stopping=lambda: self._stopping,
                               encode_tokens=options.encode_step_tokens, watch_batch=options.watch_batch)
        self.lag_warning_s = options.lag_warning_s
        self._lag_warned = Throttle()  # a line per camera a minute
        self._cond = threading.Condition()
        self._stopping = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livewatch-engine", daemon=True)
        self._stats: dict[str, Any] = core.stats()
        self._decoder_stats: dict[str, Any] = self.batch.stats()
        self._stats_at = 0.0
        self._busy_since: float | None = None
        self.busy_total_s = 0.0  # seconds the thread spent running steps (the GPU's share of wall time)
        self._in_step: dict[str, float] = {}  # cameras the running step encodes or updates -> stale since
        self._stale: dict[str, float] = {}  # the core's stale prefixes after the last step -> since when
        self.jobs_done = 0
        self.jobs_failed = 0
        self.capture_error: str | None = None
        self.warm_up = options.warm_up
        self.warm_up_report: dict[str, Any] = {}

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start the thread and wait until its decode path is ready (graphs captured, or eager)."""
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Fail waiting questions, stop running ones, join. True if the thread ended."""
        with self._cond:
            self._stopping = True
            waiting = self._sched.drain_asks()
            self._cond.notify_all()
        for job in waiting:
            self._fail(job, CancelledRequest("the daemon is shutting down"))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- submitting work (any thread) ---------------------------------------------------------------------------

    def publish(self, camera: str, pairs: Sequence[FramePair], version: int) -> None:
        """A new context for ``camera``; supersedes a pending one. Eager mode also queues its encode."""
        with self._cond:
            self._sched.push_context(camera, pairs, version, eager=self.eager, now=time.monotonic())
            self._cond.notify()

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        """The watches of ``camera`` (name -> condition), evaluated on each new prefix version; the camera is
        encoded eagerly while it has any."""
        with self._cond:
            self._sched.set_watches(camera, watches)
            self._cond.notify()

    async def score(self, camera: str, pairs: Sequence[FramePair], condition: str, timeout_s: float = 120.0) -> float:
        """P(yes) of ``condition`` on ``pairs`` as a context of their own (``camera``: a name no camera has),
        evaluated like a watch: encoded and evaluated together with the step's other encodes and watches, at
        their priority (questions first). The context is dropped afterwards."""
        result = _LoopResult(asyncio.get_running_loop())
        with self._cond:
            if self.died is not None:
                raise EngineError("the engine stopped; the daemon is restarting")
            self._scores[camera] = result
            self._sched.set_watches(camera, {"score": condition})
            self._sched.push_context(camera, pairs, 1, eager=True, now=time.monotonic())
            self._cond.notify()
        try:
            return float(await asyncio.wait_for(result.future, timeout_s))
        except TimeoutError:
            raise EngineError("the engine could not evaluate this part of the range in time") from None
        finally:
            with self._cond:
                self._scores.pop(camera, None)
                self._sched.set_watches(camera, {})
                self._sched.push_remove(camera)
                self._cond.notify()

    def remove_camera(self, camera: str) -> None:
        with self._cond:
            self._sched.push_remove(camera)
            self._cond.notify()

    async def ask(
        self,
        camera: str,
        question: str,
        params: SamplingParams = SamplingParams(),
        on_text: Callable[[str], None] | None = None,
        request_id: str = "",
        client: str = "",
    ) -> Answer:
        """Answer a question on the worker thread; ``on_text`` runs on the event loop with each text delta."""
        loop = asyncio.get_running_loop()
        result = _LoopResult(loop)
        cancelled = threading.Event()

        def stream(delta: str) -> None:
            if on_text is not None and not cancelled.is_set() and not loop.is_closed():
                loop.call_soon_threadsafe(on_text, delta)

        job = AskJob(
            camera=camera,
            question=question,
            params=params,
            received_at=time.perf_counter(),
            on_text=stream,
            cancelled=cancelled,
            result=result,
            id=request_id,
            client=client,
        )
        with self._cond:
            if self.died is not None:
                raise EngineError("the engine stopped; the daemon is restarting")
            if self._stopping:
                raise CancelledRequest("the daemon is shutting down")
            self._sched.push_ask(job)
            self._cond.notify()
        try:
            return await result.future
        except asyncio.CancelledError:
            cancelled.set()
            raise

    # -- figures (any thread) -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = self._sched.queued
            pending_encodes = len(self._sched.encodes)
            # stale since: the core's after the last step, contexts published but not applied yet, encodes
            # waiting, the cameras of the step running now
            stale = dict(self._stale)
            for camera, since in self._in_step.items():
                stale[camera] = min(stale.get(camera, math.inf), since)
            for camera, update in self._sched.contexts.items():
                if update is not None:
                    stale[camera] = min(stale.get(camera, math.inf), update.published_at)
            for camera, since in self._sched.encodes.items():
                stale[camera] = min(stale.get(camera, math.inf), since)
        busy = self._busy_since
        figures = self._stats
        now = time.monotonic()
        cameras = {name: {**f, "encode_lag_s": round(now - stale.get(name, now), 3)}
                   for name, f in figures.get("cameras", {}).items()}
        return {
            **figures,
            "cameras": cameras,
            "alive": self.alive,
            "died": self.died,
            "encode_mode": "eager" if self.eager else "lazy",
            "queued_questions": queued,
            "pending_encodes": pending_encodes,
            "busy_s": round(time.monotonic() - busy, 3) if busy is not None else 0.0,
            "busy_total_s": round(self.busy_total_s, 3),
            "watch_eval_failures": self.loop.watch_failures,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "decoder": {**self._decoder_stats, "capture_error": self.capture_error},
            "warm_up": self.warm_up_report,
        }

    def _refresh_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._stats_at > 0.25:  # snapshots taken here, on the engine thread, read from any
            self._stats = self.core.stats()
            self._decoder_stats = self.batch.stats()
            self._stats_at = now

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        bind(thread="engine")
        try:
            seconds = self.batch.capture()
            if seconds:
                log.info("engine.graphs_captured", seconds=round(seconds, 2), **self.batch.runner.describe())
            else:
                log.info("engine.decode_path", mode="eager", reason=f"device {self.core.lm.device.type}")
        except Exception as exc:  # capture is an optimisation: serve eagerly rather than not at all
            self.capture_error = f"{type(exc).__name__}: {exc}"
            log.exception("engine.capture_failed")
        try:
            if self.warm_up:
                self.warm_up_report = warmup.warm_up(self.core, self.batch)
                log.info("engine.warmed_up", **self.warm_up_report)
        except Exception as exc:  # an optimisation too: the first questions are slower, nothing else
            self.warm_up_report = {"error": f"{type(exc).__name__}: {exc}"}
            log.exception("engine.warm_up_failed")
        finally:
            try:
                self._refresh_stats(force=True)  # the decode path as captured and warmed up
            finally:
                self._ready.set()
        try:
            self._loop()
        except BaseException as exc:
            self._die(exc)
        finally:
            for outcome in self.batch.cancel_all(CancelledRequest("the daemon is shutting down")):
                self._resolve(outcome)

    def _die(self, exc: BaseException) -> None:
        self.died = type(exc).__name__
        log.critical("engine.thread_died", error=self.died, exc_info=exc)
        failure = EngineError("the engine stopped; the daemon is restarting")
        with self._cond:
            self._stopping = True
            waiting = self._sched.drain_asks()
        for job in waiting:
            self._fail(job, failure)
        for outcome in self.batch.cancel_all(failure):
            self._resolve(outcome)
        if self._on_death is not None:
            self._on_death(self.died)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.loop.has_work(now := time.monotonic()):
                    due = self._sched.encode_due(now)  # encodes gathering: wake when they are due
                    self._cond.wait(None if due is None else max(due - now, 0.001))
                if self._stopping:
                    return
                plan = self.loop.plan(time.monotonic())
                self._in_step = {c: u.published_at for c, u in plan.contexts.items() if u is not None}
                self._in_step.update((c, min(since, self._in_step.get(c, math.inf))) for c, since in plan.encode)
            started = self._busy_since = time.monotonic()
            result: StepResult | None = None
            try:
                result = self.loop.run(plan)
            finally:
                self._busy_since = None
                self.busy_total_s += time.monotonic() - started
                # a snapshot at most every 0.25 s while work goes on (with many cameras it costs), and when idle;
                # taken before the outcomes are handed over, so a caller that got its answer sees the step in it
                self._refresh_stats(force=not self.batch.active and not self.loop.has_work(time.monotonic()))
                stale = self.core.stale_times()  # cheap: kept exact after every step
                with self._cond:
                    self._stale, self._in_step = stale, {}
            self._finish(result)

    def _finish(self, result: StepResult) -> None:
        if result.deferred:
            with self._cond:
                self._sched.requeue(result.deferred)
        for outcome in result.answers:
            self._resolve(outcome)
        with self._cond:
            scores = dict(self._scores)
        for enc in result.encodes:
            if enc.error is not None:
                self.jobs_failed += 1
                if enc.camera in scores:
                    scores[enc.camera].fail(enc.error)
            elif enc.report is not None:
                self.jobs_done += 1
                self._check_lag(enc.camera, enc.report.lag_s)
                if self._on_encode is not None:
                    self._on_encode(enc.report)
        watches = []
        for r in result.watches:
            if r.camera in scores:
                scores[r.camera].succeed(r.probability)
            else:
                watches.append(r)
        if watches and self._on_watches is not None:
            self._on_watches(watches)

    def _check_lag(self, camera: str, lag_s: float) -> None:
        """An operator's signal that the GPU falls behind: at most one line per camera a minute."""
        if not self.eager or lag_s < self.lag_warning_s:
            return
        if self._lag_warned.ready(camera):
            log.warning("engine.encode_lagging", camera=camera, lag_s=round(lag_s, 2), bound_s=self.lag_warning_s,
                        pending_encodes=len(self._sched.encodes))

    def _resolve(self, outcome: Outcome) -> None:
        job = outcome.key
        assert isinstance(job, AskJob)
        if outcome.answer is not None:
            self.jobs_done += 1
            m = outcome.answer.metrics
            log.info("engine.answered", camera=job.camera, request=job.id, ttft_ms=m["ttft_ms"],
                     total_ms=m["total_ms"], output_tokens=m["output_tokens"])
            if job.result is not None:
                job.result.succeed(outcome.answer)
            return
        error: LivewatchError = outcome.error or EngineError("unknown failure")
        if isinstance(error, EngineError):
            self.jobs_failed += 1
            log.error("engine.ask_failed", camera=job.camera, request=job.id, error=str(error),
                      out_of_memory=error.out_of_memory)
        self._fail(job, error)

    @staticmethod
    def _fail(job: AskJob, error: BaseException) -> None:
        if job.result is not None:
            job.result.fail(error)


class _LoopResult:
    """Completes an asyncio future from another thread; ignores a future already cancelled by its waiter."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def succeed(self, value: Any) -> None:
        self._post(value, None)

    def fail(self, exc: BaseException) -> None:
        self._post(None, exc)

    def _post(self, value: Any, exc: BaseException | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._set, value, exc)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _set(self, value: Any, exc: BaseException | None) -> None:
        if self.future.done():
            return
        if exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(value)
