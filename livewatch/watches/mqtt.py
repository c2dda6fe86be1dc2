"""MQTT delivery, for Home Assistant and anything else that reads a broker.

Topics (``PREFIX`` is ``topic_prefix``, default ``livewatch``; ``DISCOVERY`` is ``discovery_prefix``, default
``homeassistant``):

    PREFIX/CAMERA/WATCH/event     every WatchEvent as its wire JSON; QoS 1, not retained
    PREFIX/CAMERA/WATCH/state     ON / OFF: whether the condition holds now; QoS 1, retained
    PREFIX/digest/NAME            every digest as its wire JSON; QoS 1, retained (the latest of each digest)
    DISCOVERY/sensor/livewatch_digest_NAME/config
                                  Home Assistant's discovery config of the digest as a sensor (state: the start of
                                  its answers; attributes: the digest); retained, published with its first digest
    PREFIX/status                 online / offline: the birth message after each connect, the last will, and
                                  "offline" again on a clean stop (a clean DISCONNECT drops the will); retained
    DISCOVERY/binary_sensor/livewatch_CAMERA_WATCH/config
                                  Home Assistant's discovery config of the watch as a binary sensor; retained,
                                  cleared (empty retained payload) when the watch is removed

What the broker should hold is kept here, not only in the queue: ``offer`` updates a table of desired retained
payloads at once (a "started" event sets the state ON, "ended" OFF; ``WatchAdded`` writes the config and an
initial OFF, the state the engine starts a watch in), and the queued state/config items (coalesced per watch)
publish the table's current value. After every (re)connect the whole table is published again, so a broker that
restarted without persistence, or an item refused by a full queue, is corrected by the next connection. Retained
topics exist only for registered watches: the daemon offers ``WatchAdded`` for each watch it starts.

The connection: aiomqtt (asyncio, on paho-mqtt), a new client per connection. A broker that goes away is noticed
by a failed publish or by the idle connection's end, and the sink reconnects with the retry backoff; while it is
down, items wait without using up their attempts (``offline``), and the queue bound decides what is lost.
``mqtts://`` uses TLS with the system CAs or a CA file. Credentials are given as values (the caller reads them
from the environment or a file) and never logged; the broker URL must not carry them.

Names become topic segments: a name that could change a topic's meaning ("+", "#", "/", anything outside
``[A-Za-z0-9_.-]``, longer than 64) is refused, counted as dropped and logged.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable, Hashable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from livewatch import __version__
from livewatch.log import get_logger, redact_text, redact_url
from livewatch.watches.events import WatchEvent, WatchSpec
from livewatch.errors import DeliveryError
from livewatch.watches.sinks import DigestOut, Outgoing, Sink, SinkOptions, WatchAdded, WatchRemoved, WatchState

log = get_logger("livewatch.sinks")

ON, OFF, CLEAR = b"ON", b"OFF", b""
ONLINE, OFFLINE = b"online", b"offline"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DEVICE_CLASS = re.compile(r"[a-z_]{1,32}")


def segment(name: str) -> str:
    """``name`` as one topic level, or ValueError when it could change the topic (wildcards, separators)."""
    if _SEGMENT.fullmatch(name) is None:
        raise ValueError(f"{name[:80]!r} is not a safe MQTT topic level (1-64 of A-Z a-z 0-9 _ . -)")
    return name


def prefix(value: str) -> str:
    """A topic prefix: one or more safe levels joined by '/'."""
    for level in value.split("/"):
        segment(level)
    return value


@dataclass(frozen=True)
class Topics:
    """Every topic name, from the two prefixes: pure, so the layout is tested without a broker."""

    prefix: str = "livewatch"
    discovery_prefix: str = "homeassistant"

    def __post_init__(self) -> None:
        prefix(self.prefix)
        prefix(self.discovery_prefix)

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    def event(self, camera: str, watch: str) -> str:
        return f"{self.prefix}/{segment(camera)}/{segment(watch)}/event"

    def state(self, camera: str, watch: str) -> str:
        return f"{self.prefix}/{segment(camera)}/{segment(watch)}/state"

    def digest(self, name: str) -> str:
        return f"{self.prefix}/digest/{segment(name)}"

    def digest_config(self, name: str) -> str:
        return f"{self.discovery_prefix}/sensor/livewatch_digest_{segment(name).replace('.', '_')}/config"

    def object_id(self, camera: str, watch: str) -> str:
        """Home Assistant's object id and unique id; it allows only [A-Za-z0-9_-], so '.' becomes '_'."""
        return f"livewatch_{segment(camera)}_{segment(watch)}".replace(".", "_")

    def config(self, camera: str, watch: str) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{self.object_id(camera, watch)}/config"


def discovery_config(spec: WatchSpec, topics: Topics, device_class: str | None = None) -> dict[str, Any]:
    """Home Assistant's MQTT discovery config for one watch: a binary sensor, grouped under its camera's device;
    the last event's JSON becomes its attributes (probability, frame URL, description)."""
    object_id = topics.object_id(spec.camera, spec.name)
    config: dict[str, Any] = {
        "name": spec.name,
        "unique_id": object_id,
        "state_topic": topics.state(spec.camera, spec.name),
        "payload_on": ON.decode(),
        "payload_off": OFF.decode(),
        "availability_topic": topics.status,
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
        "json_attributes_topic": topics.event(spec.camera, spec.name),
        "device": {
            "identifiers": [f"livewatch_{spec.camera}".replace(".", "_")],
            "name": f"livewatch {spec.camera}",
            "manufacturer": "livewatch",
            "model": "livewatch camera",
            "sw_version": __version__,
        },
        "origin": {"name": "livewatch", "sw_version": __version__},
    }
    if device_class is not None:
        config["device_class"] = device_class
    return config


def digest_discovery_config(name: str, topics: Topics) -> dict[str, Any]:
    """Home Assistant's MQTT discovery config for one digest: a sensor whose state is the start of the latest
    digest's answers (Home Assistant keeps at most 255 characters of a state) and whose attributes are the whole
    digest (each camera's text and evidence frame URLs)."""
    return {
        "name": f"digest {name}",
        "unique_id": f"livewatch_digest_{segment(name)}".replace(".", "_"),
        "state_topic": topics.digest(name),
        "value_template": "{{ (value_json.cameras | selectattr('text', 'defined') | map(attribute='text') "
                          "| join(' '))[:250] }}",
        "json_attributes_topic": topics.digest(name),
        "availability_topic": topics.status,
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
        "device": {"identifiers": ["livewatch_digests"], "name": "livewatch digests", "manufacturer": "livewatch",
                   "model": "livewatch digest", "sw_version": __version__},
        "origin": {"name": "livewatch", "sw_version": __version__},
    }


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Broker:
        """``mqtt://host[:port]`` or ``mqtts://host[:port]``; credentials go in username/password instead."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"broker URL {redact_url(url)!r} is malformed") from exc
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"broker URL {redact_url(url)!r} must be mqtt://host[:port] or mqtts://host[:port]")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the broker URL must not carry credentials: pass them as username and password")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"broker URL {redact_url(url)!r} has a path or a query; MQTT takes none")
        return cls(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


class MqttSink(Sink):
    """Publishes watch events, states and Home Assistant discovery configs to one broker."""

    def __init__(self, broker_url: str, *, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, ca_file: str | None = None, topic_prefix: str = "livewatch",
                 discovery_prefix: str = "homeassistant", device_class: str | None = None,
                 timeout_s: float = 5.0, keepalive_s: int = 30, max_retained: int = 4096, name: str = "mqtt",
                 options: SinkOptions | None = None, on_sent: Callable[[float], None] | None = None) -> None:
        super().__init__(name, options, on_sent)
        self.broker = Broker.parse(broker_url)
        if password is not None and username is None:
            raise ValueError("an MQTT password needs a username")
        if ca_file is not None and not self.broker.tls:
            raise ValueError("a CA file needs an mqtts:// broker URL")
        if device_class is not None and _DEVICE_CLASS.fullmatch(device_class) is None:
            raise ValueError(f"{device_class!r} is not a Home Assistant device class")
        if timeout_s <= 0 or keepalive_s < 5 or max_retained < 1:
            raise ValueError("MQTT needs timeout_s > 0, keepalive_s >= 5, max_retained >= 1")
        self.topics = Topics(topic_prefix, discovery_prefix)
        self.target = f"{'mqtts' if self.broker.tls else 'mqtt'}://{self.broker.host}:{self.broker.port}"
        self.client_id = client_id or f"livewatch-{uuid.uuid4().hex[:8]}"
        self.device_class = device_class
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.max_retained = max_retained
        self.reconnects = 0
        self._username = username
        self._password = password
        self._tls = ssl.create_default_context(cafile=ca_file) if self.broker.tls else None
        self._retained: dict[str, bytes] = {}  # topic -> what the broker should keep there (CLEAR: remove it)
        self._watches: dict[tuple[str, str], str] = {}  # registered (camera, watch) -> its HA object id
        self._client: aiomqtt.Client | None = None
        self._stack: AsyncExitStack | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._connects = 0
        self._connect_failures = 0
        self._next_connect_at = 0.0

    def __repr__(self) -> str:  # never the credentials
        return f"MqttSink(name={self.name!r}, broker={self.target!r}, client_id={self.client_id!r})"

    # -- what the broker should hold ----------------------------------------------------------------------------

    def coalesce_key(self, item: Outgoing) -> Hashable | None:
        if isinstance(item, WatchState):
            return ("state", item.camera, item.watch)
        if isinstance(item, WatchAdded):
            return ("config", item.spec.camera, item.spec.name)
        if isinstance(item, WatchRemoved):
            return ("config", item.camera, item.watch)
        return None

    def offer(self, item: Outgoing) -> bool:
        if self.closing:
            return super().offer(item)
        try:
            items = self._mirror(item)
        except ValueError as exc:
            self.dropped += 1
            self._report("mqtt.refused", "ValueError", str(exc))
            return False
        accepted = True
        for queued in items:
            accepted = super().offer(queued) and accepted
        return accepted

    def _mirror(self, item: Outgoing) -> list[Outgoing]:
        """Update the table of retained payloads for ``item``; what to queue for it (the item, a state update)."""
        if isinstance(item, WatchAdded):
            spec = item.spec
            key, object_id = (spec.camera, spec.name), self.topics.object_id(spec.camera, spec.name)
            if any(oid == object_id and other != key for other, oid in self._watches.items()):
                raise ValueError(f"watch {spec.name!r} of camera {spec.camera!r} has the Home Assistant id "
                                 f"{object_id!r} of another watch")
            config = json.dumps(discovery_config(spec, self.topics, self.device_class), separators=(",", ":"))
            state_topic = self.topics.state(*key)
            self._set(self.topics.config(*key), config.encode())
            self._set(state_topic, self._retained.get(state_topic) or OFF)
            self._watches[key] = object_id
            return [item]
        if isinstance(item, WatchRemoved):
            key = (item.camera, item.watch)
            self._set(self.topics.config(*key), CLEAR)
            self._set(self.topics.state(*key), CLEAR)
            self._watches.pop(key, None)
            return [item]
        if isinstance(item, DigestOut):  # the sensor's config goes with the first digest (and every reconnect)
            name = item.message["digest"]
            config = json.dumps(digest_discovery_config(name, self.topics), separators=(",", ":"))
            self._set(self.topics.digest_config(name), config.encode())
            return [item]
        if isinstance(item, WatchState):
            on = item.on
        elif item.kind in ("started", "ended"):
            on = item.kind == "started"
        else:
            self.topics.event(item.camera, item.watch)  # checks the names
            return [item]
        topic = self.topics.state(item.camera, item.watch)
        event: list[Outgoing] = [] if isinstance(item, WatchState) else [item]
        if (item.camera, item.watch) not in self._watches:
            return event  # no retained state for a watch that is not registered (or already removed)
        self._set(topic, ON if on else OFF)
        return [*event, WatchState(item.camera, item.watch, on)]

    def _set(self, topic: str, payload: bytes) -> None:
        if topic not in self._retained and len(self._retained) >= self.max_retained:
            raise ValueError(f"more than {self.max_retained} retained topics pending")
        self._retained[topic] = payload

    # -- delivery ---------------------------------------------------------------------------------------------

    async def deliver(self, item: Outgoing) -> None:
        client = await self._connection()
        if isinstance(item, WatchEvent):
            body = json.dumps(item.to_message(), separators=(",", ":"), allow_nan=False).encode()
            await self._publish(client, self.topics.event(item.camera, item.watch), body, retain=False)
        elif isinstance(item, WatchState):
            await self._publish_retained(client, self.topics.state(item.camera, item.watch))
        elif isinstance(item, DigestOut):
            await self._publish_retained(client, self.topics.digest_config(item.message["digest"]))
            body = json.dumps(item.message, separators=(",", ":"), allow_nan=False).encode()
            await self._publish(client, self.topics.digest(item.message["digest"]), body, retain=True)
        else:
            camera, watch = (item.spec.camera, item.spec.name) if isinstance(item, WatchAdded) else \
                (item.camera, item.watch)
            await self._publish_retained(client, self.topics.config(camera, watch))
            await self._publish_retained(client, self.topics.state(camera, watch))

    async def _publish_retained(self, client: aiomqtt.Client, topic: str) -> None:
        payload = self._retained.get(topic)
        if payload is None:
            return  # already cleared, or never meant to be held
        await self._publish(client, topic, payload, retain=True)
        if payload == CLEAR and self._retained.get(topic) == CLEAR:
            del self._retained[topic]  # cleared on the broker: nothing left to hold for it

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool) -> None:
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=self.timeout_s)
        except aiomqtt.MqttError as exc:
            await self._drop(client)
            raise DeliveryError("publish failed", error=type(exc).__name__, offline=True) from exc

    async def _connection(self) -> aiomqtt.Client:
        """The connected client: connects (birth message, then every retained payload) when there is none."""
        if self._client is not None:
            return self._client
        client = aiomqtt.Client(
            self.broker.host, self.broker.port, username=self._username, password=self._password,
            identifier=self.client_id, will=aiomqtt.Will(self.topics.status, OFFLINE, qos=1, retain=True),
            tls_context=self._tls, timeout=self.timeout_s, keepalive=self.keepalive_s,
        )
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(client)
        except aiomqtt.MqttError as exc:
            reason = f"connect failed: {redact_text(str(exc))[:120]}"  # paho's code text or the socket error
            raise DeliveryError(reason, error=type(exc).__name__, offline=True) from exc
        self._client, self._stack = client, stack
        self._watcher = asyncio.get_running_loop().create_task(self._watch(client), name=f"sink-{self.name}-conn")
        await self._publish(client, self.topics.status, ONLINE, retain=True)
        for topic in list(self._retained):
            await self._publish_retained(client, topic)
        self.reconnects += 1 if self._connects else 0
        self._connects += 1
        self._connect_failures = 0
        log.info("mqtt.connected", sink=self.name, broker=self.target, client_id=self.client_id,
                 reconnects=self.reconnects, retained=len(self._retained))
        return client

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Notices the end of an idle connection (nothing is subscribed: the iteration ends only with it)."""
        try:
            async for _ in client.messages:
                pass
        except aiomqtt.MqttError as exc:
            if self._client is client:
                self._report("mqtt.connection_lost", type(exc).__name__, "connection lost")
                await self._drop(client)
                self._wake()

    async def _drop(self, client: aiomqtt.Client) -> None:
        """Forget a connection (failed or closing) and close it, within the timeout."""
        if self._client is not client:
            return
        stack, watcher = self._stack, self._watcher
        self._client = self._stack = self._watcher = None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            await asyncio.wait({watcher})
        if stack is not None:
            with suppress(aiomqtt.MqttError, TimeoutError, OSError):
                async with asyncio.timeout(self.timeout_s):
                    await stack.aclose()

    async def idle(self) -> float | None:
        """With nothing to send, keep a connection up anyway, so the availability topic reads "online"."""
        if self._client is not None or self.closing:
            return None
        wait_s = self._next_connect_at - time.monotonic()
        if wait_s > 0:
            return wait_s
        try:
            await self._connection()
        except DeliveryError as exc:
            self._connect_failures += 1
            self.last_error = exc.reason
            self._report("mqtt.connect_failed", exc.error, exc.reason, attempt=self._connect_failures)
            wait_s = self.options.retry.delay(self._connect_failures, self._rng.random())
            self._next_connect_at = time.monotonic() + wait_s
            return wait_s
        return None

    async def close(self) -> None:
        """A clean stop: "offline" on the status topic (a clean DISCONNECT does not fire the will), then go."""
        client = self._client
        if client is None:
            return
        with suppress(aiomqtt.MqttError):
            await client.publish(self.topics.status, OFFLINE, qos=1, retain=True, timeout=min(self.timeout_s, 2.0))
        await self._drop(client)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "target": self.target, "connected": self.connected,
                "reconnects": self.reconnects}
