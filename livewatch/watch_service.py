"""The watches in the daemon (beside daemon.py, above the config and the watches package it joins): building the
manager and its sinks from the settings, and the daemon's watch API.

``start_watches`` loads the saved watches (a file it cannot read is moved aside, like the runtime cameras), builds
the configured sinks (webhook, MQTT), registers every watch with the engine and starts the sinks' delivery
tasks. ``WatchService`` is the part of the daemon's ``Service`` (server/handler.py) that concerns watches, kept here
so the daemon stays the lifecycle; it runs on the daemon (``self`` is the Daemon).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from livewatch.config import Settings
from livewatch.engine.generate import SamplingParams
from livewatch.engine.prompt import resolve_tz
from livewatch.engine.watcheval import WatchResult
from livewatch.engine.worker import EngineWorker
from livewatch.errors import ErrorCode, RequestError, StorageError
from livewatch.log import get_logger
from livewatch.memory.jpegfile import thumbnail
from livewatch.metrics import Metrics
from livewatch.find import find as find_moments
from livewatch.server.watchproto import Find, WatchAdd
from livewatch.watches.manager import QuestionBudget, WatchManager
from livewatch.watches.sinks import Sink, SinkOptions
from livewatch.watches.webhook import WebhookSink
from livewatch.watches.store import WatchStore, spec_of

log = get_logger("livewatch.watches")


def build_sinks(settings: Settings, on_sent: Callable[[str, float], None]) -> list[Sink]:
    """The configured delivery sinks (none configured: none), not started yet."""
    ev = settings.events
    options = SinkOptions(max_queue=ev.queue_size)
    sinks: list[Sink] = []
    if ev.webhook_url:
        assert settings.webhook_secret is not None  # load_settings requires it with a URL
        sinks.append(WebhookSink(ev.webhook_url, settings.webhook_secret.encode(), timeout_s=ev.webhook_timeout_s,
                                 options=options, on_sent=partial(on_sent, "webhook")))
    if ev.mqtt_url:
        from livewatch.watches.mqtt import MqttSink

        sinks.append(MqttSink(ev.mqtt_url, username=ev.mqtt_username or None, password=settings.mqtt_password,
                              topic_prefix=ev.mqtt_topic_prefix, discovery_prefix=ev.mqtt_discovery_prefix,
                              options=options, on_sent=partial(on_sent, "mqtt")))
    return sinks


def start_watches(
    settings: Settings,
    engine_set: Callable[[str, dict[str, str]], None],
    camera_names: Callable[[], Sequence[str]],
    read_frame: Callable[[str, int], bytes | None],
    describe: Callable[[str, str, int], Awaitable[str]],
    metrics: Metrics,
    question_budget: QuestionBudget | None = None,
) -> WatchManager:
    """``engine_set(camera, {watch: condition})`` gives the engine a camera's watches (a cluster's front: to the
    camera's shard); ``read_frame`` reads an event's evidence frame."""
    store = WatchStore(settings.state_dir)
    try:
        store.load()
    except StorageError as exc:  # saved watches never stop a start
        aside = store.move_aside()
        log.error("watches.unreadable", error=str(exc), moved_to=str(aside) if aside else None)

    def observe(sink: str, latency_s: float) -> None:
        metrics.event_latency.labels(sink).observe(latency_s)

    ev = settings.events
    sinks = build_sinks(settings, observe)
    manager = WatchManager(
        store, settings.watches, engine_set, camera_names, read_frame, describe,
        sinks=sinks, tz=resolve_tz(settings.model.timezone), max_watches=ev.max_watches,
        describe_tokens=ev.describe_tokens, on_latency=observe, question_budget=question_budget,
        engine_share=ev.watch_engine_share, evaluations_per_s=settings.capture.fps / 2,
    )
    for sink in sinks:
        sink.start()
        log.info("watches.sink_started", sink=sink.name)
    manager.start()
    return manager


class WatchService:
    """The watch requests of the daemon's Service, and the engine's hand-over of watch results."""

    watches: WatchManager | None
    worker: EngineWorker | None
    cameras: dict[str, Any]
    _loop: Any

    def _watch_results(self, results: list[WatchResult]) -> None:
        """Called on the engine thread: the triggers and the sinks run on the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and self.watches is not None:
            # a fresh context: not the engine thread's log bindings
            loop.call_soon_threadsafe(self.watches.on_results, results, context=contextvars.Context())

    async def _describe(self, camera: str, question: str, tokens: int) -> str:
        assert self.worker is not None
        answer = await self.worker.ask(camera, question, SamplingParams(max_new_tokens=tokens), None, "", "watches")
        return answer.text

    async def _evidence(self, camera: str, frame_id: int, size: int | None = None) -> bytes | None:
        """A frame for GET /frames/CAMERA/ID.jpg: an event's evidence or a frame in the camera's memory;
        ``size``: scaled to fit that many pixels (a thumbnail, without the store's metadata). Files are read
        and scaled on a thread."""
        manager = self.watches
        if manager is None or camera not in self.cameras:
            return None
        data = manager.kept_evidence(camera, frame_id)
        if data is None:
            data = await asyncio.to_thread(manager.evidence, camera, frame_id)
        if data is not None and size is not None:
            data = await asyncio.to_thread(thumbnail, data, size)
        return data

    async def find(self, request: Find, progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
        return await find_moments(self, request, progress)

    def _watch_manager(self) -> WatchManager:
        if self.watches is None:
            raise RequestError(ErrorCode.SHUTTING_DOWN, "watches are not available")
        return self.watches

    async def add_watch(self, request: WatchAdd) -> dict[str, Any]:
        return await self._watch_manager().add(spec_of(request))

    async def remove_watch(self, name: str) -> None:
        await self._watch_manager().remove(name)

    def list_watches(self) -> list[dict[str, Any]]:
        return self._watch_manager().list()

    def subscribe(self, client: str, watches: tuple[str, ...] | None, send: Callable[[str], None]) -> None:
        self._watch_manager().subscribe(client, watches, send)

    def unsubscribe(self, client: str) -> None:
        if self.watches is not None:
            self.watches.unsubscribe(client)


