"""The daemon: wires cameras -> memory -> engine -> server and owns the lifecycle.

Three explicit phases (as uvicorn has them):

startup   check the security rules, open the frame store and the runtime camera registry, parse every camera
          URL, load the model on a thread (telling systemd to extend its start timeout), start the engine
          worker, restore each camera's memory, start the cameras, bind the server, READY=1.
serve     until SIGTERM/SIGINT; the watchdog is pinged from the event loop while the engine thread lives.
shutdown  with a deadline: STOPPING=1, stop accepting connections, cut answers in flight with a
          ``shutting_down`` error, stop the cameras and flush each memory's waiting frame, stop the engine
          thread, release the GPU, close the store.

The daemon is also the ``Service`` that connections call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Origin

from livewatch.camera_runtime import CameraRuntime
from livewatch.capture.source import parse_source
from livewatch.config import Settings
from livewatch.engine.core import Answer, EncodeReport, EngineCore
from livewatch.engine.generate import SamplingParams
from livewatch.engine.loading import LoadedModel, load_model
from livewatch.engine.preprocess import target_size
from livewatch.engine.worker import EngineWorker
from livewatch.errors import CameraError, ConfigError, RequestError, StorageError
from livewatch.log import get_logger, redact_url
from livewatch.memory.camera import CameraMemory, MemoryParams
from livewatch.memory.store import FrameStore
from livewatch.metrics import Metrics
from livewatch.registry import CameraRegistry
from livewatch.sdnotify import Notifier
from livewatch.server.handler import Connection, InflightCounter, ServerLimits
from livewatch.server.http import make_process_request

log = get_logger("livewatch.daemon")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Daemon:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.shutting_down = False
        self.lm: LoadedModel | None = None
        self.worker: EngineWorker | None = None
        self.store: FrameStore | None = None
        self.registry = CameraRegistry(settings.state_dir)
        self.cameras: dict[str, CameraRuntime] = {}
        self.connections: set[Connection] = set()
        self.server: Server | None = None
        self.metrics = Metrics(self.status)
        srv = settings.server
        self.limits = ServerLimits(
            max_message_bytes=srv.max_message_bytes,
            max_question_chars=srv.max_question_chars,
            max_tokens=settings.model.max_new_tokens_limit,
            default_tokens=settings.model.max_new_tokens,
            per_connection=srv.max_inflight_per_connection,
            total=srv.max_inflight_total,
        )
        self.inflight = InflightCounter(self.limits.total)
        self._stop = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._camera_lock = asyncio.Lock()
        self.bound_port: int | None = None

    # -- phase 1: startup ---------------------------------------------------------------------------------------

    def check_security(self) -> None:
        srv = self.settings.server
        if not is_loopback(srv.host) and not self.settings.token:
            raise ConfigError(
                f"{self.settings.source}: server.host = {srv.host!r} is not a loopback address, so a token is "
                f"required: set the environment variable {srv.token_env} or server.token_file"
            )

    def _ssl_context(self) -> ssl.SSLContext | None:
        srv = self.settings.server
        if not srv.tls_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(srv.tls_cert, srv.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{self.settings.source}: server.tls_cert/tls_key: cannot load: {exc}") from exc
        return ctx

    async def startup(self) -> None:
        s = self.settings
        self.check_security()
        tls = self._ssl_context()
        try:
            s.state_dir.mkdir(parents=True, exist_ok=True)
            self.store = FrameStore(s.state_dir)
        except (OSError, StorageError) as exc:
            log.error("store.unavailable", error=str(exc), state_dir=str(s.state_dir))
            self.store = None  # frames stay in RAM; status shows disk_cache_enabled = false
        try:
            self.registry.load()
        except StorageError as exc:
            raise ConfigError(str(exc)) from exc
        cameras = self.registry.effective(s.cameras)
        specs = {}
        for cam in cameras:
            try:
                specs[cam.name] = parse_source(cam.url, timeout_s=s.capture.open_timeout_s)
            except CameraError as exc:
                raise ConfigError(f"{s.source}: cameras.{cam.name}.url: {exc}") from exc

        self.notifier.status("loading the model")
        self.notifier.extend_timeout(600)
        t0 = time.perf_counter()
        m = s.model
        self.lm = await asyncio.to_thread(
            load_model, m.id, m.device, m.dtype, m.attn_implementation, m.min_pixels, m.max_pixels
        )
        log.info(
            "model.loaded", model=m.id, device=str(self.lm.device), dtype=str(self.lm.dtype),
            seconds=round(time.perf_counter() - t0, 2),
        )
        if self.lm.is_tiny_random:
            log.warning(
                "model.random_weights",
                message="TINY RANDOM-WEIGHT MODEL: answers are noise; use it to try the pipeline, not to watch cameras",
            )
        core = EngineCore(
            self.lm, max_gap_s=m.max_gap_s, timezone=m.timezone, max_new_tokens_limit=m.max_new_tokens_limit
        )
        self.notifier.status("preparing the decode path")
        self.worker = EngineWorker(
            core, encode_mode=m.encode_mode, max_queued=s.server.max_inflight_total, on_encode=self._observe_encode,
            slots=m.batch_size, max_len=m.max_kv_tokens, cuda_graphs=m.cuda_graphs == "auto",
            fused_kernels=m.fused_kernels == "auto", warm_up=m.warm_up,
        )
        await asyncio.to_thread(self.worker.start)

        for name, spec in specs.items():
            await self._start_camera(name, spec)

        self.server = await serve(
            self._handle,
            s.server.host,
            s.server.port,
            process_request=make_process_request(s.token, self.health, self.metrics.render),
            origins=[None, *(Origin(o) for o in s.server.allowed_origins)],
            max_size=4 * s.server.max_message_bytes,
            compression=None,
            ssl=tls,
        )
        self.bound_port = self.server.sockets[0].getsockname()[1] if self.server.sockets else s.server.port
        if self.notifier.watchdog_interval_s:
            self._watchdog = asyncio.create_task(self._ping_watchdog(self.notifier.watchdog_interval_s))
        scheme = "wss" if tls else "ws"
        log.info(
            "daemon.ready", url=f"{scheme}://{s.server.host}:{self.bound_port}", cameras=sorted(self.cameras),
            encode_mode=m.encode_mode, auth=bool(s.token),
        )
        self.notifier.ready(f"serving {len(self.cameras)} camera(s) on port {self.bound_port}")

    def _frame_size(self) -> Callable[[int, int], tuple[int, int]]:
        assert self.lm is not None
        spec = self.lm.spec

        def size(h: int, w: int) -> tuple[int, int]:
            return target_size(h, w, spec)

        return size

    async def _start_camera(self, name: str, spec) -> None:
        s = self.settings
        frame_size = self._frame_size()  # capture converts to it, memory stores at it: the model's pixel cap
        params = MemoryParams(
            star_pairs=s.memory.star_frames // 2,
            window_pairs=s.memory.window_frames // 2,
            threshold=s.memory.importance_threshold,
            star_half_life_s=s.memory.star_half_life_s,
            jpeg_quality=s.memory.jpeg_quality,
            max_bytes=s.memory.max_bytes_per_camera,
            frame_size=frame_size,
        )
        assert self.worker is not None
        memory = CameraMemory(name, params, self.store)
        await asyncio.to_thread(memory.restore)
        runtime = CameraRuntime(
            name, spec, memory, self.worker.publish, fps=s.capture.fps, frame_size=frame_size,
            open_timeout_s=s.capture.open_timeout_s, read_timeout_s=s.capture.read_timeout_s,
        )
        self.cameras[name] = runtime
        runtime.start()
        log.info("camera.attached", camera=name, source=spec.redacted)

    def _observe_encode(self, report: EncodeReport) -> None:
        self.metrics.encode.observe(report.encode_ms / 1e3)

    async def _ping_watchdog(self, interval: float) -> None:
        while True:
            if self.worker is not None and self.worker.alive:
                self.notifier.watchdog()
            else:
                log.error("watchdog.withheld", reason="the engine thread is not alive")
            await asyncio.sleep(interval)

    # -- phase 2: serve -----------------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, self, self.limits, self.inflight, self.metrics)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    def request_stop(self, reason: str = "signal") -> None:
        if not self._stop.is_set():
            log.info("daemon.stop_requested", reason=reason)
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self.startup()
            await self._stop.wait()
        finally:
            await self.shutdown()
        return 0

    # -- phase 3: shutdown --------------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        self.notifier.stopping("stopping: cutting answers, flushing frames")
        deadline = self.settings.server.shutdown_timeout_s
        try:
            await asyncio.wait_for(self._shutdown_steps(), timeout=deadline)
        except TimeoutError:
            log.error("daemon.shutdown_deadline", seconds=deadline)
        log.info("daemon.stopped")

    async def _shutdown_steps(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.server is not None:
            self.server.close(close_connections=False)
        await asyncio.gather(*(c.shutdown() for c in list(self.connections)), return_exceptions=True)
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()
        await asyncio.gather(*(cam.stop() for cam in self.cameras.values()), return_exceptions=True)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop, 5.0)
        self._release_gpu()
        log.info("daemon.gpu_released")
        if self.store is not None:
            self.store.close()

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

    # -- the Service that connections use -----------------------------------------------------------------------

    def camera_names(self) -> list[str]:
        return sorted(self.cameras)

    async def ask(
        self, camera: str, question: str, params: SamplingParams, on_text: Callable[[str], None], request_id: str,
        client: str = "",
    ) -> Answer:
        if camera not in self.cameras:
            raise RequestError("unknown_camera", f"no camera named {camera!r}; cameras are {self.camera_names()}")
        assert self.worker is not None
        return await self.worker.ask(camera, question, params, on_text, request_id, client)

    def status(self) -> dict[str, Any]:
        engine: dict[str, Any] = self.worker.stats() if self.worker is not None else {"alive": False, "cameras": {}}
        per_camera_engine: dict[str, Any] = engine.get("cameras", {})
        memory = {}
        for name, rt in self.cameras.items():
            figures = dict(rt.memory_stats)
            eng = per_camera_engine.get(name, {})
            figures["encode_count"] = eng.get("encode_count", 0)
            figures["cache_valid"] = eng.get("cache_valid", False)
            memory[name] = figures
        return {
            "cameras": {name: rt.reader_stats() for name, rt in self.cameras.items()},
            "engine": engine,
            "memory": memory,
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        engine_up = self.worker is not None and self.worker.alive and not self.shutting_down
        states = {name: rt.reader_stats()["state"] for name, rt in self.cameras.items()}
        cameras_up = not states or any(state == "streaming" for state in states.values())
        ok = engine_up and cameras_up
        return ok, {"status": "ok" if ok else "unavailable", "engine": engine_up, "cameras": states}

    async def add_camera(self, name: str, url: str) -> str:
        async with self._camera_lock:
            if name in self.cameras:
                raise RequestError("camera_exists", f"a camera named {name!r} already exists")
            spec = parse_source(url, timeout_s=self.settings.capture.open_timeout_s)
            await asyncio.to_thread(self.registry.add, name, url)
            await self._start_camera(name, spec)
        return redact_url(url)

    async def remove_camera(self, name: str) -> None:
        async with self._camera_lock:
            runtime = self.cameras.pop(name, None)
            if runtime is None:
                raise RequestError("unknown_camera", f"no camera named {name!r}")
            await runtime.stop()
            await asyncio.to_thread(runtime.memory.delete_all)
            if self.worker is not None:
                self.worker.remove_camera(name)
            await asyncio.to_thread(self.registry.remove, name)
        log.info("camera.removed", camera=name)
