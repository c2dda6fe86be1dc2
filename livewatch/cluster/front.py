"""The front of a cluster: ``livewatch serve`` with ``[cluster] backend = "ray"``.

It is the daemon with its server, protocols, page, token and camera registry, with the cameras and the engine
replaced by camera shards (cluster/shard.py), one Ray actor per GPU. Each request about a camera goes to the shard
that runs it; answers stream back as the shard produces them, and a client's cancel (or disconnect) cancels the
question on the shard.

One supervision task keeps the shards and the placement right, every ``cluster.health_interval_s`` and at once
when a call finds a shard gone:

1. every shard's status within ``cluster.shard_timeout_s``; a shard that fails it is lost: it is killed (so one that
   is only slow cannot go on writing its cameras' stores), and its cameras wait for a new shard;
2. as many shards as wanted (``cluster.shards``, or one per ``gpus_per_shard`` GPUs the cluster has now, so nodes
   that join bring shards), started in the background (model load, warm-up), a failed start retried later;
3. every waiting camera is attached to the shard placement chooses; its memory comes back from its store there;
4. at most ``cluster.rebalance_moves`` cameras move to even the load out (after a shard joins).

While a camera waits, a question about it gets ``unavailable`` with a retry hint, never a hang. Status and
/metrics show every shard, its load and cameras, as of its last health check.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livewatch.capture.source import SourceSpec
from livewatch.cluster.placement import Placement
from livewatch.cluster.ray_backend import RayBackend, ShardGone
from livewatch.cluster.shard import raise_for
from livewatch.config import Settings
from livewatch.daemon import Daemon
from livewatch.errors import ErrorCode, RequestError
from livewatch.log import get_logger
from livewatch.sdnotify import Notifier
from livewatch.server.protocol import Answered, Ask
from livewatch.server.watchproto import Find, WatchAdd
from livewatch.watches.manager import WatchManager

log = get_logger("livewatch.cluster")

_NO_WATCHES = "watches are not available with cluster.backend = \"ray\" yet; ask questions or use find"
_START_BACKOFF_S = 30.0


@dataclass
class RemoteCamera:
    """A camera of the front: how to open it (sent to the shard that runs it) and since when it waits."""

    name: str
    spec: SourceSpec | None
    untrusted: bool
    error: str | None
    waiting_since: float = field(default_factory=time.monotonic)


@dataclass
class Shard:
    id: str
    handle: Any
    state: str = "starting"  # starting | up | lost
    info: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    checked_at: float = 0.0


class ClusterDaemon(Daemon):
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        super().__init__(settings, notifier)
        c = settings.cluster
        self.backend = RayBackend(c.address, c.namespace)
        self.placement = Placement()
        self.shards: dict[str, Shard] = {}
        self.remote: dict[str, RemoteCamera] = {}
        self.replaced = 0  # cameras placed again after their shard was lost
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._starts: set[asyncio.Task[None]] = set()
        self._next_start = 0.0
        self.wanted: int | None = None

    # -- startup: the cluster instead of a model ----------------------------------------------------------------

    def _open_state_dir(self) -> None:
        """The lock and the registry only: frames live in the shared store, written by the shards."""
        self._lock_state_dir()

    async def _start_engine(self) -> None:
        """Join the cluster and start the first shards; wait (up to cluster.start_timeout_s) for one to be up."""
        self.notifier.status("joining the Ray cluster")
        self.notifier.extend_timeout(self.settings.cluster.start_timeout_s + 60)
        figures = await asyncio.to_thread(self.backend.connect)
        log.info("cluster.joined", address=self.settings.cluster.address, **figures)
        self._grow()
        self.notifier.status("starting the camera shards")
        if self._starts:
            await asyncio.wait(self._starts, timeout=self.settings.cluster.start_timeout_s)
        self._supervisor = asyncio.create_task(self._supervise())

    def _start_watches(self) -> WatchManager | None:
        return None

    def _engine_alive(self) -> bool:
        return self._supervisor is not None and not self._supervisor.done()

    async def _start_camera(self, name: str, spec: SourceSpec | None, *, untrusted: bool = False,
                            error: str | None = None) -> None:
        self.remote[name] = RemoteCamera(name, spec, untrusted, error)
        self.placement.add_camera(name)
        await self._place(name)

    # -- supervision ----------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        interval = self.settings.cluster.health_interval_s
        while True:
            try:
                await self._round()
            except Exception as exc:  # a bug here must not end supervision
                log.error("cluster.round_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _round(self) -> None:
        await asyncio.gather(*(self._check(s) for s in list(self.shards.values()) if s.state == "up"))
        self._grow()
        for camera in self.placement.waiting():
            await self._place(camera)
        for camera, src, dst in self.placement.moves(self.settings.cluster.rebalance_moves):
            await self._move(camera, src, dst)

    async def _check(self, shard: Shard) -> None:
        try:
            status = await self.backend.call(shard.handle, "status", timeout=self.settings.cluster.shard_timeout_s)
        except ShardGone as exc:
            self._lost(shard, f"no status ({exc})")
            return
        shard.status, shard.checked_at = status, time.time()
        self.placement.report(shard.id, status["shard"]["busy"], set(status["shard"]["cameras"]))

    def _wanted(self) -> int:
        c = self.settings.cluster
        return c.shards or int(self.backend.gpus() / c.gpus_per_shard + 1e-9)

    def _grow(self) -> None:
        """Start the shards that are missing (at most one failed start per backoff period)."""
        self.wanted = self._wanted()
        if time.monotonic() < self._next_start:
            return
        active = sum(1 for s in self.shards.values() if s.state != "lost")
        for _ in range(self.wanted - active):
            c = self.settings.cluster
            shard_id = f"shard-{next(self._ids)}"
            handle = self.backend.start_shard(shard_id, self.settings, c.store_dir, c.gpus_per_shard,
                                              c.cpus_per_shard)
            shard = self.shards[shard_id] = Shard(shard_id, handle)
            task = asyncio.create_task(self._start_shard(shard))
            self._starts.add(task)
            task.add_done_callback(self._starts.discard)

    async def _start_shard(self, shard: Shard) -> None:
        t0 = time.monotonic()
        try:
            shard.info = await self.backend.call(shard.handle, "start",
                                                 timeout=self.settings.cluster.start_timeout_s)
        except Exception as exc:
            log.error("shard.start_failed", shard=shard.id, error=f"{type(exc).__name__}: {exc}")
            self.backend.kill(shard.handle)
            self.shards.pop(shard.id, None)
            self._next_start = time.monotonic() + _START_BACKOFF_S
            return
        shard.state = "up"
        self.placement.add_shard(shard.id)
        log.info("shard.up", shard=shard.id, seconds=round(time.monotonic() - t0, 2), **shard.info)
        self._wake.set()

    def _lost(self, shard: Shard, reason: str) -> None:
        if shard.state == "lost":
            return
        shard.state = "lost"
        self.backend.kill(shard.handle)
        orphans = self.placement.remove_shard(shard.id)
        self.shards.pop(shard.id, None)
        now = time.monotonic()
        for camera in orphans:
            self.remote[camera].waiting_since = now
        self.replaced += len(orphans)
        log.error("shard.lost", shard=shard.id, reason=reason, cameras=orphans)
        self._wake.set()

    async def _place(self, camera: str) -> None:
        cam = self.remote.get(camera)
        target = self.placement.choose()
        if cam is None or target is None:
            return
        shard = self.shards[target]
        self.placement.assign(camera, target)
        try:
            await self.backend.call(shard.handle, "attach", camera, cam.spec, cam.untrusted, cam.error,
                                    timeout=self.settings.cluster.shard_timeout_s * 3)
        except ShardGone as exc:
            self._lost(shard, f"attach failed ({exc})")
            return
        except Exception as exc:
            self.placement.unassign(camera)
            log.error("camera.attach_failed", camera=camera, shard=target, error=f"{type(exc).__name__}: {exc}")
            return
        log.info("camera.placed", camera=camera, shard=target,
                 waited_s=round(time.monotonic() - cam.waiting_since, 3))

    async def _move(self, camera: str, src: str, dst: str) -> None:
        """Move ``camera`` between two live shards: detached (its memory is in its store), then placed."""
        shard = self.shards.get(src)
        if shard is None or self.placement.owner.get(camera) != src:
            return
        self.placement.unassign(camera)
        self.remote[camera].waiting_since = time.monotonic()
        try:
            await self.backend.call(shard.handle, "detach", camera, False,
                                    timeout=self.settings.cluster.shard_timeout_s)
        except ShardGone as exc:
            self._lost(shard, f"detach failed ({exc})")
        log.info("camera.moving", camera=camera, source=src, target=dst)
        await self._place(camera)

    # -- the Service, routed to the shards --------------------------------------------------------------------

    def camera_names(self) -> list[str]:
        return sorted(self.remote)

    def _owner(self, camera: str) -> Shard:
        if camera not in self.remote:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA,
                               f"no camera named {camera!r}; cameras are {self.camera_names()}")
        shard = self.shards.get(self.placement.owner.get(camera) or "")
        if shard is None or shard.state != "up":
            raise self._unavailable(camera, "it is waiting for a shard")
        return shard

    def _unavailable(self, camera: str, why: str) -> RequestError:
        retry = max(1, round(2 * self.settings.cluster.health_interval_s))
        return RequestError(ErrorCode.UNAVAILABLE, f"camera {camera!r} is not served right now ({why}); "
                                                   f"retry in {retry} s")

    async def ask(self, request: Ask, camera: str, on_text: Callable[[str], None], client: str) -> Answered:
        shard = self._owner(camera)
        try:
            async for item in self.backend.stream(shard.handle, "ask", request, camera, client):
                if "text" in item:
                    on_text(item["text"])
                    continue
                raise_for(item)
                answer = item["answer"]
                return Answered(answer["text"], answer["metrics"], answer["evidence"])
        except ShardGone as exc:
            self._lost(shard, f"an answer's stream broke ({exc})")
            raise self._unavailable(camera, "its shard stopped while answering") from None
        raise RuntimeError(f"the answer from {shard.id} ended without a result")

    async def find(self, request: Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        """Each shard searches its own cameras; the best moments over all of them."""
        names = list(request.cameras) if request.cameras else self.camera_names()
        by_shard: dict[str, list[str]] = {}
        for name in names:
            by_shard.setdefault(self._owner(name).id, []).append(name)
        steps: dict[str, tuple[int, int]] = {}

        async def search(shard: Shard, cameras: list[str]) -> list[dict[str, Any]]:
            sub = Find(request.id, request.query, tuple(cameras), request.since, request.until, request.top)
            try:
                async for item in self.backend.stream(shard.handle, "find", sub):
                    if "progress" in item:
                        steps[shard.id] = (int(item["progress"][0]), int(item["progress"][1]))
                        progress(sum(d for d, _ in steps.values()), sum(t for _, t in steps.values()))
                        continue
                    raise_for(item)
                    return list(item["result"])
            except ShardGone as exc:
                self._lost(shard, f"a search broke ({exc})")
                raise self._unavailable(cameras[0], "its shard stopped while searching") from None
            return []

        found = await asyncio.gather(*(search(self.shards[s], c) for s, c in by_shard.items()))
        return sorted((m for moments in found for m in moments), key=lambda m: -m["probability"])[: request.top]

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        shard = self._owner(camera)
        try:
            return list(await self.backend.call(shard.handle, "memory_frames", camera,
                                                timeout=self.settings.cluster.shard_timeout_s))
        except ShardGone as exc:
            self._lost(shard, f"no memory ({exc})")
            raise self._unavailable(camera, "its shard stopped") from None

    async def _evidence(self, camera: str, frame_id: int, size: int | None = None) -> bytes | None:
        try:
            shard = self._owner(camera)
        except RequestError:
            return None
        try:
            data = await self.backend.call(shard.handle, "evidence", camera, frame_id, size,
                                           timeout=self.settings.cluster.shard_timeout_s)
        except ShardGone:
            return None
        return data if isinstance(data, bytes) else None

    async def remove_camera(self, name: str) -> None:
        async with self._camera_lock:
            if name not in self.remote:
                raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
            del self.remote[name]
            shard = self.shards.get(self.placement.remove_camera(name) or "")
            if shard is not None and shard.state == "up":
                try:
                    await self.backend.call(shard.handle, "detach", name, True,
                                            timeout=self.settings.cluster.shard_timeout_s)
                except ShardGone as exc:
                    self._lost(shard, f"detach failed ({exc})")
            configured = any(c.name == name for c in self.settings.cameras)
            await asyncio.to_thread(self.registry.remove, name, configured)
        log.info("camera.removed", camera=name)

    async def add_watch(self, request: WatchAdd) -> dict[str, Any]:
        raise RequestError(ErrorCode.BAD_REQUEST, _NO_WATCHES)

    async def remove_watch(self, name: str) -> None:
        raise RequestError(ErrorCode.BAD_REQUEST, _NO_WATCHES)

    def list_watches(self) -> list[dict[str, Any]]:
        raise RequestError(ErrorCode.BAD_REQUEST, _NO_WATCHES)

    def subscribe(self, client: str, watches: tuple[str, ...] | None, send: Callable[[str], None]) -> None:
        raise RequestError(ErrorCode.BAD_REQUEST, _NO_WATCHES)

    # -- status --------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        cameras: dict[str, Any] = {}
        memory: dict[str, Any] = {}
        engine_cameras: dict[str, Any] = {}
        up = [s for s in self.shards.values() if s.state == "up"]
        for shard in up:
            st = shard.status
            for name in st.get("shard", {}).get("cameras", []):
                if self.placement.owner.get(name) == shard.id:
                    cameras[name] = {**st["cameras"].get(name, {}), "shard": shard.id}
                    memory[name] = st["memory"].get(name, {})
                    engine_cameras[name] = st["engine"]["cameras"].get(name, {})
        for name in self.remote:  # placed since the shard's last status ("placing"), or waiting for a shard
            if name not in cameras:
                owner = self.placement.owner.get(name)
                cameras[name] = {"state": "placing" if owner else "waiting_for_shard", "shard": owner}
        engines = [s.status.get("engine", {}) for s in up]
        return {
            "cameras": cameras,
            "engine": {
                "alive": bool(up), "cameras": engine_cameras, "shards_up": len(up),
                "model": engines[0].get("model") if engines else None,
                "device": sorted({str(s.info.get("device")) for s in up}),
                "encode_mode": self.settings.model.encode_mode,
                "queued_questions": sum(e.get("queued_questions", 0) for e in engines),
                "gpu_memory_allocated": sum(e.get("gpu_memory_allocated", 0) for e in engines),
            },
            "memory": memory,
            "watches": {},
            "server": {"connections": len(self.connections), "questions_in_flight": self.inflight.count,
                       "questions_limit": self.inflight.limit, "tcp_connections": self.guard.open},
            "cluster": {
                "backend": "ray", "shards_wanted": self.wanted, "replaced_cameras": self.replaced,
                "shards": {s.id: {"state": s.state, "device": s.info.get("device"), "node": s.info.get("node"),
                                  "pid": s.info.get("pid"), "busy": s.status.get("shard", {}).get("busy"),
                                  "cameras": sorted(c for c, o in self.placement.owner.items() if o == s.id),
                                  "checked_at": s.checked_at}
                           for s in self.shards.values()},
                "placement": dict(sorted(self.placement.owner.items())),
            },
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        up = [s for s in self.shards.values() if s.state == "up"]
        states = {name: cam.get("state") for name, cam in self.status()["cameras"].items()}
        ok = bool(up) and not self.shutting_down and (not states or "streaming" in states.values())
        return ok, {"status": "ok" if ok else "unavailable", "engine": bool(up), "cameras": states,
                    "shards_up": len(up)}

    # -- shutdown -----------------------------------------------------------------------------------------

    async def _stop_cameras_and_engine(self) -> None:
        """Stop supervising, let every shard flush its cameras and stop, then leave the cluster."""
        if self._supervisor is not None:
            self._supervisor.cancel()
        for task in list(self._starts):
            task.cancel()
        shards = list(self.shards.values())
        await asyncio.gather(*(self.backend.call(s.handle, "stop", timeout=5.0) for s in shards if s.state == "up"),
                             return_exceptions=True)
        for shard in shards:
            self.backend.kill(shard.handle)
        await asyncio.to_thread(self.backend.shutdown)
        log.info("cluster.left", shards=[s.id for s in shards])
