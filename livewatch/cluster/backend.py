"""The cluster backend: the daemon's cameras on camera shards of a Ray cluster (``[cluster] backend = "ray"``).

The daemon (server, protocols, page, token, camera registry, watch manager) is the same as on one machine; the
cameras and the engine run in camera shards (cluster/shard.py), one Ray actor per GPU, each a local backend. Each
request about a camera goes to the shard that runs it; answers stream back as the shard produces them, and a
client's cancel (or disconnect) cancels the question on the shard. A camera's watches are evaluated by its shard's
engine (``set_watches`` goes there, and with the camera when it moves); each shard streams its results back, and
the daemon's watch manager decides the events and delivers them as on one machine.

The shards and where each camera runs are the supervisor's (cluster/supervisor.py). While a camera waits for a
shard, a request about it gets ``unavailable`` with a retry hint, never a hang. Status and /metrics show every
shard, its load and cameras, as of its last health check. This module imports no torch: the front of a cluster
never loads the model's stack (tests/test_layout.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from livewatch.backend import BackendHooks
from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec
from livewatch.cluster.messages import AnswerDone, AnswerText, Failed, FindDone, FindProgress, ShardAPI
from livewatch.cluster.supervisor import Shard, Supervisor
from livewatch.config import EventsSection, Settings
from livewatch.errors import ErrorCode, RequestError
from livewatch.local.stores import stored_frame
from livewatch.log import get_logger
from livewatch.sdnotify import Notifier
from livewatch.server.protocol import Answered, Ask
from livewatch.server.watchproto import Find

log = get_logger("livewatch.cluster")


class ClusterBackend:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        # what a shard needs of the settings: no token, no sinks or their secrets, no other camera's URL (each
        # comes with its camera's attach)
        shard_settings = replace(settings, token=None, webhook_secret=None, mqtt_password=None, cameras=(),
                                 watches={}, events=EventsSection())
        self.cluster = Supervisor(settings, shard_settings, self._on_results)
        self._supervisor: asyncio.Task[None] | None = None
        self._hooks: BackendHooks | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self, hooks: BackendHooks) -> None:
        """Join the cluster and start the shards (wait up to cluster.start_timeout_s for the first one); the
        supervisor then places the cameras, many at once, while the server starts."""
        self._hooks = hooks
        self.notifier.status("joining the Ray cluster, starting the camera shards")
        self.notifier.extend_timeout(self.settings.cluster.start_timeout_s + 60)
        await self.cluster.start()
        self._supervisor = asyncio.create_task(self.cluster.run())

    async def stop(self, timeout: float) -> None:
        """Stop supervising, let every shard flush its cameras and stop, then leave the cluster."""
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self.cluster.stop(timeout=timeout)

    def _on_results(self, results: Any) -> None:
        if self._hooks is not None:
            self._hooks.on_watch_results(results)

    def alive(self) -> bool:
        return self._supervisor is not None and not self._supervisor.done()

    def health(self) -> dict[str, Any]:
        up = sum(1 for s in self.cluster.shards.values() if s.state == "up")
        states = {name: camera.get("state") for name, camera in self.status()["cameras"].items()}
        return {"engine": bool(up) and self.alive(), "cameras": states, "shards_up": up}

    # -- cameras ------------------------------------------------------------------------------------------------

    def camera_names(self) -> list[str]:
        return sorted(self.cluster.cameras)

    def has_camera(self, name: str) -> bool:
        return name in self.cluster.cameras

    async def set_masks(self, name: str, masks: Masks) -> None:
        if name not in self.cluster.cameras:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
        await self.cluster.set_masks(name, masks)

    async def attach(self, name: str, spec: SourceSpec | None, *, untrusted: bool, error: str | None,
                     wait: bool) -> None:
        self.cluster.add(name, spec, untrusted, error)
        if wait:  # camera.add: placed before the reply; at start-up the supervisor places them all at once
            await self.cluster.place(name)

    async def remove(self, name: str) -> None:
        if name not in self.cluster.cameras:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name!r}")
        await self.cluster.remove(name)

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        self.cluster.set_watches(camera, watches)

    # -- requests, routed to the shards -------------------------------------------------------------------------

    async def ask(self, request: Ask, camera: str, on_text: Callable[[str], None], client: str) -> Answered:
        shard = self.cluster.owner(camera)
        async for item in self.cluster.stream(shard, camera, ShardAPI.ask, request, camera, client):
            if isinstance(item, AnswerText):
                on_text(item.text)
            elif isinstance(item, AnswerDone):
                return item.answer
            elif isinstance(item, Failed):
                raise item.error()
        raise RuntimeError(f"the answer from {shard.id} ended without a result")

    async def find(self, request: Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        """Each shard searches its own cameras; the best moments over all of them. Every camera (no list given)
        means every camera served now; a named camera that waits for a shard is ``unavailable``."""
        names = list(request.cameras) if request.cameras else self.camera_names()
        by_shard: dict[str, list[str]] = {}
        for name in names:
            try:
                by_shard.setdefault(self.cluster.owner(name).id, []).append(name)
            except RequestError as exc:
                if request.cameras or exc.code is not ErrorCode.UNAVAILABLE:
                    raise
        steps: dict[str, tuple[int, int]] = {}

        async def search(shard: Shard, cameras: list[str]) -> list[dict[str, Any]]:
            sub = Find(request.id, request.query, tuple(cameras), request.since, request.until, request.top)
            async for item in self.cluster.stream(shard, cameras[0], ShardAPI.find, sub):
                if isinstance(item, FindProgress):
                    steps[shard.id] = (item.done, item.total)
                    progress(sum(d for d, _ in steps.values()), sum(t for _, t in steps.values()))
                elif isinstance(item, FindDone):
                    return item.moments
                elif isinstance(item, Failed):
                    raise item.error()
            return []

        found = await asyncio.gather(*(search(self.cluster.shards[s], c) for s, c in by_shard.items()))
        return sorted((m for moments in found for m in moments), key=lambda m: -m["probability"])[: request.top]

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]:
        return await self.cluster.call(camera, None, ShardAPI.memory_frames, camera)

    async def describe(self, camera: str, question: str, tokens: int) -> str:
        return await self.cluster.call(camera, self.settings.cluster.shard_timeout_s * 6, ShardAPI.describe, camera,
                                       question, tokens)

    def read_frame(self, camera: str, frame_id: int) -> bytes | None:
        """Read from the shared store directly (any process may read while the camera's shard writes)."""
        return stored_frame(Path(self.settings.cluster.store_dir), camera, frame_id)

    async def frame(self, camera: str, frame_id: int, size: int | None) -> bytes | None:
        """The frame from the camera's shard (scaled there)."""
        try:
            return await self.cluster.call(camera, None, ShardAPI.evidence, camera, frame_id, size)
        except RequestError:
            return None

    # -- status -------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        c = self.cluster
        cameras: dict[str, Any] = {}
        memory: dict[str, Any] = {}
        engine_cameras: dict[str, Any] = {}
        up = [s for s in c.shards.values() if s.state == "up"]
        for shard in up:
            st = shard.status
            for name in st.get("shard", {}).get("cameras", []):
                if c.placement.owner.get(name) == shard.id:
                    cameras[name] = {**st["cameras"].get(name, {}), "shard": shard.id}
                    memory[name] = st["memory"].get(name, {})
                    engine_cameras[name] = st["engine"]["cameras"].get(name, {})
        for name in c.cameras:  # placed since the shard's last status ("placing"), or waiting for a shard
            if name not in cameras:
                owner = c.placement.owner.get(name)
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
            "cluster": {
                "backend": "ray", "shards_wanted": c.wanted, "replaced_cameras": c.replaced,
                "shards": {s.id: {"state": s.state, "device": s.info.get("device"), "node": s.info.get("node"),
                                  "pid": s.info.get("pid"), "busy": s.status.get("shard", {}).get("busy"),
                                  "cameras": sorted(n for n, o in c.placement.owner.items() if o == s.id),
                                  "checked_at": s.checked_at}
                           for s in c.shards.values()},
                "placement": dict(sorted(c.placement.owner.items())),
            },
        }
