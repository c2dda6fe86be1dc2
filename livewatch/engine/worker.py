"""The thread that owns the model, and its hand-off to asyncio.

One named thread ("livewatch-engine") runs every EngineCore call; the event loop never waits on the GPU. The loop
side submits work through a ``Scheduler`` guarded by a condition variable and awaits an asyncio future that the
worker completes with ``loop.call_soon_threadsafe``. Streamed text goes the same way, to a callback run on the
loop. A question whose awaiting task is cancelled (its client went away) sets an Event that the decode loop checks
between tokens. A model failure fails only that job (EngineError); the worker keeps serving. Shutdown fails every
waiting question with CancelledRequest and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from livewatch.engine.core import Answer, EncodeReport, EngineCore
from livewatch.engine.generate import SamplingParams
from livewatch.engine.scheduler import AskJob, Scheduler
from livewatch.errors import CancelledRequest, EngineError, RecoverableError
from livewatch.frames import FramePair
from livewatch.log import bind, get_logger

log = get_logger("livewatch.engine")


class EngineWorker:
    def __init__(
        self,
        core: EngineCore,
        *,
        encode_mode: str = "lazy",
        max_queued: int = 32,
        on_encode: Callable[[EncodeReport], None] | None = None,
    ) -> None:
        self.core = core
        self._on_encode = on_encode
        self.eager = encode_mode == "eager"
        self._sched = Scheduler(max_queued=max_queued)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="livewatch-engine", daemon=True)
        self._stats: dict[str, Any] = core.stats()
        self._busy_since: float | None = None
        self.jobs_done = 0
        self.jobs_failed = 0

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Fail waiting questions, let the running job see its cancel flag, join. True if the thread ended."""
        with self._cond:
            self._stopping = True
            waiting = self._sched.drain_asks()
            self._cond.notify_all()
        for job in waiting:
            job.result.fail(CancelledRequest("the daemon is shutting down"))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- submitting work (any thread) ---------------------------------------------------------------------------

    def publish(self, camera: str, pairs: Sequence[FramePair], version: int) -> None:
        """A new context for ``camera``; supersedes a pending one. Eager mode also queues its encode."""
        with self._cond:
            self._sched.push_context(camera, pairs, version, eager=self.eager)
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
        )
        with self._cond:
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
            queued = len(self._sched.asks)
            pending_encodes = len(self._sched.encodes)
        busy = self._busy_since
        return {
            **self._stats,
            "alive": self.alive,
            "encode_mode": "eager" if self.eager else "lazy",
            "queued_questions": queued,
            "pending_encodes": pending_encodes,
            "busy_s": round(time.monotonic() - busy, 3) if busy is not None else 0.0,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
        }

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        bind(thread="engine")
        while True:
            with self._cond:
                while not self._stopping and not self._sched.has_work():
                    self._cond.wait()
                if self._stopping:
                    return
                contexts = self._sched.take_contexts()
                job = self._sched.next_job() if not contexts else None
            for camera, update in contexts.items():
                if update is None:
                    self.core.drop_camera(camera)
                else:
                    self.core.set_context(camera, update.pairs, update.version)
            if job is None:
                if contexts:
                    self._stats = self.core.stats()
                continue
            self._busy_since = time.monotonic()
            try:
                if isinstance(job, AskJob):
                    self._run_ask(job)
                else:
                    self._run_encode(job)
            finally:
                self._busy_since = None
                self._stats = self.core.stats()

    def _run_ask(self, job: AskJob) -> None:
        bind(camera=job.camera, request=job.id)
        if job.cancelled.is_set():
            job.result.fail(CancelledRequest("the request was cancelled"))
            return
        try:
            answer = self.core.ask(
                job.camera,
                job.question,
                job.params,
                on_text=job.on_text,
                cancelled=lambda: job.cancelled.is_set() or self._stopping,
                received_at=job.received_at,
            )
        except RecoverableError as exc:
            if isinstance(exc, EngineError):
                self.jobs_failed += 1
                log.error("engine.ask_failed", error=str(exc), out_of_memory=exc.out_of_memory)
            job.result.fail(exc)
        except Exception as exc:  # a bug must not kill the thread that serves every camera
            self.jobs_failed += 1
            log.exception("engine.ask_crashed")
            job.result.fail(EngineError(f"internal error: {type(exc).__name__}: {exc}"))
        else:
            self.jobs_done += 1
            log.info("engine.answered", **{k: answer.metrics[k] for k in ("ttft_ms", "total_ms", "output_tokens")})
            job.result.succeed(answer)

    def _run_encode(self, camera: str) -> None:
        bind(camera=camera, request=None)
        if not self.core.needs_encode(camera):
            return
        try:
            report = self.core.encode(camera)
        except RecoverableError as exc:
            self.jobs_failed += 1
            log.error("engine.encode_failed", error=str(exc))
        except Exception:
            self.jobs_failed += 1
            log.exception("engine.encode_crashed")
        else:
            self.jobs_done += 1
            if self._on_encode is not None:
                self._on_encode(report)
            log.info(
                "engine.encoded", kind=report.kind.value, encode_ms=round(report.encode_ms, 1),
                pairs_encoded=report.pairs_encoded, prefill_tokens=report.prefill_tokens,
            )


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
