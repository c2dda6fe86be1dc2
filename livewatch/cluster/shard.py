"""One camera shard: the cameras placed on one GPU, with their capture, memory and engine (a Ray actor's body).

``ShardHost`` is the actor class (``ray.remote`` is applied by the front, so this module imports no Ray, and no
torch until the actor starts in its own process). It runs a ``LocalBackend`` (local/backend.py), the daemon's own
backend, over a store per camera under the shared store directory (local/stores.py: a camera that moves restores
its memory on the shard that takes it). Frames and KV caches stay in this process; what leaves it is small:
streamed answer text, status figures, evidence JPEGs, and watch results (the engine evaluates the watches of its
cameras, which the front's watch manager sets; the results stream to the front, whose manager decides the events
and delivers them).

Answers and searches are async generators of typed messages (cluster/messages.py); the front cancelling the
generator cancels the request here, which stops its generation between two tokens. Failures become the public
errors the daemon's own protocol gives: a request's error says what went wrong, anything else is ``internal`` and
logged here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livewatch.backend import BackendHooks
from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec
from livewatch.cluster.messages import (
    AnswerDone, AnswerItem, AnswerText, Failed, FindDone, FindItem, FindProgress, ShardAPI,
)
from livewatch.config import Settings
from livewatch.engine.results import WatchResult
from livewatch.errors import public_failure
from livewatch.log import configure_logging, get_logger
from livewatch.server.protocol import Ask
from livewatch.server.watchproto import Find

if TYPE_CHECKING:
    from livewatch.local.backend import LocalBackend

log = get_logger("livewatch.shard")

LOAD_WINDOW_S = 60.0  # the measured encode load is over this much recent time
RESULTS_KEPT = 256  # batches of watch results a shard keeps while the front does not read them


class EncodeLoad:
    """Encode seconds per second over the last ``window`` seconds (the shard's measured load)."""

    def __init__(self, window: float = LOAD_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._started = clock()
        self._encodes: deque[tuple[float, float]] = deque()

    def add(self, seconds: float) -> None:
        self._encodes.append((self._clock(), seconds))

    def busy(self) -> float:
        now = self._clock()
        while self._encodes and self._encodes[0][0] < now - self.window:
            self._encodes.popleft()
        span = min(self.window, max(now - self._started, 1.0))
        return round(sum(s for _, s in self._encodes) / span, 4)


class ShardHost(ShardAPI):
    """The shard actor: every method is called by the front (cluster/backend.py, through cluster/supervisor.py)."""

    def __init__(self, settings: Settings, shard_id: str, store_root: str) -> None:
        from livewatch.local.backend import LocalBackend  # torch: in the actor's process only
        from livewatch.local.stores import StorePerCamera

        configure_logging(settings.log.level, "json", sys.stderr)  # Ray keeps a worker's stderr in its logs
        self.shard_id = shard_id
        self.backend: LocalBackend = LocalBackend(settings, StorePerCamera(Path(store_root)))
        self.load = EncodeLoad()
        self.results: deque[Sequence[WatchResult]] = deque(maxlen=RESULTS_KEPT)  # not read by the front yet
        self._results_ready = asyncio.Event()

    async def start(self) -> dict[str, Any]:
        """Load the model and start the engine; where this shard runs."""
        await self.backend.start(BackendHooks(self._keep_results, self._engine_died, self._encoded))
        lm = self.backend.lm
        assert lm is not None
        log.info("shard.ready", shard=self.shard_id, device=str(lm.device), pid=os.getpid())
        return {"device": str(lm.device), "pid": os.getpid(), "node": _node_id()}

    def _keep_results(self, results: Sequence[WatchResult]) -> None:
        """On the event loop: kept for the front (the oldest dropped when it does not read for long)."""
        self.results.append(results)
        self._results_ready.set()

    def _engine_died(self, error: str) -> None:
        """A shard without its engine is of no use: end the process, so the front places its cameras elsewhere."""
        log.error("shard.engine_died", shard=self.shard_id, error=error)
        os.kill(os.getpid(), signal.SIGKILL)

    def _encoded(self, seconds: float, lag_s: float) -> None:
        self.load.add(seconds)

    async def attach(self, name: str, spec: SourceSpec | None, untrusted: bool, error: str | None,
                     watches: dict[str, str]) -> None:
        """Run camera ``name`` here, its memory restored from its store, evaluating ``watches`` (name -> condition)."""
        await self.backend.attach(name, spec, untrusted=untrusted, error=error, wait=True)
        self.backend.set_watches(name, watches)

    async def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        self.backend.set_watches(camera, watches)

    async def set_masks(self, camera: str, masks: Masks) -> None:
        await self.backend.set_masks(camera, masks)

    async def watch_results(self) -> AsyncIterator[list[WatchResult]]:
        """The watch results of this shard's cameras, as the engine produces them, for as long as the front reads."""
        while True:
            while not self.results:
                self._results_ready.clear()
                await self._results_ready.wait()
            batch = [r for results in self.results for r in results]
            self.results.clear()
            yield batch

    async def describe(self, camera: str, question: str, tokens: int) -> str:
        return await self.backend.describe(camera, question, tokens)

    async def detach(self, name: str, delete: bool) -> None:
        """Stop camera ``name`` here; ``delete``: its frames too (camera.remove), else they wait for its next shard."""
        if name in self.backend.cameras:
            await self.backend.detach(name, delete=delete)
            log.info("camera.detached", camera=name, deleted=delete)

    async def ask(self, request: Ask, camera: str, client: str) -> AsyncIterator[AnswerItem]:
        texts: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.backend.ask(request, camera, texts.put_nowait, client))
        task.add_done_callback(lambda _: texts.put_nowait(None))
        try:
            while (text := await texts.get()) is not None:
                ended = False
                while not texts.empty():  # one item for what piled up while the front was reading
                    more = texts.get_nowait()
                    if more is None:
                        ended = True
                        break
                    text += more
                yield AnswerText(text)
                if ended:
                    break
            failed = _failure(task, "shard.ask_failed", camera=camera, request_id=str(request.id))
            yield failed if failed is not None else AnswerDone(task.result())
        finally:
            task.cancel()

    async def find(self, request: Find) -> AsyncIterator[FindItem]:
        progress: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.backend.find(request, lambda d, t: progress.put_nowait((d, t))))
        task.add_done_callback(lambda _: progress.put_nowait(None))
        try:
            while (step := await progress.get()) is not None:
                yield FindProgress(*step)
            failed = _failure(task, "shard.find_failed", request_id=str(request.id))
            yield failed if failed is not None else FindDone(list(task.result()))
        finally:
            task.cancel()

    async def status(self) -> dict[str, Any]:
        status = self.backend.status()
        status["shard"] = {"busy": self.load.busy(), "cameras": self.backend.camera_names()}
        return status

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        return await self.backend.memory_frames(camera)

    async def evidence(self, camera: str, frame_id: int, size: int | None) -> bytes | None:
        return await self.backend.frame(camera, frame_id, size)

    async def stop(self) -> None:
        await self.backend.stop()


def _failure(task: asyncio.Future[Any], event: str, **fields: Any) -> Failed | None:
    """A finished request's public error (None: it succeeded)."""
    exc = task.exception()
    if exc is None:
        return None
    code, message = public_failure(exc if isinstance(exc, Exception) else RuntimeError(type(exc).__name__),
                                   shutting_down=False, event=event, **fields)
    return Failed(code.value, message)


def _node_id() -> str | None:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not in a Ray worker (tests of the class alone)
        return None
