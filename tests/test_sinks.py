"""Event delivery sinks against real services: an HTTP receiver on loopback that checks signatures, fails, hangs
or answers too much; a real Mosquitto broker (tests/mqtt_broker.py) with a real MQTT subscriber (aiomqtt), the
broker restarted and the publishing process killed under a live connection. The backoff and log-limiting policies
are pure and tested with plain values."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mqtt_broker import MOSQUITTO, MosquittoBroker
from structlog.testing import capture_logs

from livewatch.watches.events import WatchEvent, WatchSpec
from livewatch.watches.mqtt import Broker, MqttSink, Topics, discovery_config, segment
from livewatch.watches.sinks import (RepeatFilter, RetryPolicy, SinkOptions, WatchAdded, WatchRemoved,
                                     WatchState)
from livewatch.watches.webhook import SIGNATURE_HEADER, WebhookSink

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"hook-secret-8f2c"
FAST = SinkOptions(max_queue=16, retry=RetryPolicy(base_s=0.01, cap_s=0.05, max_attempts=5), drain_timeout_s=2.0)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (tools/dev.sh installs "
                                                                "Debian's mosquitto package for the tests)")


def event(kind: str = "started", watch: str = "door", camera: str = "front.gate", age_s: float = 1.5) -> WatchEvent:
    now = time.time()
    return WatchEvent(watch=watch, camera=camera, kind=kind, probability=0.91, frame_time=now - age_s,  # type: ignore[arg-type]
                      frame_id=42, decided_at=now - 0.1)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- pure policies ------------------------------------------------------------------------------------------------

def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n, 0.0) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000, 0.0) == 30.0  # a broker down for days: no overflow
    assert all(0.8 * 4 <= policy.delay(4, r) <= 4 for r in (0.0, 0.5, 0.999))
    with pytest.raises(ValueError):
        RetryPolicy(base_s=0)


def test_repeat_filter_logs_first_then_once_per_interval() -> None:
    f = RepeatFilter(60.0)
    assert f.admit("timeout", 0.0) == 0
    assert f.admit("timeout", 10.0) is None and f.admit("timeout", 59.0) is None
    assert f.admit("HTTP 500", 11.0) == 0  # another failure is news
    assert f.admit("timeout", 61.0) == 2  # with the count held back


def test_topics_are_safe_and_laid_out_for_home_assistant() -> None:
    t = Topics()
    assert t.event("front.gate", "door") == "livewatch/front.gate/door/event"
    assert t.state("front.gate", "door") == "livewatch/front.gate/door/state"
    assert t.config("front.gate", "door") == "homeassistant/binary_sensor/livewatch_front_gate_door/config"
    assert t.status == "livewatch/status"
    assert Topics("home/lw", "ha").state("c", "w") == "home/lw/c/w/state"
    for bad in ("a+b", "#", "a/b", "", "x" * 65, "$SYS", "caf\u00e9", "a b"):
        with pytest.raises(ValueError):
            segment(bad)
    with pytest.raises(ValueError):
        Topics(prefix="live/#")
    config = discovery_config(WatchSpec("door", "front.gate", "a person at the door"), t, "occupancy")
    assert config["unique_id"] == "livewatch_front_gate_door" and config["device_class"] == "occupancy"
    assert config["availability_topic"] == "livewatch/status" and config["state_topic"] == t.state("front.gate", "door")
    assert config["device"]["identifiers"] == ["livewatch_front_gate"] and config["device"]["manufacturer"] == "livewatch"


def test_broker_urls() -> None:
    assert Broker.parse("mqtt://broker.lan") == Broker("broker.lan", 1883, False)
    assert Broker.parse("mqtts://broker.lan:8884") == Broker("broker.lan", 8884, True)
    assert Broker.parse("mqtt://[::1]:1884") == Broker("::1", 1884, False)
    for bad in ("http://broker", "mqtt://", "mqtt://h:99999", "mqtt://h/x"):
        with pytest.raises(ValueError):
            Broker.parse(bad)
    with pytest.raises(ValueError) as info:
        Broker.parse("mqtt://lw:hunter2@broker")
    assert "hunter2" not in str(info.value)


# -- webhooks -----------------------------------------------------------------------------------------------------

class Receiver:
    """An HTTP server on loopback, in a thread. Each request takes the next action of ``plan``: a status code,
    "hang" (until the test ends), "big" (200 with 2 MB of body) or, once the plan is empty, 200."""

    def __init__(self, plan: list[int | str] | None = None) -> None:
        self.plan: deque[int | str] = deque(plan or [])
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                receiver.requests.append({"body": json.loads(body), "headers": dict(self.headers),
                                          "signed": hmac.compare_digest(expected, self.headers[SIGNATURE_HEADER])})
                action = receiver.plan.popleft() if receiver.plan else 200
                if action == "hang":
                    receiver.release.wait(10)
                    return
                status = 200 if action == "big" else int(action)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                size = 2_000_000 if action == "big" else 2
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    for _ in range(size // 2000 or 1):
                        self.wfile.write(b"x" * min(size, 2000))
                except OSError:
                    pass  # the client read what it wanted and left

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_webhook_posts_signed_events_in_order() -> None:
    async def main() -> None:
        latencies: list[float] = []
        with Receiver() as rx:
            sink = WebhookSink(rx.url, SECRET, options=FAST, on_sent=latencies.append)
            events = [event("started"), event("ended")]
            sink.start()
            assert all(sink.offer(e) for e in events)
            assert sink.offer(WatchState("front.gate", "door", True))  # not a webhook's business: ignored
            await until(lambda: sink.sent == 2)
            await sink.stop()
        assert [r["body"]["id"] for r in rx.requests] == [e.id for e in events]
        for request, ev in zip(rx.requests, events):
            assert request["signed"]
            assert request["headers"]["Content-Type"] == "application/json"
            body = request["body"]
            assert {k: v for k, v in body.items() if k != "latency_s"} == \
                {k: v for k, v in ev.to_message().items() if k != "latency_s"}
            assert 1.5 <= body["latency_s"] < 3.0  # from the frame's capture to the send
        assert len(latencies) == 2 and all(1.5 <= s < 3.0 for s in latencies)
        assert sink.stats() == {"name": "webhook", "queued": 0, "sent": 2, "failed": 0, "dropped": 0, "expired": 0,
                                "retries": 0, "last_error": None,
                                "target": rx.url.removesuffix("/hook")}  # the path may hold a credential

    asyncio.run(main())


def test_webhook_retries_5xx_and_429_then_loses_nothing() -> None:
    async def main() -> None:
        with Receiver([500, 429, 503]) as rx:
            sink = WebhookSink(rx.url, SECRET, options=FAST)
            events = [event(watch=f"w{i}") for i in range(5)]
            assert all(sink.offer(e) for e in events)
            sink.start()
            await until(lambda: sink.sent == 5)
            await sink.stop()
        assert sink.retries == 3 and sink.failed == 0 and sink.dropped == 0
        assert len(rx.requests) == 8 and all(r["signed"] for r in rx.requests)
        delivered = [r["body"]["id"] for r in rx.requests[3:]]
        assert delivered == [e.id for e in events]  # in order, the first one after its three failures

    asyncio.run(main())


def test_webhook_queue_bound_keeps_the_newest_events_and_counts() -> None:
    async def main() -> None:
        with Receiver() as rx:
            sink = WebhookSink(rx.url, SECRET, options=SinkOptions(max_queue=3, retry=FAST.retry))
            taken = [sink.offer(event(watch=f"w{i}")) for i in range(5)]
            assert taken == [True] * 5 and sink.dropped == 2  # the two oldest made room for the newest
            sink.start()
            await until(lambda: sink.sent == 3)
            await sink.stop()
        assert [r["body"]["watch"] for r in rx.requests] == ["w2", "w3", "w4"]

    asyncio.run(main())


def test_stale_events_expire_instead_of_arriving_late() -> None:
    async def main() -> None:
        with Receiver([500]) as rx:
            options = SinkOptions(max_queue=8, retry=RetryPolicy(base_s=0.3, cap_s=0.3, max_attempts=8),
                                  max_event_age_s=2.0)
            sink = WebhookSink(rx.url, SECRET, options=options)
            sink.offer(event(watch="old", age_s=5.0))  # already too old: never sent
            sink.offer(event(watch="aging", age_s=1.8))  # fails once: after 0.3 s of backoff it is too old
            sink.offer(event(watch="fresh", age_s=0.1))
            sink.start()
            await until(lambda: sink.sent == 1 and sink.expired == 2)
            await sink.stop()
        assert [r["body"]["watch"] for r in rx.requests] == ["aging", "fresh"]
        assert sink.stats()["expired"] == 2

    asyncio.run(main())


def test_webhook_4xx_fails_without_retry_and_logs_once() -> None:
    async def main() -> None:
        url_with_secret = None
        with Receiver([404, 404, 404, 404]) as rx, capture_logs() as logs:
            url_with_secret = rx.url + "?token=tok-XYZ"
            sink = WebhookSink(url_with_secret, SECRET, options=FAST)
            sink.start()
            for i in range(4):
                sink.offer(event(watch=f"w{i}"))
            await until(lambda: sink.failed == 4)
            await sink.stop()
        assert len(rx.requests) == 4 and sink.retries == 0 and sink.sent == 0
        assert sink.last_error == "HTTP 404"
        failures = [entry for entry in logs if entry["event"] == "sink.delivery_failed"]
        assert len(failures) == 1  # the same failure three more times: held back
        assert failures[0]["error"] == "HTTPStatus" and failures[0]["attempt"] == 1 and failures[0]["final"]
        text = repr(logs) + repr(sink) + repr(sink.stats())
        assert "hook-secret" not in text and "tok-XYZ" not in text

    asyncio.run(main())


def test_webhook_hanging_receiver_times_out_without_slowing_other_sinks() -> None:
    """Bounds from below only (a loaded machine may be slow, never early): the healthy sink delivers everything
    while the hanging one is still in its first attempt, which then takes the full timeout twice."""
    timeout_s = 2.0

    async def main() -> None:
        with Receiver(["hang", "hang"]) as slow, Receiver() as fast:
            options = SinkOptions(retry=RetryPolicy(base_s=0.01, cap_s=0.05, max_attempts=2))
            stuck = WebhookSink(slow.url, SECRET, name="slow", timeout_s=timeout_s, options=options)
            healthy = WebhookSink(fast.url, SECRET, name="fast", options=options)
            sinks = (stuck, healthy)
            for sink in sinks:
                sink.start()
            t0 = time.monotonic()
            for i in range(3):
                assert all([sink.offer(event(watch=f"w{i}")) for sink in sinks])  # never waits for a destination
            await until(lambda: healthy.sent == 3 or stuck.failed + stuck.retries > 0, timeout=30)
            assert healthy.sent == 3 and stuck.sent == 0 and stuck.retries == 0  # still in its first attempt
            await until(lambda: stuck.failed >= 1, timeout=60)
            assert time.monotonic() - t0 >= 2 * timeout_s  # two attempts, each cut at the timeout
            assert stuck.stats()["retries"] == 1 and stuck.stats()["last_error"] == "timeout"
            await asyncio.gather(*(sink.stop(0.2) for sink in sinks))
            assert stuck.stats()["queued"] <= 2  # what was left when the drain deadline passed stays counted

    asyncio.run(main())


def test_webhook_reads_little_of_a_large_response_and_drains_on_stop() -> None:
    async def main() -> None:
        with Receiver(["big"]) as rx:
            sink = WebhookSink(rx.url, SECRET, options=FAST)
            sink.start()
            for i in range(3):
                sink.offer(event(watch=f"w{i}"))
            await sink.stop()  # graceful: what is queued goes out first
            assert sink.sent == 3 and len(rx.requests) == 3
            assert not sink.offer(event()) and sink.dropped == 1  # stopped: refused, counted

    asyncio.run(main())


def test_webhook_connection_refused_is_retried_then_failed() -> None:
    async def main() -> None:
        with Receiver() as rx:
            url = rx.url
        sink = WebhookSink(url, SECRET, options=FAST)  # nothing listens there any more
        sink.start()
        sink.offer(event())
        await until(lambda: sink.failed == 1)
        await sink.stop()
        assert sink.retries == FAST.retry.max_attempts - 1 and sink.last_error == "connection failed"

    asyncio.run(main())


def test_webhook_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError):
        WebhookSink("ftp://example.org/x", SECRET)
    with pytest.raises(ValueError):
        WebhookSink("https://example.org/x", b"")


# -- MQTT ---------------------------------------------------------------------------------------------------------

class Subscriber:
    """A real MQTT client that records every message it gets: (topic, payload, retained)."""

    def __init__(self, port: int, *topics: str, client_id: str | None = None, clean: bool = True,
                 username: str | None = None, password: str | None = None) -> None:
        self.port, self.topics = port, topics
        self.kwargs: dict[str, Any] = {"identifier": client_id, "clean_session": clean, "username": username,
                                       "password": password}
        self.messages: list[tuple[str, bytes, bool]] = []
        self.stack = AsyncExitStack()

    async def __aenter__(self) -> Subscriber:
        self.client = await self.stack.enter_async_context(aiomqtt.Client("127.0.0.1", self.port, **self.kwargs))
        for topic in (*self.topics, "sync/#"):
            await self.client.subscribe(topic, qos=1)
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for m in self.client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.messages.append((m.topic.value, payload, m.retain))
        except aiomqtt.MqttError:
            pass  # the broker went away

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})
        try:
            await self.stack.aclose()
        except aiomqtt.MqttError:
            pass

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        return [(p, r) for t, p, r in self.messages if t == topic]

    async def wait(self, topic: str, payload: bytes | None = None, timeout: float = 5.0) -> None:
        await until(lambda: any(payload is None or p == payload for p, _ in self.on(topic)), timeout)

    async def sync(self) -> None:
        """Once our own marker comes back, every retained message of our subscriptions has arrived."""
        marker = f"sync/{time.monotonic_ns()}"
        await self.client.publish(marker, b".", qos=1)
        await self.wait(marker)

    async def retained(self) -> dict[str, bytes]:
        await self.sync()
        return {t: p for t, p, r in self.messages if r}


T = Topics()
SPEC = WatchSpec("door", "front.gate", "a person is at the door")
STATE, CONFIG, EVENTS = T.state("front.gate", "door"), T.config("front.gate", "door"), T.event("front.gate", "door")


@needs_mosquitto
def test_mqtt_events_state_discovery_and_availability(tmp_path: Path) -> None:
    async def main(broker: MosquittoBroker) -> None:
        latencies: list[float] = []
        async with Subscriber(broker.port, "livewatch/#", "homeassistant/#") as live:
            sink = MqttSink(broker.url, client_id="lw-test", device_class="occupancy", options=FAST,
                            on_sent=latencies.append)
            sink.start()
            await live.wait(T.status, b"online")  # connected while idle: available before any event
            sink.watch_changed(SPEC, present=True)
            started = event("started")
            assert sink.offer(started)
            await until(lambda: sink.sent >= 3)  # discovery, event, state
            await live.wait(STATE, b"ON")
            (payload, retained), = live.on(EVENTS)
            body = json.loads(payload)
            assert not retained and body["id"] == started.id and body["kind"] == "started"
            assert 1.5 <= body["latency_s"] < 3.0 and latencies and latencies[0] >= 1.5

            async with Subscriber(broker.port, "livewatch/#", "homeassistant/#") as late:
                held = await late.retained()
            assert held[STATE] == b"ON" and held[T.status] == b"online" and EVENTS not in held
            config = json.loads(held[CONFIG])
            assert config == discovery_config(SPEC, T, "occupancy")

            sink.offer(event("ended"))
            await live.wait(STATE, b"OFF")
            sink.watch_changed(SPEC, present=False)
            await until(lambda: sink.stats()["queued"] == 0 and live.on(CONFIG)[-1][0] == b"")
            async with Subscriber(broker.port, "livewatch/#", "homeassistant/#") as late:
                held = await late.retained()
            assert CONFIG not in held and STATE not in held and held[T.status] == b"online"

            await sink.stop()
            await live.wait(T.status, b"offline")  # a clean stop says so (the will is for crashes)
            assert sink.stats()["connected"] is False and sink.failed == 0 and sink.dropped == 0

    with MosquittoBroker(tmp_path).start() as broker:
        asyncio.run(main(broker))


@needs_mosquitto
def test_mqtt_refuses_unsafe_names_and_state_of_unknown_watches(tmp_path: Path) -> None:
    async def main() -> None:
        sink = MqttSink("mqtt://127.0.0.1:1", options=FAST)  # never started: offer alone decides
        assert not sink.offer(WatchAdded(WatchSpec("a/b", "cam", "x")))
        assert not sink.offer(event(watch="door+"))
        assert not sink.offer(WatchState("cam#", "w", True))
        assert sink.dropped == 3
        assert sink.offer(WatchState("cam", "w", True)) and sink.queued == 0  # an unknown watch: nothing to hold
        assert sink.offer(WatchAdded(WatchSpec("a.b", "c", "x")))
        assert not sink.offer(WatchAdded(WatchSpec("b", "c_a", "x")))  # c_a_b: the Home Assistant id of c/a.b
        assert sink.offer(WatchRemoved("c", "a.b")) and sink.offer(WatchAdded(WatchSpec("b", "c_a", "x")))

    asyncio.run(main())


@needs_mosquitto
def test_mqtt_with_password_file(tmp_path: Path) -> None:
    async def main(broker: MosquittoBroker) -> None:
        async with Subscriber(broker.port, "livewatch/#", username="lw", password="pw-Right-123") as live:
            with capture_logs() as logs:
                good = MqttSink(broker.url, username="lw", password="pw-Right-123", options=FAST)
                bad = MqttSink(broker.url, username="lw", password="pw-Wrong-456", name="bad",
                               options=SinkOptions(retry=FAST.retry, drain_timeout_s=0.2))
                for sink in (good, bad):
                    sink.start()
                    sink.offer(event())
                await live.wait(EVENTS)
                await until(lambda: bad.last_error is not None)
                await asyncio.sleep(0.2)
                assert good.sent == 1 and bad.sent == 0 and bad.failed == 0  # waits for the broker, not failed
                assert bad.stats()["queued"] == 1 and not bad.connected
                assert "authori" in (bad.last_error or "").lower()
                await good.stop()
                await bad.stop()
            text = repr(logs) + repr(bad) + repr(bad.stats()) + repr(good)
            assert "pw-Wrong" not in text and "pw-Right" not in text
            refused = [e for e in logs if e.get("sink") == "bad" and e.get("error") == "MqttConnectError"]
            assert refused and "authori" in refused[0]["reason"].lower()

    with MosquittoBroker(tmp_path, users={"lw": "pw-Right-123"}).start() as broker:
        asyncio.run(main(broker))


CRASHING = """
import asyncio, sys
from livewatch.log import configure_logging
from livewatch.watches.mqtt import MqttSink

async def main():
    configure_logging(stream=sys.stderr)
    sink = MqttSink(sys.argv[1], client_id="lw-crash", keepalive_s=5)
    sink.start()
    while not sink.connected:
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@needs_mosquitto
def test_mqtt_last_will_says_offline_when_the_daemon_dies(tmp_path: Path) -> None:
    async def main(broker: MosquittoBroker) -> None:
        async with Subscriber(broker.port, T.status) as live:
            proc = subprocess.Popen([sys.executable, "-c", CRASHING, broker.url], cwd=ROOT, stdout=subprocess.PIPE)
            try:
                assert proc.stdout is not None
                assert (await asyncio.to_thread(proc.stdout.readline)).strip() == b"ready"
                await live.wait(T.status, b"online")
            finally:
                proc.kill()  # no clean stop: only the broker's last will can say it
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            await live.wait(T.status, b"offline")
        async with Subscriber(broker.port, T.status) as late:
            assert (await late.retained())[T.status] == b"offline"

    with MosquittoBroker(tmp_path).start() as broker:
        asyncio.run(main(broker))


@needs_mosquitto
def test_mqtt_broker_restart_delivers_what_was_queued(tmp_path: Path) -> None:
    async def main(broker: MosquittoBroker) -> None:
        sink = MqttSink(broker.url, options=FAST, keepalive_s=5)
        async with Subscriber(broker.port, "livewatch/+/+/event", client_id="restart-sub", clean=False) as live:
            sink.start()
            sink.watch_changed(SPEC, present=True)
            first = event(watch="door")
            sink.offer(first)
            await live.wait(EVENTS)
            broker.stop()  # SIGTERM: Mosquitto saves the subscriber's session
            await until(lambda: not sink.connected)  # noticed while idle
        queued = [event(kind=k) for k in ("ended", "started", "ended")]
        assert all(sink.offer(e) for e in queued)
        await asyncio.sleep(0.3)  # a few reconnection attempts against nothing
        assert sink.sent == 3 and sink.failed == 0  # discovery, the first event and its state
        broker.start()
        await until(lambda: sink.queued == 0)
        assert sink.sent == 3 + 3 + 1  # the queued events, and their state updates coalesced into the latest
        assert sink.reconnects >= 1 and sink.failed == 0 and sink.dropped == 0
        async with Subscriber(broker.port, client_id="restart-sub", clean=False) as back:  # its session is back
            await until(lambda: len(back.on(EVENTS)) == 3)
            assert [json.loads(p)["id"] for p, _ in back.on(EVENTS)] == [e.id for e in queued]
            assert (await back.retained()) == {}  # subscribed to events only, none retained
        async with Subscriber(broker.port, "livewatch/#") as late:
            held = await late.retained()
        assert held[STATE] == b"OFF" and held[T.status] == b"online"
        await sink.stop()

    with MosquittoBroker(tmp_path, persistence=True).start() as broker:
        asyncio.run(main(broker))


@needs_mosquitto
def test_mqtt_republishes_retained_state_after_a_broker_that_forgot_it(tmp_path: Path) -> None:
    async def main(broker: MosquittoBroker) -> None:
        sink = MqttSink(broker.url, options=FAST, keepalive_s=5)
        sink.start()
        sink.watch_changed(SPEC, present=True)
        sink.watch_state(SPEC, on=True)
        await until(lambda: sink.sent == 2)
        broker.kill()  # no persistence: every retained message is gone
        await until(lambda: not sink.connected)
        broker.start()
        await until(lambda: sink.connected and sink.reconnects == 1)
        async with Subscriber(broker.port, "livewatch/#", "homeassistant/#") as late:
            held = await late.retained()
        assert held[STATE] == b"ON" and held[T.status] == b"online" and CONFIG in held
        await sink.stop()

    with MosquittoBroker(tmp_path).start() as broker:
        asyncio.run(main(broker))


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    ca, ca_key, cert, key, csr, ext = (folder / n for n in ("ca.crt", "ca.key", "server.crt", "server.key",
                                                            "server.csr", "ext.cnf"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=livewatch test CA", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@needs_mosquitto
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # paho-mqtt 2.2 leaves the socket
def test_mqtts_verifies_the_broker_certificate(tmp_path: Path) -> None:         # of a failed handshake to the GC
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.skip("the openssl command is needed to make a test certificate")
    ca, cert, key = _certificates(tmp_path)

    async def main(broker: MosquittoBroker) -> None:
        trusted = MqttSink(broker.url, ca_file=str(ca), options=FAST)
        system_cas = MqttSink(broker.url, name="system", options=FAST)  # the test CA is not among them
        for sink in (trusted, system_cas):
            sink.start()
        await until(lambda: trusted.connected and system_cas.last_error is not None)
        assert not system_cas.connected and "certificate" in (system_cas.last_error or "").lower()
        for sink in (trusted, system_cas):
            await sink.stop(timeout_s=0.2)

    with MosquittoBroker(tmp_path / "broker", tls=(ca, cert, key)).start() as broker:
        asyncio.run(main(broker))
    gc.collect()  # here, where its ResourceWarning is expected, not in a later test
