"""The local camera backend: capture, memory and the engine in this process (``[cluster] backend = "local"``, and
the body of every cluster shard).

``start`` loads the model on a thread (telling systemd to extend its start timeout) and starts the engine thread
(graphs, warm-up). Each attached camera gets its memory restored from its store (``stores``: the daemon's one
store, or a shard's store per camera), a reader and a pump (local/camera.py); its context goes to the engine,
which encodes it and evaluates its watches. ``stop`` stops the cameras (each flushes its waiting frame), the engine
thread, releases the GPU and closes the stores.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

from livewatch.backend import BackendHooks
from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec
from livewatch.config import Settings
from livewatch.engine.core import EncodeReport, EngineCore
from livewatch.engine.model.evidence import evidence_list
from livewatch.engine.model.loading import LoadedModel, load_model
from livewatch.engine.prompting.preprocess import target_size
from livewatch.engine.prompting.prompt import resolve_tz
from livewatch.engine.results import SamplingParams, WatchResult
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.errors import ErrorCode, RequestError
from livewatch.local.camera import CameraRuntime
from livewatch.local.find import find
from livewatch.local.history import ask_history
from livewatch.local.stores import Stores
from livewatch.log import get_logger
from livewatch.memory.camera import CameraMemory
from livewatch.memory.jpegfile import thumbnail
from livewatch.sdnotify import Notifier
from livewatch.server.protocol import Answered, Ask
from livewatch.server.watchproto import Find

log = get_logger("livewatch.local")


class LocalBackend:
    def __init__(self, settings: Settings, stores: Stores, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.notifier = notifier or Notifier()
        self.capture = settings.capture_params()
        self.url_policy = settings.security.url_policy()
        self.tz = resolve_tz(settings.model.timezone)
        self.lm: LoadedModel | None = None
        self.worker: EngineWorker | None = None
        self.cameras: dict[str, CameraRuntime] = {}
        self._hooks: BackendHooks | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self, hooks: BackendHooks) -> None:
        self._hooks = hooks
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.stores.open)
        m = self.settings.model
        self.notifier.status("loading the model")
        self.notifier.extend_timeout(600)
        t0 = time.perf_counter()
        self.lm = await asyncio.to_thread(
            load_model, m.id, m.device, m.dtype, m.attn_implementation, m.min_pixels, m.max_pixels
        )
        log.info("model.loaded", model=m.id, device=str(self.lm.device), dtype=str(self.lm.dtype),
                 seconds=round(time.perf_counter() - t0, 2))
        if self.lm.is_tiny_random:
            log.warning(
                "model.random_weights",
                message="TINY RANDOM-WEIGHT MODEL: answers are noise; use it to try the pipeline, not to watch cameras",
            )
        core = EngineCore(self.lm, max_gap_s=m.max_gap_s, timezone=m.timezone,
                          max_new_tokens_limit=m.max_new_tokens_limit, encode_graphs=m.cuda_graphs == "auto",
                          fused_kernels=m.fused_kernels == "auto", evidence_ranking=m.evidence_ranking)
        self.notifier.status("preparing the decode path")
        self.worker = EngineWorker(core, self.settings.engine_options(), on_encode=self._encoded,
                                   on_death=hooks.on_death, on_watches=self._watch_results)
        await asyncio.to_thread(self.worker.start)

    def _encoded(self, report: EncodeReport) -> None:
        if self._hooks is not None:
            self._hooks.on_encode(report.encode_ms / 1e3, report.lag_s)

    def _watch_results(self, results: list[WatchResult]) -> None:
        """Called on the engine thread: the hook runs on the event loop, in a fresh context (not the engine
        thread's log bindings)."""
        loop, hooks = self._loop, self._hooks
        if loop is not None and not loop.is_closed() and hooks is not None:
            loop.call_soon_threadsafe(hooks.on_watch_results, results, context=contextvars.Context())

    async def stop(self, timeout: float = 5.0) -> None:
        await asyncio.gather(*(self.detach(name, delete=False) for name in list(self.cameras)),
                             return_exceptions=True)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop, timeout)
        self._release_gpu()
        log.info("daemon.gpu_released")
        self.stores.close()

    def _release_gpu(self) -> None:
        """Drop every reference to the model and its caches, then return the memory to the driver."""
        if self.lm is None:
            return
        device = self.lm.device
        self.worker = None
        self.lm = None
        if device.type == "cuda":
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()

    def alive(self) -> bool:
        return self.worker is not None and self.worker.alive

    def health(self) -> dict[str, Any]:
        states = {name: rt.reader_stats()["state"] for name, rt in self.cameras.items()}
        return {"engine": self.alive(), "cameras": states}

    # -- cameras ------------------------------------------------------------------------------------------------

    def camera_names(self) -> list[str]:
        return sorted(self.cameras)

    def has_camera(self, name: str) -> bool:
        return name in self.cameras

    async def set_masks(self, name: str, masks: Masks) -> None:
        runtime = self.cameras.get(name)
        if runtime is None:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
        runtime.set_masks(masks)

    def _network_check(self, spec: SourceSpec) -> Callable[[], None] | None:
        """For an API camera's host: resolve it and check every address against the network policy (run by the
        reader before every connect, so a name that starts resolving elsewhere is caught at the next one)."""
        host = spec.host
        if host is None:
            return None

        def check() -> None:
            self.url_policy.check_resolved(host)

        return check

    def _frame_size(self) -> Callable[[int, int], tuple[int, int]]:
        assert self.lm is not None
        spec = self.lm.spec

        def size(h: int, w: int) -> tuple[int, int]:
            return target_size(h, w, spec)

        return size

    async def attach(self, name: str, spec: SourceSpec | None, *, untrusted: bool, error: str | None,
                     wait: bool = True) -> None:
        if name in self.cameras:
            return
        assert self.worker is not None
        frame_size = self._frame_size()  # capture converts to it, memory stores at it: the model's pixel cap
        parent = None
        if spec is not None and spec.kind == "zone":
            parent = self.cameras.get(spec.target)
            if parent is None or parent.spec is None or parent.spec.kind == "zone":
                error = f"zone of {spec.target!r}: that camera is not running here (a zone's source must be a " \
                        "running camera with a URL)"
                spec, parent = None, None
        store = await asyncio.to_thread(self.stores.open_camera, name)
        memory = CameraMemory(name, self.settings.memory_params(frame_size), store)
        await asyncio.to_thread(memory.restore)  # a store it cannot read leaves it running from RAM (logged)
        runtime = CameraRuntime(
            name, spec, memory, self.worker.publish, self.capture, frame_size=frame_size,
            connect_check=self._network_check(spec) if untrusted and spec is not None else None,
            untrusted=untrusted, start_error=error,
        )
        self.cameras[name] = runtime
        runtime.start()
        if parent is not None and spec is not None:
            runtime.link(parent)
        log.info("camera.attached", camera=name, source=spec.redacted if spec else None, failed=spec is None)

    async def detach(self, name: str, *, delete: bool) -> None:
        """Stop camera ``name`` here; ``delete``: its frames too, else they stay for its next start (or shard)."""
        runtime = self.cameras.pop(name, None)
        if runtime is None:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
        for zone in [rt for rt in self.cameras.values() if rt.parent is runtime]:
            zone.unlink(error=f"its source camera {name!r} was removed")
            log.warning("camera.zone_orphaned", camera=zone.name, source=name)
        await runtime.stop()
        if delete:
            await asyncio.to_thread(runtime.memory.delete_all)
        if self.worker is not None:
            self.worker.remove_camera(name)
        await asyncio.to_thread(self.stores.close_camera, name, delete=delete)

    async def remove(self, name: str) -> None:
        await self.detach(name, delete=True)

    def _camera(self, name: str) -> CameraRuntime:
        runtime = self.cameras.get(name)
        if runtime is None:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA,
                               f"no camera named {name!r}; cameras are {self.camera_names()}")
        return runtime

    # -- requests -----------------------------------------------------------------------------------------------

    async def ask(self, request: Ask, camera: str, on_text: Callable[[str], None], client: str) -> Answered:
        runtime = self._camera(camera)
        assert self.worker is not None
        params = SamplingParams(
            max_new_tokens=request.max_tokens or self.settings.model.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            seed=request.seed,
            stop=request.stop,
        )
        if request.since is not None or request.until is not None:
            mem = self.settings.memory
            return await ask_history(runtime, self.worker, request, params, on_text, client, self.tz,
                                     (mem.star_frames + mem.window_frames) // 2)
        answer = await self.worker.ask(camera, request.question, params, on_text, str(request.id), client)
        return Answered(answer.text, answer.metrics, answer.evidence)

    async def find(self, request: Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        assert self.worker is not None
        return await find(self.cameras, self.worker, self.tz, request, progress)

    async def describe(self, camera: str, question: str, tokens: int) -> str:
        assert self.worker is not None
        answer = await self.worker.ask(camera, question, SamplingParams(max_new_tokens=tokens), None, "", "watches")
        return answer.text

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        return evidence_list(camera, self._camera(camera).context, None)

    def read_frame(self, camera: str, frame_id: int) -> bytes | None:
        store = self.stores.store_of(camera) if camera in self.cameras else None
        return store.read_frame(camera, frame_id) if store is not None else None

    async def frame(self, camera: str, frame_id: int, size: int | None) -> bytes | None:
        """Files are read and scaled on a thread."""
        try:
            data = await asyncio.to_thread(self.read_frame, camera, frame_id)
        except (OSError, ValueError):
            return None
        if data is not None and size is not None:
            data = await asyncio.to_thread(thumbnail, data, size)
        return data

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        if self.worker is not None:
            self.worker.set_watches(camera, watches)

    # -- status -------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        engine: dict[str, Any] = self.worker.stats() if self.worker is not None else {"alive": False, "cameras": {}}
        per_camera_engine: dict[str, Any] = engine.get("cameras", {})
        memory = {}
        for name, rt in self.cameras.items():
            figures = dict(rt.memory_stats)
            eng = per_camera_engine.get(name, {})
            figures["encode_count"] = eng.get("encode_count", 0)
            figures["cache_valid"] = eng.get("cache_valid", False)
            figures["newest_frame_id"] = max(rt.context, key=lambda p: p.end_time).id if rt.context else None
            memory[name] = figures
        return {
            "cameras": {name: rt.reader_stats() for name, rt in self.cameras.items()},
            "engine": engine,
            "memory": memory,
        }

