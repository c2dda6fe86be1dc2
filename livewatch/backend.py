"""What the daemon runs its cameras on: the ``CameraBackend`` interface (as vLLM's front talks to an engine client
whatever the engine's topology).

Two backends implement it: ``local.backend.LocalBackend`` (capture, memory and the engine in this process: the
model loads here) and ``cluster.backend.ClusterBackend`` (camera shards on a Ray cluster, each a local backend in
a Ray actor). The daemon (daemon.py) keeps what is the same for both: lifecycle, servers, the camera registry and
the camera-add policy, the watch manager and its sinks, health and status composed once. It never knows where a
camera runs. This module imports neither torch nor Ray.

Requests about one camera raise ``RequestError`` (``unknown_camera``, ``no_frames``, ``unavailable`` while a cluster
camera waits for a shard...) as the client should see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from livewatch.capture.masks import Masks
from livewatch.capture.source import SourceSpec
from livewatch.engine.results import WatchResult
from livewatch.server.protocol import Answered, Ask
from livewatch.server.watchproto import Find


@dataclass(frozen=True)
class BackendHooks:
    """What a backend tells its owner."""

    on_watch_results: Callable[[Sequence[WatchResult]], None]  # called on the event loop
    on_death: Callable[[str], None]  # the engine cannot go on (the reason); any thread
    on_encode: Callable[[float, float], None]  # an encode step: (seconds, camera lag seconds); any thread


class CameraBackend(Protocol):
    async def start(self, hooks: BackendHooks) -> None:
        """Load the model (local) or join the cluster and start the shards; ready for ``attach``."""

    async def stop(self, timeout: float) -> None:
        """Stop every camera (flushing its waiting frame), the engine and the GPU; the stores closed."""

    def camera_names(self) -> list[str]: ...

    def has_camera(self, name: str) -> bool: ...

    async def set_masks(self, name: str, masks: Masks) -> None:
        """Paint ``masks`` on the camera's frames from its next sampled frame on (and after a restart of its
        reader or a move to another shard)."""

    async def attach(self, name: str, spec: SourceSpec | None, *, untrusted: bool, error: str | None,
                     wait: bool) -> None:
        """Run camera ``name`` (``spec`` None: it starts ``failed`` with ``error``); ``untrusted``: added over the
        API (its reader checks the network policy before each connect, its errors are generic). ``wait``: return
        once it runs (camera.add); else a backend may start the cameras together (start-up)."""

    async def remove(self, name: str) -> None:
        """Stop camera ``name`` and delete its frames (RequestError ``unknown_camera``)."""

    async def ask(self, request: Ask, camera: str, on_text: Callable[[str], None], client: str) -> Answered:
        """Answer about the camera's live context, or about a time range of its past (``since``/``until``)."""

    async def find(self, request: Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        """The best moments for ``request`` over its cameras (every camera when none is named)."""

    async def memory_frames(self, camera: str) -> list[dict[str, Any]]: ...

    async def frame(self, camera: str, frame_id: int, size: int | None) -> bytes | None:
        """A stored frame's JPEG (``size``: scaled to fit that many pixels), None when there is none."""

    def read_frame(self, camera: str, frame_id: int) -> bytes | None:
        """A stored frame's JPEG (blocking: the watch manager calls it on a thread for an event's evidence)."""

    async def describe(self, camera: str, question: str, tokens: int) -> str:
        """A short answer about the camera's live context (an event's description)."""

    def set_watches(self, camera: str, watches: dict[str, str]) -> None:
        """The conditions the engine evaluates on each new context of ``camera`` (watch name -> condition)."""

    def alive(self) -> bool:
        """The engine runs (local: its thread; cluster: the supervisor)."""

    def health(self) -> dict[str, Any]:
        """For /health (polled often: cheap): ``engine`` (bool: questions can be answered now), ``cameras`` (each
        camera's state) and the backend's own figures."""

    def status(self) -> dict[str, Any]:
        """The ``cameras``, ``engine`` and ``memory`` parts of status (a cluster adds ``cluster``)."""
