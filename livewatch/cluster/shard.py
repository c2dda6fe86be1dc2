"""One camera shard: the cameras placed on one GPU, with their capture, memory and engine (a Ray actor's body).

``ShardHost`` is the actor class (``ray.remote`` is applied by the front, so this module imports no Ray). It runs a
``ShardDaemon``: the daemon's camera, memory and engine parts without the server, the watch manager or the state
directory. Frames and KV caches stay in this process; what leaves it is small: streamed answer text, status
figures, evidence JPEGs, and watch results (the engine evaluates the watches of its cameras, which the front's
watch manager sets; the results stream to the front, whose manager decides the events and delivers them).

Each camera has a frame store of its own under the shared store directory, ``<store_dir>/cameras/<name>/``, so a
camera that moves (its shard lost, or a rebalance) restores its star memory and stream window on the shard that
takes it, and one SQLite index is only ever written by the one shard that runs the camera.

An answer is an async generator of plain dictionaries (``{"text": ...}`` as the engine streams, then
``{"answer": ...}`` or ``{"error": code, "message": ...}``); the front cancelling the generator cancels the
question here, which stops its generation between two tokens. Failures become the same public errors the
daemon's own protocol gives: a request's error says what went wrong, anything else is ``internal`` and logged here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from livewatch.capture.source import SourceSpec
from livewatch.config import Settings
from livewatch.daemon import Daemon
from livewatch.engine.core import EncodeReport
from livewatch.engine.watcheval import WatchResult
from livewatch.errors import ErrorCode, RequestError, StorageError
from livewatch.log import configure_logging, get_logger
from livewatch.memory.jpegfile import thumbnail
from livewatch.memory.rebuild import camera_dir, read_frame_file
from livewatch.memory.store import FrameStore
from livewatch.names import is_camera_name
from livewatch.server.handler import public_failure
from livewatch.server.protocol import Ask
from livewatch.server.watchproto import Find

log = get_logger("livewatch.shard")

LOAD_WINDOW_S = 60.0  # the measured encode load is over this much recent time
RESULTS_KEPT = 256  # batches of watch results a shard keeps while the front does not read them


def camera_store_dir(store_root: Path, camera: str) -> Path:
    if not is_camera_name(camera):  # never a path out of the store (the protocol checked it already)
        raise ValueError(f"invalid camera name: {camera[:80]!r}")
    return store_root / "cameras" / camera


def stored_frame(store_root: Path, camera: str, frame_id: int) -> bytes | None:
    """A frame of ``camera`` read from the shared store (by any process, while its shard writes)."""
    return read_frame_file(camera_dir(camera_store_dir(store_root, camera), camera), frame_id)


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


class ShardDaemon(Daemon):
    """The daemon's cameras and engine, without a server, a watch manager or a state directory of its own."""

    def __init__(self, settings: Settings, shard_id: str, store_root: Path) -> None:
        super().__init__(settings)
        self.shard_id = shard_id
        self.store_root = store_root
        self.stores: dict[str, FrameStore] = {}
        self.load = EncodeLoad()
        self.results: deque[list[WatchResult]] = deque(maxlen=RESULTS_KEPT)  # watch results the front has not read
        self._results_ready = asyncio.Event()

    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._start_engine()

    def _watch_results(self, results: list[WatchResult]) -> None:
        """On the engine thread: kept for the front (the oldest dropped when it does not read for long)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._keep_results, results)

    def _keep_results(self, results: list[WatchResult]) -> None:
        self.results.append(results)
        self._results_ready.set()

    async def next_results(self) -> list[WatchResult]:
        """Every watch result kept since the last call (waits for one)."""
        while not self.results:
            self._results_ready.clear()
            await self._results_ready.wait()
        batch = [r for results in self.results for r in results]
        self.results.clear()
        return batch

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        if self.worker is not None:
            self.worker.set_watches(camera, watches)

    async def describe(self, camera: str, question: str, tokens: int) -> str:
        return await self._describe(camera, question, tokens)

    def _store_for(self, camera: str) -> FrameStore | None:
        return self.stores.get(camera)  # opened by attach, on a thread

    def _open_store(self, camera: str) -> FrameStore | None:
        """The camera's own store (its check, or a rebuild of a damaged index, may take a while)."""
        try:
            return FrameStore(camera_store_dir(self.store_root, camera))
        except StorageError as exc:  # the camera runs from RAM (status: disk_cache_enabled = false)
            log.error("store.unavailable", camera=camera, error=str(exc))
            return None

    def observe_encode(self, report: EncodeReport) -> None:
        super().observe_encode(report)
        self.load.add(report.encode_ms / 1e3)

    def _engine_died(self, error: str) -> None:
        """A shard without its engine is of no use: end the process, so the front places its cameras elsewhere."""
        log.error("shard.engine_died", shard=self.shard_id, error=error)
        os.kill(os.getpid(), signal.SIGKILL)

    async def attach(self, name: str, spec: SourceSpec | None, untrusted: bool, error: str | None) -> None:
        if name in self.cameras:
            return
        store = await asyncio.to_thread(self._open_store, name)
        if store is not None:
            self.stores[name] = store
        await self._start_camera(name, spec, untrusted=untrusted, error=error)

    async def detach(self, name: str, *, delete: bool) -> None:
        runtime = self.cameras.pop(name, None)
        if runtime is None:
            return
        await runtime.stop()
        if delete:
            await asyncio.to_thread(runtime.memory.delete_all)
        if self.worker is not None:
            self.worker.remove_camera(name)
        store = self.stores.pop(name, None)
        if store is not None:
            store.close()
        if delete:
            await asyncio.to_thread(shutil.rmtree, camera_store_dir(self.store_root, name), True)
        log.info("camera.detached", camera=name, deleted=delete)

    async def stop(self) -> None:
        await asyncio.gather(*(self.detach(name, delete=False) for name in list(self.cameras)),
                             return_exceptions=True)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop, 5.0)
        self._release_gpu()


class ShardHost:
    """The shard actor: every method is called by the front (livewatch/cluster/front.py)."""

    def __init__(self, settings: Settings, shard_id: str, store_root: str) -> None:
        configure_logging(settings.log.level, "json", sys.stderr)  # Ray keeps a worker's stderr in its logs
        self.shard_id = shard_id
        self.daemon = ShardDaemon(settings, shard_id, Path(store_root))

    async def start(self) -> dict[str, Any]:
        """Load the model and start the engine; where this shard runs."""
        await self.daemon.startup()
        lm = self.daemon.lm
        assert lm is not None
        log.info("shard.ready", shard=self.shard_id, device=str(lm.device), pid=os.getpid())
        return {"device": str(lm.device), "pid": os.getpid(), "node": _node_id()}

    async def attach(self, name: str, spec: SourceSpec | None, untrusted: bool, error: str | None,
                     watches: dict[str, str]) -> None:
        """Run camera ``name`` here, its memory restored from its store, evaluating ``watches`` (name -> condition)."""
        await self.daemon.attach(name, spec, untrusted, error)
        self.daemon.set_watches(name, watches)

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        self.daemon.set_watches(camera, watches)

    async def watch_results(self) -> AsyncIterator[list[WatchResult]]:
        """The watch results of this shard's cameras, as the engine produces them, for as long as the front reads."""
        while True:
            yield await self.daemon.next_results()

    async def describe(self, camera: str, question: str, tokens: int) -> str:
        return await self.daemon.describe(camera, question, tokens)

    async def detach(self, name: str, delete: bool) -> None:
        """Stop camera ``name`` here; ``delete``: its frames too (camera.remove), else they wait for its next shard."""
        await self.daemon.detach(name, delete=delete)

    async def ask(self, request: Ask, camera: str, client: str) -> AsyncIterator[dict[str, Any]]:
        texts: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.daemon.ask(request, camera, texts.put_nowait, client))
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
                yield {"text": text}
                if ended:
                    break
            yield _result(task, "shard.ask_failed", camera=camera, request_id=str(request.id))
        finally:
            task.cancel()

    async def find(self, request: Find) -> AsyncIterator[dict[str, Any]]:
        progress: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.daemon.find(request, lambda d, t: progress.put_nowait((d, t))))
        task.add_done_callback(lambda _: progress.put_nowait(None))
        try:
            while (step := await progress.get()) is not None:
                yield {"progress": step}
            yield _result(task, "shard.find_failed", request_id=str(request.id))
        finally:
            task.cancel()

    def status(self) -> dict[str, Any]:
        status = self.daemon.status()
        status["shard"] = {"busy": self.daemon.load.busy(), "cameras": sorted(self.daemon.cameras)}
        return status

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        return await self.daemon.memory_frames(camera)

    async def evidence(self, camera: str, frame_id: int, size: int | None) -> bytes | None:
        store = self.daemon.stores.get(camera)
        if store is None:
            return None
        data = await asyncio.to_thread(store.read_frame, camera, frame_id)
        if data is not None and size is not None:
            data = await asyncio.to_thread(thumbnail, data, size)
        return data

    async def stop(self) -> None:
        await self.daemon.stop()


def _result(task: asyncio.Future[Any], event: str, **fields: Any) -> dict[str, Any]:
    """A finished request as the front receives it: its result, or its public error."""
    try:
        result = task.result()
    except Exception as exc:
        code, message = public_failure(exc, shutting_down=False, event=event, **fields)
        return {"error": code.value, "message": message}
    if isinstance(result, list):
        return {"result": result}
    return {"answer": {"text": result.text, "metrics": result.metrics, "evidence": result.evidence}}


def _node_id() -> str | None:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not in a Ray worker (tests of the class alone)
        return None


def raise_for(item: dict[str, Any]) -> None:
    """The front's side of ``_result``: an error item becomes the RequestError its client sees."""
    if "error" in item:
        try:
            code = ErrorCode(item["error"])
        except ValueError:
            code = ErrorCode.INTERNAL
        raise RequestError(code, str(item.get("message", "")))
