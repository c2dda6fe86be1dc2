"""The watches in the daemon (beside daemon.py, above the config and the watches package it joins): building the
manager and its sinks from the settings.

``start_watches`` loads the saved watches (a file it cannot read is moved aside, like the runtime cameras), builds
the configured sinks (webhook, MQTT), registers every watch with the backend's engine and starts the sinks'
delivery tasks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from livewatch.config import Settings
from livewatch.engine.prompting.prompt import resolve_tz
from livewatch.errors import StorageError
from livewatch.log import get_logger
from livewatch.metrics import Metrics
from livewatch.watches.manager import QuestionBudget, WatchManager
from livewatch.watches.sinks import Sink, SinkOptions
from livewatch.watches.webhook import WebhookSink
from livewatch.watches.store import WatchStore

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
