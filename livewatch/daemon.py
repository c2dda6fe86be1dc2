"""The daemon: the server, the camera registry, the watches and the lifecycle over a camera backend.

Where the cameras and the model run is the backend's (backend.py): in this process (``local``, the default) or on
camera shards of a Ray cluster (``ray``); the daemon is the same over both. Three explicit phases (as uvicorn has
them):

startup   lock the state directory (one daemon per directory), open the runtime camera registry, parse every
          camera URL (a configured one that cannot work is fatal, a saved one starts ``failed``), start the backend
          (load the model and start the engine, or join the cluster and start its shards), start the watches,
          attach the cameras, bind the server, READY=1.
serve     until SIGTERM/SIGINT; the watchdog is pinged from the event loop while the backend's engine lives.
shutdown  with a deadline: STOPPING=1, stop accepting connections, cut answers in flight with a
          ``shutting_down`` error, stop the backend (each camera flushes its waiting frame, the engine stops, the
          GPU is released), then the watches.

The daemon is also the ``Service`` that connections call; health and status are composed here once.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from dataclasses import replace
from collections.abc import Callable, Sequence
from typing import Any

from livewatch.backend import BackendHooks, CameraBackend
from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec, parse_source
from livewatch.config import Camera, Settings
from livewatch.engine.results import WatchResult
from livewatch.errors import (
    ErrorCode,
    CameraError, ConfigError, EngineDiedError, FatalError, RequestError, StateDirBusyError, StorageError,
)
from livewatch.log import get_logger
from livewatch.memory.jpegfile import thumbnail
from livewatch.metrics import Metrics
from livewatch.registry import CameraRegistry, MaskOverrides
from livewatch.sdnotify import Notifier
from livewatch.server.guard import ConnectionGuard, RateLimit
from livewatch.server.handler import Connection
from livewatch.server.listener import connection_budget
from livewatch.server.openai_http import OpenAIRoutes
from livewatch.server.web import Endpoints, HttpOptions, HttpServer, WebSocket
from livewatch.server.protocol import Answered, Ask
from livewatch.server.service import Admission
from livewatch.server.watchproto import Find, WatchAdd
from livewatch.statelock import StateDirLock
from livewatch.watch_service import start_watches
from livewatch.digests.service import DigestPlan, DigestService
from livewatch.engine.prompting.prompt import iso_time, resolve_tz
from livewatch.watches.manager import WatchManager

# Descriptors kept back from connections: the frame store, each camera's socket and files, the model's files,
# Triton and CUDA. Connections get what the limit leaves (server.max_connections at most).
_FD_RESERVE = 256

log = get_logger("livewatch.daemon")


def make_backend(settings: Settings, notifier: Notifier, state_dir_usable: bool) -> CameraBackend:
    """The backend ``[cluster] backend`` names (imported here: a cluster's front never loads torch)."""
    if settings.cluster.backend == "ray":
        from livewatch.cluster.backend import ClusterBackend

        return ClusterBackend(settings, notifier)
    from livewatch.local.backend import LocalBackend
    from livewatch.local.stores import OneStore

    return LocalBackend(settings, OneStore(settings.state_dir if state_dir_usable else None), notifier)


class Daemon:
    def __init__(self, settings: Settings, notifier: Notifier | None = None,
                 backend: Callable[[Settings, Notifier, bool], CameraBackend] = make_backend) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self._make_backend = backend
        self.backend: CameraBackend | None = None
        self.shutting_down = False
        self.registry = CameraRegistry(settings.state_dir)
        self.masks = MaskOverrides(settings.state_dir)
        self.connections: set[Connection] = set()
        self.http: HttpServer | None = None
        self.metrics = Metrics(self.status)
        srv = settings.server
        self.limits = settings.server_limits()
        self.capture = settings.capture_params()
        self.inflight = Admission(self.limits.total)
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
        self.digests: DigestService | None = None

    # -- phase 1: startup ---------------------------------------------------------------------------------------

    async def startup(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        tls = s.ssl_context()
        for warning in s.warnings:
            log.warning("config.warning", message=warning)
        usable = self._lock_state_dir()
        specs, errors = self._camera_specs()
        backend = self.backend = self._make_backend(s, self.notifier, usable)
        await backend.start(BackendHooks(self._watch_results, self._engine_died, self._observe_encode))
        self.watches = start_watches(s, backend.set_watches, backend.camera_names, backend.read_frame,
                                     backend.describe, self.metrics, self.inflight)
        for name, spec in specs.items():
            await backend.attach(name, spec, untrusted=name in self.registry.added, error=errors.get(name), wait=False)
        self.watches.warn_missing()
        plans = {name: DigestPlan(tuple(d.cameras), d.schedule, d.question, d.max_tokens)
                 for name, d in s.digests.items()}
        self.digests = DigestService(plans, s.state_dir, resolve_tz(s.model.timezone), self._digest_ask,
                                     self.watches.publish_digest)
        self.digests.start()
        await self._bind(tls)
        if self.notifier.watchdog_interval_s:
            self._watchdog = asyncio.create_task(self._ping_watchdog(self.notifier.watchdog_interval_s))
        log.info(
            "daemon.ready", url=f"{'wss' if tls else 'ws'}://{s.server.host}:{self.bound_port}",
            cameras=self.camera_names(), encode_mode=s.model.encode_mode, auth=bool(s.token),
        )
        self.notifier.ready(f"serving {len(self.camera_names())} camera(s) on port {self.bound_port}")

    def _camera_specs(self) -> tuple[dict[str, SourceSpec | None], dict[str, str]]:
        """Every camera's open arguments. A configured camera that cannot work is a config error; a saved one
        (added over the API) starts failed with its error; an unreadable registry is moved aside."""
        s = self.settings
        try:
            self.registry.load()
        except StorageError as exc:  # only the config file may stop the daemon: start without the saved cameras
            aside = self.registry.move_aside()
            log.error("registry.unreadable", error=str(exc), moved_to=str(aside) if aside else None)
        try:
            self.masks.load()
        except StorageError as exc:  # the configured masks hold; the API's are set again by whoever set them
            aside = self.masks.move_aside()
            log.error("masks.unreadable", error=str(exc), moved_to=str(aside) if aside else None)
        specs: dict[str, SourceSpec | None] = {}
        errors: dict[str, str] = {}
        for cam in sorted(self.registry.effective(s.cameras), key=lambda c: bool(c.source)):  # zones after sources
            if cam.source:
                specs[cam.name] = SourceSpec("zone", cam.source, redacted=f"zone of {cam.source}", crop=cam.crop,
                                             masks=self.masks.masks(cam))
                continue
            saved = cam.name in self.registry.added
            try:
                if saved and len(specs) >= s.security.max_cameras:  # a planted or old list: the bound holds here too
                    raise CameraError("over security.max_cameras; not started")
                specs[cam.name] = replace(self._parse(cam.url, api=saved), masks=self.masks.masks(cam))
            except CameraError as exc:
                if not saved:
                    raise ConfigError(f"{s.source}: cameras.{cam.name}.url: {exc}") from exc
                specs[cam.name], errors[cam.name] = None, str(exc)
                log.error("camera.saved_unusable", camera=cam.name, error=str(exc))
        return specs, errors

    async def _bind(self, tls: ssl.SSLContext | None) -> None:
        srv = self.settings.server
        self.guard.total = connection_budget(srv.max_connections, _FD_RESERVE + 8 * len(self.camera_names()))
        self.http = HttpServer(
            Endpoints(self.health, self.metrics.render, self._frame, self._handle),
            HttpOptions(self.settings.token, tuple(srv.allowed_origins), srv.max_message_bytes,
                        srv.handshake_timeout_s, srv.session_hours * 3600),
            self.guard,
        )
        self.openai.add_to(self.http.app)
        self.bound_port = await self.http.start(srv.host, srv.port, tls)

    def _lock_state_dir(self) -> bool:
        """Create and lock the state directory (fatal if another daemon holds it); False (logged) when it cannot
        be written: the daemon then runs from RAM (status: disk_cache_enabled = false)."""
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

    def _engine_died(self, error: str) -> None:
        """Called on the dead engine's thread: stop the daemon with a non-zero exit (systemd restarts it)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fail, EngineDiedError(f"the engine thread died ({error})"))

    def _fail(self, exc: FatalError) -> None:
        if self.exit_code == 0:
            self.exit_code = exc.exit_code
            log.error("daemon.fatal", error=str(exc), exit_code=exc.exit_code)
        self.request_stop("fatal error")

    def _observe_encode(self, seconds: float, lag_s: float) -> None:
        self.metrics.encode.observe(seconds)
        self.metrics.encode_lag.observe(lag_s)

    def _watch_results(self, results: Sequence[WatchResult]) -> None:
        if self.watches is not None:
            self.watches.on_results(results)

    async def _ping_watchdog(self, interval: float) -> None:
        while True:
            if self._engine_alive():
                self.notifier.watchdog()
            else:
                log.error("watchdog.withheld", reason="the engine is not alive")
            await asyncio.sleep(interval)

    def _engine_alive(self) -> bool:
        return self.backend is not None and self.backend.alive()

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
        if self.backend is not None:
            await self.backend.stop(max(1.0, self.settings.server.shutdown_timeout_s / 2))
        if self.digests is not None:
            await self.digests.stop()
        if self.watches is not None:
            await self.watches.stop()
        self.state_lock.release()

    # -- the Service that connections use -----------------------------------------------------------------------

    def _backend(self) -> CameraBackend:
        if self.backend is None:
            raise RequestError(ErrorCode.SHUTTING_DOWN, "the daemon is not serving")
        return self.backend

    def camera_names(self) -> list[str]:
        return self.backend.camera_names() if self.backend is not None else []

    async def ask(self, request: Ask, camera: str, on_text: Callable[[str], None], client: str) -> Answered:
        return await self._backend().ask(request, camera, on_text, client)

    async def find(self, request: Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        return await self._backend().find(request, progress)

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        return await self._backend().memory_frames(camera)

    async def _frame(self, camera: str, frame_id: int, size: int | None = None) -> bytes | None:
        """A frame for GET /frames/CAMERA/ID.jpg: an event's evidence (kept here) or a stored frame of the
        camera; ``size``: scaled to fit that many pixels (a thumbnail, without the store's metadata)."""
        if self.backend is None or not self.backend.has_camera(camera):
            return None
        kept = self.watches.kept_evidence(camera, frame_id) if self.watches is not None else None
        if kept is None:
            return await self.backend.frame(camera, frame_id, size)
        return kept if size is None else await asyncio.to_thread(thumbnail, kept, size)

    def status(self) -> dict[str, Any]:
        parts = (self.backend.status() if self.backend is not None
                 else {"cameras": {}, "engine": {"alive": False, "cameras": {}}, "memory": {}})
        return {
            **parts,
            "watches": self.watches.stats() if self.watches is not None else {},
            "server": {"connections": len(self.connections), "questions_in_flight": self.inflight.count,
                       "questions_limit": self.inflight.limit, "tcp_connections": self.guard.open,
                       "tcp_unauthenticated": self.guard.unproven, "tcp_evicted": self.guard.evicted},
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Up: the engine answers, and no camera is configured or one streams."""
        figures: dict[str, Any] = (self.backend.health() if self.backend is not None
                                   else {"engine": False, "cameras": {}})
        engine_up = bool(figures["engine"]) and not self.shutting_down
        states: dict[str, Any] = figures["cameras"]
        ok = engine_up and (not states or "streaming" in states.values())
        return ok, {"status": "ok" if ok else "unavailable", **figures, "engine": engine_up, "cameras": states}

    async def add_camera(self, name: str, url: str) -> str:
        """Attach a camera from the API: bounded in count and rate, the API's URL policy checked (scheme, then
        every address its host resolves to). Refusals by policy give the client one generic message; the
        log has the detail."""
        sec = self.settings.security
        backend = self._backend()
        async with self._camera_lock:
            if backend.has_camera(name):
                raise RequestError(ErrorCode.CAMERA_EXISTS, f"a camera named {name!r} already exists")
            if len(self.camera_names()) >= sec.max_cameras:
                raise RequestError(ErrorCode.TOO_MANY_CAMERAS, f"this daemon watches at most {sec.max_cameras} cameras "
                                   f"(security.max_cameras)")
            if not self._add_rate.allow():
                raise RequestError(ErrorCode.RATE_LIMITED, f"at most {sec.camera_adds_per_minute} camera.add per minute; "
                                   f"retry in {self._add_rate.retry_after():.0f} s")
            spec = self._parse(url, api=True)
            if spec.host is not None:
                host = spec.host
                try:
                    await asyncio.wait_for(asyncio.to_thread(self.url_policy.check_resolved, host),
                                           timeout=self.capture.open_timeout_s)
                except (CameraError, TimeoutError) as exc:
                    log.warning("camera.add_refused", camera=name, source=spec.redacted,
                                reason=str(exc) or "the host name did not resolve in time")
                    raise CameraError("the camera's host is not allowed by this daemon's network policy or "
                                      "does not resolve") from None
            await asyncio.to_thread(self.registry.add, name, url)
            await backend.attach(name, spec, untrusted=True, error=None, wait=True)
            if self.watches is not None:
                self.watches.camera_changed(name)
        return spec.redacted

    async def remove_camera(self, name: str) -> None:
        backend = self._backend()
        async with self._camera_lock:
            if not backend.has_camera(name):
                raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
            await backend.remove(name)
            if self.watches is not None:
                self.watches.camera_changed(name)
            configured = any(c.name == name for c in self.settings.cameras)
            await asyncio.to_thread(self.registry.remove, name, configured)
            await asyncio.to_thread(self.masks.forget, name)
        log.info("camera.removed", camera=name)

    async def _digest_ask(self, camera: str, question: str, since: float, until: float,
                          max_tokens: int) -> tuple[str, list[dict[str, Any]]]:
        tz = resolve_tz(self.settings.model.timezone)
        request = Ask(id="digest", camera=camera, question=question, max_tokens=max_tokens,
                      since=iso_time(since, tz), until=iso_time(until, tz))
        answered = await self.ask(request, camera, lambda _: None, "digest")
        return answered.text, answered.evidence

    async def run_digest(self, name: str) -> dict[str, Any]:
        if self.digests is None:
            raise RequestError(ErrorCode.SHUTTING_DOWN, "digests are not available")
        return await self.digests.run(name)

    def list_digests(self) -> dict[str, Any]:
        return self.digests.list() if self.digests is not None else {"digests": [], "recent": []}

    async def camera_masks(self, camera: str, masks: Masks | None) -> Masks:
        backend = self._backend()
        async with self._camera_lock:
            if not backend.has_camera(camera):
                raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {camera!r}")
            if masks is None:
                return self.masks.masks(next((c for c in self.registry.effective(self.settings.cameras)
                                              if c.name == camera), Camera(camera, "")))
            await asyncio.to_thread(self.masks.set, camera, masks)
            await backend.set_masks(camera, masks)
        log.info("camera.masks_set", camera=camera, masks=len(masks.polygons))
        return masks

    # -- watches ------------------------------------------------------------------------------------------------

    def _watch_manager(self) -> WatchManager:
        if self.watches is None:
            raise RequestError(ErrorCode.SHUTTING_DOWN, "watches are not available")
        return self.watches

    async def add_watch(self, request: WatchAdd) -> dict[str, Any]:
        return await self._watch_manager().add(request.spec())

    async def remove_watch(self, name: str) -> None:
        await self._watch_manager().remove(name)

    def list_watches(self) -> list[dict[str, Any]]:
        return self._watch_manager().list()

    def subscribe(self, client: str, watches: tuple[str, ...] | None, send: Callable[[str], None]) -> None:
        self._watch_manager().subscribe(client, watches, send)

    def unsubscribe(self, client: str) -> None:
        if self.watches is not None:
            self.watches.unsubscribe(client)
