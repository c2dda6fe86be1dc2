"""The daemon: wires cameras -> memory -> engine -> server and owns the lifecycle.

Three explicit phases (as uvicorn has them):

startup   lock the state directory (one daemon per directory), open the frame store and the runtime camera
          registry, parse every camera URL (a configured one that cannot work is fatal, a saved one starts
          ``failed``), load the model on a thread (telling systemd to extend its start timeout), start the engine
          worker, restore each camera's memory, start the cameras, bind the server, READY=1.
serve     until SIGTERM/SIGINT; the watchdog is pinged from the event loop while the engine thread lives.
shutdown  with a deadline: STOPPING=1, stop accepting connections, cut answers in flight with a
          ``shutting_down`` error, stop the cameras and flush each memory's waiting frame, stop the engine
          thread, release the GPU, close the store.

The daemon is also the ``Service`` that connections call.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any

from livewatch.camera_runtime import CameraRuntime
from livewatch.capture.source import SourceSpec, parse_source
from livewatch.capture.urlpolicy import resolve
from livewatch.config import Settings
from livewatch.engine.core import EncodeReport, EngineCore
from livewatch.engine.evidence import evidence_list
from livewatch.engine.generate import SamplingParams
from livewatch.engine.loading import LoadedModel, load_model
from livewatch.engine.preprocess import target_size
from livewatch.engine.worker import EngineWorker
from livewatch.errors import (
    ErrorCode,
    CameraError, ConfigError, EngineDiedError, FatalError, RequestError, StateDirBusyError, StorageError,
)
from livewatch.log import get_logger
from livewatch.memory.camera import CameraMemory
from livewatch.memory.store import FrameStore
from livewatch.metrics import Metrics
from livewatch.registry import CameraRegistry
from livewatch.sdnotify import Notifier
from livewatch.server.guard import ConnectionGuard, RateLimit
from livewatch.server.handler import Connection, InflightCounter
from livewatch.server.listener import connection_budget
from livewatch.server.openai_http import OpenAIRoutes
from livewatch.server.web import Endpoints, HttpOptions, HttpServer, WebSocket
from livewatch.server.protocol import Answered, Ask
from livewatch.statelock import StateDirLock
from livewatch.watches.manager import WatchManager
from livewatch.history_questions import ask_history
from livewatch.watch_service import WatchService, start_watches

# Descriptors kept back from connections: the frame store, each camera's socket and files, the model's files,
# Triton and CUDA. Connections get what the limit leaves (server.max_connections at most).
_FD_RESERVE = 256

log = get_logger("livewatch.daemon")


class Daemon(WatchService):
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
        self.http: HttpServer | None = None
        self.metrics = Metrics(self.status)
        srv = settings.server
        self.limits = settings.server_limits()
        self.capture = settings.capture_params()
        self.inflight = InflightCounter(self.limits.total)
        self.openai = OpenAIRoutes(self, self.limits, self.inflight, self.metrics)
        self.url_policy = settings.security.url_policy()
        self._add_rate = RateLimit(settings.security.camera_adds_per_minute, 60.0)
        self.guard = ConnectionGuard(srv.max_connections, srv.max_connections_per_peer, srv.reserved_connections)
        self.state_lock = StateDirLock(settings.state_dir)
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._camera_lock = asyncio.Lock()
        self.bound_port: int | None = None
        self.watches: WatchManager | None = None

    # -- phase 1: startup ---------------------------------------------------------------------------------------

    async def startup(self) -> None:
        s = self.settings
        tls = s.ssl_context()
        for warning in s.warnings:
            log.warning("config.warning", message=warning)
        self._open_state_dir()
        specs, errors = self._camera_specs()
        await self._start_engine()
        self.watches = self._start_watches()
        for name, spec in specs.items():
            await self._start_camera(name, spec, untrusted=name in self.registry.added, error=errors.get(name))
        if self.watches is not None:
            self.watches.warn_missing()
        await self._bind(tls)
        if self.notifier.watchdog_interval_s:
            self._watchdog = asyncio.create_task(self._ping_watchdog(self.notifier.watchdog_interval_s))
        log.info(
            "daemon.ready", url=f"{'wss' if tls else 'ws'}://{s.server.host}:{self.bound_port}",
            cameras=self.camera_names(), encode_mode=s.model.encode_mode, auth=bool(s.token),
        )
        self.notifier.ready(f"serving {len(self.camera_names())} camera(s) on port {self.bound_port}")

    def _start_watches(self) -> WatchManager | None:
        assert self.worker is not None
        store = self.store

        def read_frame(camera: str, frame_id: int) -> bytes | None:
            return store.read_frame(camera, frame_id) if store is not None else None

        return start_watches(self.settings, self.worker.set_watches, self.camera_names, read_frame, self._describe,
                             self.metrics, self.inflight)

    def _camera_specs(self) -> tuple[dict[str, SourceSpec | None], dict[str, str]]:
        """Every camera's open arguments. A configured camera that cannot work is a config error; a saved one
        (added over the API) starts failed with its error; an unreadable registry is moved aside."""
        s = self.settings
        try:
            self.registry.load()
        except StorageError as exc:  # only the config file may stop the daemon: start without the saved cameras
            aside = self.registry.move_aside()
            log.error("registry.unreadable", error=str(exc), moved_to=str(aside) if aside else None)
        specs: dict[str, SourceSpec | None] = {}
        errors: dict[str, str] = {}
        for cam in self.registry.effective(s.cameras):
            saved = cam.name in self.registry.added
            try:
                if saved and len(specs) >= s.security.max_cameras:  # a planted or old list: the bound holds here too
                    raise CameraError("over security.max_cameras; not started")
                specs[cam.name] = self._parse(cam.url, api=saved)
            except CameraError as exc:
                if not saved:
                    raise ConfigError(f"{s.source}: cameras.{cam.name}.url: {exc}") from exc
                specs[cam.name], errors[cam.name] = None, str(exc)
                log.error("camera.saved_unusable", camera=cam.name, error=str(exc))
        return specs, errors

    async def _start_engine(self) -> None:
        """Load the model on a thread (telling systemd to wait), then start the engine thread (graphs, warm-up)."""
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
        self.worker = EngineWorker(core, self.settings.engine_options(), on_encode=self.observe_encode,
                                   on_death=self._engine_died, on_watches=self._watch_results)
        await asyncio.to_thread(self.worker.start)

    async def _bind(self, tls: ssl.SSLContext | None) -> None:
        srv = self.settings.server
        self.guard.total = connection_budget(srv.max_connections, _FD_RESERVE + 8 * len(self.camera_names()))
        self.http = HttpServer(
            Endpoints(self.health, self.metrics.render, self._evidence, self._handle),
            HttpOptions(self.settings.token, tuple(srv.allowed_origins), srv.max_message_bytes,
                        srv.handshake_timeout_s, srv.session_hours * 3600),
            self.guard,
        )
        self.openai.add_to(self.http.app)
        self.bound_port = await self.http.start(srv.host, srv.port, tls)

    def _open_state_dir(self) -> None:
        """Lock the state directory (fatal if another daemon holds it), then open the frame store. A directory that
        cannot be written leaves the daemon running from RAM (status: disk_cache_enabled = false)."""
        s = self.settings
        if not self._lock_state_dir():
            return
        try:
            self.store = FrameStore(s.state_dir)
        except StorageError as exc:
            log.error("store.unavailable", error=str(exc), state_dir=str(s.state_dir))
            self.store = None

    def _lock_state_dir(self) -> bool:
        """Create and lock the state directory; False (logged) when it cannot be written."""
        s = self.settings
        try:
            s.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.state_lock.acquire()
        except StateDirBusyError:
            raise
        except OSError as exc:
            log.error("store.unavailable", error=str(exc), state_dir=str(s.state_dir))
            return False
        return True

    def _parse(self, url: str, *, api: bool) -> SourceSpec:
        """A camera URL to open arguments; ``api``: added over the API, so the API's scheme policy applies."""
        return parse_source(url, timeout_s=self.capture.open_timeout_s, limits=self.capture.limits,
                            scheme_check=self.url_policy.check_scheme if api else None)

    def _network_check(self, spec: SourceSpec) -> Callable[[], None] | None:
        """For an API camera's host: resolve it and check every address against the network policy (run by the
        reader before every connect, so a name that starts resolving elsewhere is caught at the next one)."""
        host = spec.host
        if host is None:
            return None

        def check() -> None:
            self.url_policy.check_addresses(resolve(host))

        return check

    def _frame_size(self) -> Callable[[int, int], tuple[int, int]]:
        assert self.lm is not None
        spec = self.lm.spec

        def size(h: int, w: int) -> tuple[int, int]:
            return target_size(h, w, spec)

        return size

    async def _start_camera(
        self, name: str, spec: SourceSpec | None, *, untrusted: bool = False, error: str | None = None
    ) -> None:
        frame_size = self._frame_size()  # capture converts to it, memory stores at it: the model's pixel cap
        params = self.settings.memory_params(frame_size)
        assert self.worker is not None
        memory = CameraMemory(name, params, self._store_for(name))
        await asyncio.to_thread(memory.restore)  # a store it cannot read leaves it running from RAM (logged)
        runtime = CameraRuntime(
            name, spec, memory, self.worker.publish, self.capture, frame_size=frame_size,
            connect_check=self._network_check(spec) if untrusted and spec is not None else None,
            untrusted=untrusted, start_error=error,
        )
        self.cameras[name] = runtime
        runtime.start()
        log.info("camera.attached", camera=name, source=spec.redacted if spec else None, failed=spec is None)

    def _store_for(self, camera: str) -> FrameStore | None:
        """The frame store of ``camera``'s memory: the daemon's one store (a cluster shard has one per camera)."""
        return self.store

    def _engine_died(self, error: str) -> None:
        """Called on the dead engine thread: stop the daemon with a non-zero exit (systemd restarts it)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fail, EngineDiedError(f"the engine thread died ({error})"))

    def _fail(self, exc: FatalError) -> None:
        if self.exit_code == 0:
            self.exit_code = exc.exit_code
            log.error("daemon.fatal", error=str(exc), exit_code=exc.exit_code)
        self.request_stop("fatal error")

    def observe_encode(self, report: EncodeReport) -> None:
        self.metrics.encode.observe(report.encode_ms / 1e3)
        self.metrics.encode_lag.observe(report.lag_s)

    async def _ping_watchdog(self, interval: float) -> None:
        while True:
            if self._engine_alive():
                self.notifier.watchdog()
            else:
                log.error("watchdog.withheld", reason="the engine is not alive")
            await asyncio.sleep(interval)

    def _engine_alive(self) -> bool:
        return self.worker is not None and self.worker.alive

    # -- phase 2: serve -----------------------------------------------------------------------------------------

    async def _handle(self, ws: WebSocket) -> None:
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
        """Serve until a signal or a fatal error; the exit code (0, or the fatal error's) for main()."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self.startup()
            await self._stop.wait()
        finally:
            await self.shutdown()
        return self.exit_code

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
        if self.http is not None:
            self.http.stop_accepting()
        await asyncio.gather(*(c.shutdown() for c in list(self.connections)), self.openai.shutdown(),
                             return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        await self._stop_cameras_and_engine()
        self.state_lock.release()

    async def _stop_cameras_and_engine(self) -> None:
        await asyncio.gather(*(cam.stop() for cam in self.cameras.values()), return_exceptions=True)
        if self.watches is not None:
            await self.watches.stop()
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

    async def ask(self, request: Ask, camera: str, on_text: Callable[[str], None], client: str) -> Answered:
        if camera not in self.cameras:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA,
                               f"no camera named {camera!r}; cameras are {self.camera_names()}")
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
            return await ask_history(self, request, camera, params, on_text, client)
        answer = await self.worker.ask(camera, request.question, params, on_text, str(request.id), client)
        return Answered(answer.text, answer.metrics, answer.evidence)

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
            "watches": self.watches.stats() if self.watches is not None else {},
            "server": {"connections": len(self.connections), "questions_in_flight": self.inflight.count,
                       "questions_limit": self.inflight.limit, "tcp_connections": self.guard.open,
                       "tcp_unauthenticated": self.guard.unproven, "tcp_evicted": self.guard.evicted},
        }

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        runtime = self.cameras.get(camera)
        if runtime is None:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {camera!r}")
        return evidence_list(camera, runtime.context, None)

    def health(self) -> tuple[bool, dict[str, Any]]:
        engine_up = self._engine_alive() and not self.shutting_down
        states = {name: rt.reader_stats()["state"] for name, rt in self.cameras.items()}
        cameras_up = not states or any(state == "streaming" for state in states.values())
        ok = engine_up and cameras_up
        return ok, {"status": "ok" if ok else "unavailable", "engine": engine_up, "cameras": states}

    async def add_camera(self, name: str, url: str) -> str:
        """Attach a camera from the API: bounded in count and rate, the API's URL policy checked (scheme, then
        every address its host resolves to). Refusals by policy give the client one generic message; the
        log has the detail."""
        sec = self.settings.security
        async with self._camera_lock:
            if name in self.camera_names():
                raise RequestError(ErrorCode.CAMERA_EXISTS, f"a camera named {name!r} already exists")
            if len(self.camera_names()) >= sec.max_cameras:
                raise RequestError(ErrorCode.TOO_MANY_CAMERAS, f"this daemon watches at most {sec.max_cameras} cameras "
                                   f"(security.max_cameras)")
            if not self._add_rate.allow():
                raise RequestError(ErrorCode.RATE_LIMITED, f"at most {sec.camera_adds_per_minute} camera.add per minute; "
                                   f"retry in {self._add_rate.retry_after():.0f} s")
            spec = self._parse(url, api=True)
            check = self._network_check(spec)
            if check is not None:
                try:
                    await asyncio.wait_for(asyncio.to_thread(check), timeout=self.capture.open_timeout_s)
                except (CameraError, TimeoutError) as exc:
                    log.warning("camera.add_refused", camera=name, source=spec.redacted,
                                reason=str(exc) or "the host name did not resolve in time")
                    raise CameraError("the camera's host is not allowed by this daemon's network policy or "
                                      "does not resolve") from None
            await asyncio.to_thread(self.registry.add, name, url)
            await self._start_camera(name, spec, untrusted=True)
            if self.watches is not None:
                self.watches.camera_changed(name)
        return spec.redacted

    async def remove_camera(self, name: str) -> None:
        async with self._camera_lock:
            runtime = self.cameras.pop(name, None)
            if runtime is None:
                raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
            await runtime.stop()
            await asyncio.to_thread(runtime.memory.delete_all)
            if self.worker is not None:
                self.worker.remove_camera(name)
            if self.watches is not None:
                self.watches.camera_changed(name)
            configured = any(c.name == name for c in self.settings.cameras)
            await asyncio.to_thread(self.registry.remove, name, configured)
        log.info("camera.removed", camera=name)
