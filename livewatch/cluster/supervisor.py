"""The shards of a cluster and where each camera runs: started, checked, lost, placed, moved (the front's state).

One task (``run``) keeps them right, every ``cluster.health_interval_s`` and at once when a call finds a shard gone:

1. every shard's status within ``cluster.shard_timeout_s``; a shard that fails it (or whose actor died under any
   call) is lost: it is killed (so one that was only slow cannot go on writing its cameras' stores), and its
   cameras wait for a new shard. A camera a shard runs without being placed there (a stray: an attach that
   finished after the camera was removed or moved) is stopped on it, so no camera has two writers for long;
2. as many shards as wanted (``cluster.shards``, or one per ``gpus_per_shard`` GPUs the cluster has now, so nodes
   that join bring shards), started in the background (model load, warm-up); a failed start is retried later;
3. every waiting camera is attached to the shard placement chooses (``PLACE_AT_ONCE`` at a time); its memory comes
   back from its store there, its watches come with it;
4. at most ``cluster.rebalance_moves`` cameras move to even the load out (after a shard joins).

Each step is isolated: one shard's failure is logged and the round goes on. Operations on one camera (place, move,
remove) hold that camera's lock, so a camera is never attached twice. A camera is "settled" only once its attach
returned; until then requests about it get ``unavailable``. A call that times out fails its request only; only the
health check declares a shard lost on a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec
from livewatch.cluster.messages import ShardAPI
from livewatch.cluster.placement import Placement
from livewatch.cluster.ray_backend import RayBackend, ShardGone, ShardTimeout
from livewatch.cluster.shard import LOAD_WINDOW_S
from livewatch.local.stores import camera_store_dir
from livewatch.config import Settings
from livewatch.engine.results import WatchResult
from livewatch.errors import ErrorCode, RequestError
from livewatch.log import Throttle, get_logger

log = get_logger("livewatch.cluster")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

START_BACKOFF_S = 30.0  # after a failed shard start
PLACE_AT_ONCE = 16  # attaches in flight in one round


@dataclass
class RemoteCamera:
    """A camera of the front: how to open it (sent to the shard that runs it) and since when it waits."""

    name: str
    spec: SourceSpec | None
    untrusted: bool
    error: str | None
    waiting_since: float = field(default_factory=time.monotonic)
    settled: bool = False  # attached on its shard (requests may go there)


@dataclass
class Shard:
    id: str
    handle: Any
    state: str = "starting"  # starting | up | lost
    info: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    checked_at: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, shard_settings: Settings,
                 on_results: Callable[[Sequence[WatchResult]], None]) -> None:
        self.settings = settings
        self.cfg = settings.cluster
        self.backend = RayBackend(self.cfg.address, self.cfg.namespace)
        self.placement = Placement(LOAD_WINDOW_S)
        self.shards: dict[str, Shard] = {}
        self.cameras: dict[str, RemoteCamera] = {}
        self.watches: dict[str, dict[str, str]] = {}  # what the watch manager set, by camera
        self.replaced = 0  # cameras placed again after their shard was lost
        self.wanted: int | None = None
        self._shard_settings = shard_settings
        self._on_results = on_results
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._results: dict[str, asyncio.Task[None]] = {}
        self._next_start = 0.0
        self._errors = Throttle()  # failures that repeat every round: a line a minute each

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster, start the shards; wait (up to cluster.start_timeout_s) for the first one."""
        figures = await asyncio.to_thread(self.backend.connect)
        log.info("cluster.joined", address=self.cfg.address, **figures)
        await self._grow()
        if self.wanted == 0:
            log.error("cluster.no_gpus", message="the cluster has no GPUs for a shard yet: cameras wait until a node "
                      "with GPUs joins (or set cluster.shards / cluster.gpus_per_shard)")
        starting = [t for t in self._tasks if t.get_name().startswith("start ")]
        if starting:
            await asyncio.wait(starting, timeout=self.cfg.start_timeout_s, return_when=asyncio.FIRST_COMPLETED)

    async def run(self) -> None:
        while True:
            await self._round()
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.health_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def stop(self, timeout: float) -> None:
        """Every shard flushes its cameras and stops (within ``timeout``), is killed, and the front leaves Ray."""
        for task in [*self._tasks, *self._results.values()]:
            task.cancel()
        shards = list(self.shards.values())
        await asyncio.gather(*(self.backend.call(s.handle, timeout, ShardAPI.stop) for s in shards
                               if s.state == "up"), return_exceptions=True)
        for shard in shards:
            self.backend.kill(shard.handle)
        self.backend.shutdown()  # on the loop: nothing is served any more, and a thread could outlive the deadline
        log.info("cluster.left", shards=[s.id for s in shards])

    def _failed(self, event: str, exc: Exception, *, trace: bool = False, **fields: str) -> None:
        """A failure that repeats every round (one camera's attach, one shard's status): a line a minute for each
        event and camera or shard, with the count; ``trace``: with the traceback (a bug, not a Ray failure)."""
        if failures := self._errors.ready((event, *fields.values())):
            log.error(event, **fields, error=f"{type(exc).__name__}: {exc}", failures=failures,
                      exc_info=exc if trace else None)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- one round ----------------------------------------------------------------------------------------------

    async def _round(self) -> None:
        steps = (self._check_all, self._grow, self._place_waiting, self._rebalance)
        for step in steps:
            try:
                await step()
            except Exception as exc:  # a bug or a Ray failure in one step must not stop the others
                self._failed("cluster.step_failed", exc, trace=True, step=step.__name__)

    async def _check_all(self) -> None:
        await asyncio.gather(*(self._check(s) for s in list(self.shards.values()) if s.state == "up"))

    async def _check(self, shard: Shard) -> None:
        try:
            status = await self.backend.call(shard.handle, self.cfg.shard_timeout_s, ShardAPI.status)
        except (ShardGone, ShardTimeout) as exc:
            self.lost(shard, f"no status ({exc})")
            return
        except Exception as exc:
            self._failed("shard.status_failed", exc, shard=shard.id)
            return
        running = set(status["shard"]["cameras"])
        shard.status, shard.checked_at = status, time.time()
        self.placement.report(shard.id, status["shard"]["busy"], running, time.monotonic())
        for camera in running:  # strays: running here, placed elsewhere or removed, and no operation under way
            if self.placement.owner.get(camera) != shard.id and not self._lock(camera).locked():
                self._spawn(self._detach_stray(shard, camera), f"stray {camera}")

    async def _detach_stray(self, shard: Shard, camera: str) -> None:
        async with self._lock(camera):
            if self.placement.owner.get(camera) == shard.id:
                return
            log.warning("camera.stray_stopped", camera=camera, shard=shard.id)
            await self._detach(shard, camera, delete=False)

    def _wanted(self) -> int:
        return self.cfg.shards or int(self.backend.gpus() / self.cfg.gpus_per_shard + 1e-9)

    async def _grow(self) -> None:
        """Start the shards that are missing (none for a while after a failed start)."""
        self.wanted = await asyncio.wait_for(asyncio.to_thread(self._wanted), self.cfg.shard_timeout_s)
        if time.monotonic() < self._next_start:
            return
        for _ in range(self.wanted - sum(1 for s in self.shards.values() if s.state != "lost")):
            shard_id = f"shard-{next(self._ids)}"
            self.shards[shard_id] = shard = Shard(shard_id, None)
            self._spawn(self._start_shard(shard), f"start {shard_id}")

    async def _start_shard(self, shard: Shard) -> None:
        t0 = time.monotonic()
        try:
            shard.handle = await asyncio.to_thread(self.backend.start_shard, shard.id, self._shard_settings,
                                                   self.cfg.store_dir, self.cfg.gpus_per_shard, self.cfg.cpus_per_shard)
            shard.info = await self.backend.call(shard.handle, self.cfg.start_timeout_s, ShardAPI.start)
        except Exception as exc:
            log.error("shard.start_failed", shard=shard.id, error=f"{type(exc).__name__}: {exc}")
            if shard.handle is not None:
                self.backend.kill(shard.handle)
            self.shards.pop(shard.id, None)
            self._next_start = time.monotonic() + START_BACKOFF_S
            return
        shard.state = "up"
        self.placement.add_shard(shard.id)
        self._results[shard.id] = asyncio.create_task(self._follow_results(shard))
        log.info("shard.up", shard=shard.id, seconds=round(time.monotonic() - t0, 2), **shard.info)
        self._wake.set()

    def lost(self, shard: Shard, reason: str) -> None:
        if shard.state == "lost":
            return
        shard.state = "lost"
        self.backend.kill(shard.handle)
        results = self._results.pop(shard.id, None)
        if results is not None:
            results.cancel()
        orphans = self.placement.remove_shard(shard.id)
        self.shards.pop(shard.id, None)
        now = time.monotonic()
        for camera in orphans:
            self.cameras[camera].waiting_since, self.cameras[camera].settled = now, False
        self.replaced += len(orphans)
        log.error("shard.lost", shard=shard.id, reason=reason, cameras=orphans)
        self._wake.set()

    async def _place_waiting(self) -> None:
        gate = asyncio.Semaphore(PLACE_AT_ONCE)

        async def place(camera: str) -> None:
            async with gate:
                await self.place(camera)

        await asyncio.gather(*(place(c) for c in self.placement.waiting()))

    async def _rebalance(self) -> None:
        moves = self.placement.moves(self.cfg.rebalance_moves, time.monotonic())
        for camera, src, dst in moves:
            await self._move(camera, src, dst)

    # -- one camera ---------------------------------------------------------------------------------------------

    def _lock(self, camera: str) -> asyncio.Lock:
        return self._locks.setdefault(camera, asyncio.Lock())

    def add(self, name: str, spec: SourceSpec | None, untrusted: bool, error: str | None) -> None:
        self.cameras[name] = RemoteCamera(name, spec, untrusted, error)
        self.placement.add_camera(name)

    async def place(self, camera: str) -> None:
        async with self._lock(camera):
            cam = self.cameras.get(camera)
            if cam is None or self.placement.owner.get(camera) is not None:
                return  # removed, or placed meanwhile
            target = self.placement.choose()
            if target is None:
                return
            shard = self.shards[target]
            self.placement.assign(camera, target, time.monotonic())
            sent = dict(self.watches.get(camera, {}))
            try:
                await self.backend.call(shard.handle, self.cfg.shard_timeout_s * 3, ShardAPI.attach, camera, cam.spec,
                                        cam.untrusted, cam.error, sent)
            except ShardGone as exc:
                self.lost(shard, f"attach failed ({exc})")
                return
            except Exception as exc:  # the shard may run it half-started: the next health check stops the stray
                self.placement.unassign(camera)
                self._failed("camera.attach_failed", exc, camera=camera, shard=target)  # retried every round
                return
            cam.settled = True
            if self.watches.get(camera, {}) != sent:  # changed while it attached: the newest set wins
                self.set_watches(camera, self.watches[camera])
        log.info("camera.placed", camera=camera, shard=target, waited_s=round(time.monotonic() - cam.waiting_since, 3))

    async def _move(self, camera: str, src: str, dst: str) -> None:
        """Move ``camera`` between two live shards: detached (its memory is in its store), then placed."""
        async with self._lock(camera):
            shard = self.shards.get(src)
            if shard is None or self.placement.owner.get(camera) != src:
                return
            self.placement.unassign(camera)
            self.cameras[camera].waiting_since, self.cameras[camera].settled = time.monotonic(), False
            log.info("camera.moving", camera=camera, source=src, target=dst)
            await self._detach(shard, camera, delete=False)
        await self.place(camera)

    async def _detach(self, shard: Shard, camera: str, *, delete: bool) -> bool:
        try:
            await self.backend.call(shard.handle, self.cfg.shard_timeout_s, ShardAPI.detach, camera, delete)
        except ShardGone as exc:
            self.lost(shard, f"detach failed ({exc})")
            return False
        except Exception as exc:  # slow (it goes on there) or failed: the health check finds a stray
            log.warning("camera.detach_unconfirmed", camera=camera, shard=shard.id, error=f"{type(exc).__name__}")
            return False
        return True

    async def remove(self, camera: str) -> None:
        """Stop ``camera`` and delete its frames: on its shard, or here when no live shard runs it."""
        async with self._lock(camera):
            self.cameras.pop(camera, None)
            self.watches.pop(camera, None)
            shard = self.shards.get(self.placement.remove_camera(camera) or "")
            if shard is None or shard.state != "up" or not await self._detach(shard, camera, delete=True):
                await asyncio.to_thread(shutil.rmtree, camera_store_dir(Path(self.cfg.store_dir), camera), True)
        self._locks.pop(camera, None)

    def owner(self, camera: str) -> Shard:
        """The live shard that runs ``camera``: RequestError unknown_camera, or unavailable while it waits."""
        cam = self.cameras.get(camera)
        if cam is None:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA,
                               f"no camera named {camera!r}; cameras are {sorted(self.cameras)}")
        shard = self.shards.get(self.placement.owner.get(camera) or "")
        if shard is None or shard.state != "up" or not cam.settled:
            raise self.unavailable(camera, "it is waiting for a shard")
        return shard

    def unavailable(self, camera: str, why: str) -> RequestError:
        retry = max(1, round(2 * self.cfg.health_interval_s))
        return RequestError(ErrorCode.UNAVAILABLE, f"camera {camera!r} is not served right now ({why}); "
                                                   f"retry in {retry} s")

    async def call(self, camera: str, timeout: float | None, method: Callable[Concatenate[Any, P], Awaitable[R]],
                   *args: P.args, **kwargs: P.kwargs) -> R:
        """``method`` (a ``ShardAPI`` method) on ``camera``'s shard within ``timeout`` (None: the shards'
        timeout); a shard gone or too slow is ``unavailable`` for this request."""
        shard = self.owner(camera)
        try:
            return await self.backend.call(shard.handle, timeout or self.cfg.shard_timeout_s, method, *args, **kwargs)
        except (ShardGone, ShardTimeout) as exc:
            raise self._request_failed(shard, camera, method.__name__, exc) from None

    async def stream(self, shard: Shard, camera: str, method: Callable[Concatenate[Any, P], AsyncIterator[T]],
                     *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        """The items of ``method``'s generator on ``shard`` (which runs ``camera``), as ``call`` fails."""
        try:
            async for item in self.backend.stream(shard.handle, method, *args, **kwargs):
                yield item
        except (ShardGone, ShardTimeout) as exc:
            raise self._request_failed(shard, camera, method.__name__, exc) from None

    def _request_failed(self, shard: Shard, camera: str, method: str, exc: Exception) -> RequestError:
        """A request's shard died (lost, the camera goes elsewhere) or did not answer in time: ``unavailable``."""
        if isinstance(exc, ShardGone):
            self.lost(shard, f"{method} failed ({exc})")
            return self.unavailable(camera, "its shard stopped")
        return self.unavailable(camera, "its shard is busy or unreachable")

    async def set_masks(self, camera: str, masks: Masks) -> None:
        """Kept in the camera's spec (an attach, on this shard or the next, sends it) and set on its shard now."""
        async with self._lock(camera):
            cam = self.cameras.get(camera)
            if cam is None or cam.spec is None:
                return
            cam.spec = replace(cam.spec, masks=masks)
            shard = self.shards.get(self.placement.owner.get(camera) or "")
            if shard is not None and shard.state == "up" and cam.settled:
                try:
                    await self.backend.call(shard.handle, self.cfg.shard_timeout_s, ShardAPI.set_masks, camera, masks)
                except ShardGone as exc:
                    self.lost(shard, f"set_masks failed ({exc})")

    # -- watches --------------------------------------------------------------------------------------------

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        """The watch manager's ``set_watches``: kept (an attach sends them), and sent to the camera's shard now."""
        self.watches[camera] = dict(watches)
        shard = self.shards.get(self.placement.owner.get(camera) or "")
        cam = self.cameras.get(camera)
        if shard is not None and shard.state == "up" and cam is not None and cam.settled:
            self._spawn(self._push_watches(shard, camera, dict(watches)), f"watches {camera}")

    async def _push_watches(self, shard: Shard, camera: str, watches: dict[str, str]) -> None:
        try:
            await self.backend.call(shard.handle, self.cfg.shard_timeout_s, ShardAPI.set_watches, camera, watches)
        except ShardGone as exc:
            self.lost(shard, f"set_watches failed ({exc})")
        except Exception as exc:
            log.error("watches.push_failed", camera=camera, shard=shard.id, error=f"{type(exc).__name__}: {exc}")

    async def _follow_results(self, shard: Shard) -> None:
        """The shard's watch results into the manager, for as long as the shard lives (a broken stream that is
        not a death is opened again)."""
        while shard.state == "up":
            try:
                async for results in self.backend.stream(shard.handle, ShardAPI.watch_results):
                    self._on_results(results)
            except ShardGone as exc:
                self.lost(shard, f"the watch results' stream broke ({exc})")
                return
            except Exception as exc:
                self._failed("watches.results_stream_failed", exc, shard=shard.id)
                await asyncio.sleep(1.0)
