"""Watches end to end on a real daemon (tiny checkpoint, test-pattern camera): a watch added over the WebSocket API
with thresholds that make it fire (random weights make P(yes) noise: the mechanics are tested, not the judgement)
sends `started` to subscribers with its evidence frame served over HTTP, `ended` when it is removed, is listed
with its figures in status and /metrics, and a saved watch survives a restart; the same events reach a real
webhook receiver (signed) and a real Mosquitto broker (events, retained state, Home Assistant discovery)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

from mqtt_broker import MosquittoBroker
from test_daemon import FAST_DEMO, make_daemon, status_json  # noqa: F401  (the fixture)
from test_sinks import SECRET, Receiver, Subscriber, needs_mosquitto, until
from livewatch.watches.mqtt import Topics

FIRING = {"camera": "demo", "condition": "the test pattern is on screen", "on": 0.001, "off": 0.0, "confirm": 1,
          "cooldown_s": 0}


EVENTS: dict[int, list[dict]] = {}  # events that arrived while a reply was awaited, per connection


def request(ws, **message) -> dict:
    ws.send(json.dumps(message))
    while True:
        reply = json.loads(ws.recv(timeout=60))
        if reply.get("id") == message["id"]:
            return reply
        if reply["type"] == "event":
            EVENTS.setdefault(id(ws), []).append(reply)


def next_event(ws, timeout: float = 60) -> dict:
    if EVENTS.get(id(ws)):
        return EVENTS[id(ws)].pop(0)
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message["type"] == "event":
            return message


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


def test_a_watch_fires_to_subscribers_ends_on_removal_and_survives_a_restart(make_daemon) -> None:  # noqa: F811
    d = make_daemon(FAST_DEMO).start()
    with connect(d.url) as ws:
        assert request(ws, type="watch.subscribe", id="s")["type"] == "watch.subscribed"
        added = request(ws, type="watch.add", id=1, name="screen", **FIRING)
        assert added["type"] == "watch.added" and added["watch"]["state"] == "off", added
        event = next_event(ws)
        assert event["kind"] == "started" and event["watch"] == "screen" and event["camera"] == "demo"
        assert 0.0 < event["probability"] <= 1.0 and event["latency_s"] >= 0 and event["frame_time"] > 0
        status, body, kind = get(f"http://127.0.0.1:{d.port}{event['frame_url']}")
        assert status == 200 and kind == "image/jpeg" and body[:2] == b"\xff\xd8", (status, body[:40])
        assert get(f"http://127.0.0.1:{d.port}/frames/demo/999999999.jpg")[0] == 404
        assert get(f"http://127.0.0.1:{d.port}/frames/../etc/passwd.jpg")[0] == 404

        listed = request(ws, type="watch.list", id=2)["watches"]
        assert [w["name"] for w in listed] == ["screen"] and listed[0]["state"] == "on"
        assert listed[0]["evaluations"] >= 1 and listed[0]["events"] == 1
        errors = [request(ws, type="watch.add", id=3, name="x", camera="nope", condition="c"),
                  request(ws, type="watch.add", id=4, name="x", camera="demo", condition="c", on=0.2, off=0.5),
                  request(ws, type="watch.remove", id=5, name="nope")]
        assert [e["code"] for e in errors] == ["unknown_camera", "bad_request", "unknown_watch"]

        watches = status_json(d)["watches"]["watches"]
        assert watches["screen"]["state"] == "on" and watches["screen"]["last_event"]["kind"] == "started"
        metrics = get(f"http://127.0.0.1:{d.port}/metrics")[1].decode()
        assert 'livewatch_watch_on{watch="screen"} 1.0' in metrics
        assert 'livewatch_event_latency_seconds_count{sink="websocket"}' in metrics

        assert request(ws, type="watch.remove", id=6, name="screen")["type"] == "watch.removed"
        ended = next_event(ws)
        assert ended["kind"] == "ended" and ended["watch"] == "screen"
        request(ws, type="watch.add", id=7, name="kept", **FIRING)
    assert d.terminate() == 0

    again = make_daemon(FAST_DEMO, state=d.state).start()
    with connect(again.url) as ws:
        request(ws, type="watch.subscribe", id="s", watches=["kept"])
        assert [w["name"] for w in request(ws, type="watch.list", id=1)["watches"]] == ["kept"]
        assert next_event(ws)["watch"] == "kept"


class Lines:
    """A child's output read by a thread, so a test waits for a line with a deadline instead of blocking forever."""

    def __init__(self, stream) -> None:
        import queue
        import threading

        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)

    def next(self, timeout: float = 120) -> str:
        return self.lines.get(timeout=timeout)


def test_the_cli_adds_lists_follows_and_removes_watches(make_daemon) -> None:  # noqa: F811
    import subprocess
    import sys

    d = make_daemon(FAST_DEMO).start()
    events = subprocess.Popen([sys.executable, "-m", "livewatch", "events", "--json", "--url", d.url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = Lines(events.stdout), Lines(events.stderr)
        # the watch fires once and stays on: it must be added after the follower is subscribed (a slow start misses it)
        assert err.next().startswith("following events of all watches")
        added = d.cli("watch", "add", "demo", "screen", "the test pattern is on screen", "--on", "0.001", "--off", "0",
                      "--confirm", "1", "--cooldown", "0", "--hours", "0-24")
        assert added.returncode == 0 and "watch.added: screen on demo" in added.stdout, added.stderr
        event = json.loads(out.next())
        assert event["type"] == "event" and event["watch"] == "screen" and event["kind"] == "started"
        listed = d.cli("watch", "ls")
        assert listed.returncode == 0 and listed.stdout.startswith("screen\tdemo\ton\t"), listed.stdout
        bad = d.cli("watch", "add", "demo", "x", "c", "--hours", "late")
        assert bad.returncode != 0 and "--hours" in bad.stderr
        assert d.cli("watch", "rm", "screen").returncode == 0
        assert json.loads(out.next())["kind"] == "ended"
        missing = d.cli("watch", "rm", "screen")
        assert missing.returncode != 0 and "unknown_watch" in missing.stderr
    finally:
        events.terminate()
        events.wait(10)


@needs_mosquitto
def test_events_reach_a_signed_webhook_and_mqtt_with_home_assistant_discovery(make_daemon, tmp_path: Path) -> None:  # noqa: F811
    import asyncio

    import websockets

    with Receiver() as hook, MosquittoBroker(tmp_path / "broker").start() as broker:
        config = (FAST_DEMO + f'[events]\nwebhook_url = "{hook.url}"\nwebhook_secret_env = "HOOK_SECRET"\n'
                  f'mqtt_url = "{broker.url}"\n')
        d = make_daemon(config, env={"HOOK_SECRET": SECRET.decode()}).start()
        topics = Topics()
        state, event_topic = topics.state("demo", "screen"), topics.event("demo", "screen")

        async def main() -> None:
            async with Subscriber(broker.port, "livewatch/#", "homeassistant/#") as sub:
                async with websockets.connect(d.url) as ws:
                    await ws.send(json.dumps({"type": "watch.add", "id": 1, "name": "screen", **FIRING}))
                    await sub.wait(event_topic, timeout=60)
                    await sub.wait(state, b"ON", timeout=10)
                    await sub.sync()  # (live messages carry no retain flag: what a new subscriber gets is checked below)
                    config_payload = json.loads(sub.on(topics.config("demo", "screen"))[-1][0])
                    assert config_payload["state_topic"] == state and config_payload["unique_id"] == "livewatch_demo_screen"
                    assert sub.on("livewatch/status")[-1][0] == b"online"
                    started = json.loads(sub.on(event_topic)[0][0])
                    assert started["kind"] == "started" and started["watch"] == "screen"
                    await ws.send(json.dumps({"type": "watch.remove", "id": 2, "name": "screen"}))
                    await sub.wait(state, b"OFF", timeout=10)
                    await until(lambda: len(hook.requests) >= 2, timeout=10)
                    # the sink clears the discovery config after the OFF state: wait for it (a loaded full run hit it)
                    await sub.wait(topics.config("demo", "screen"), b"", timeout=10)
                    await sub.sync()
                    assert sub.on(topics.config("demo", "screen"))[-1][0] == b""  # Home Assistant forgets the sensor
            async with Subscriber(broker.port, "livewatch/#", "homeassistant/#") as late:
                retained = await late.retained()  # what a client connecting now is told
                assert retained.get("livewatch/status") == b"online" and state not in retained

        asyncio.run(main())
        kinds = [r["body"]["kind"] for r in hook.requests]
        assert kinds == ["started", "ended"] and all(r["signed"] for r in hook.requests)
        assert SECRET.decode() not in d.log.read_text()
        sinks = status_json(d)["watches"]["sinks"]
        assert sinks["webhook"]["sent"] == 2 and sinks["mqtt"]["connected"] is True and sinks["mqtt"]["failed"] == 0
        assert sinks["webhook"]["target"] == "http://127.0.0.1:" + hook.url.split(":")[2].split("/")[0]  # no path
        from prometheus_client.parser import text_string_to_metric_families

        families = [f.name for f in text_string_to_metric_families(get(f"http://127.0.0.1:{d.port}/metrics")[1].decode())]
        assert len(families) == len(set(families)) and "livewatch_sink_sent" in families  # one family, two sinks
        assert d.terminate() == 0
