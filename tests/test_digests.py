"""Digests: the service on its own (ranges from the last run, a missed run once at start-up, a failing camera,
an unreadable state file), then a real daemon with the test pattern: a digest on a 1-minute schedule reaches a
WebSocket subscriber, a signed webhook and a real Mosquitto subscriber with evidence URLs that serve frames with
the token; `livewatch digest run` and `ls`; after a restart with the state file showing an old last run, the
missed run runs once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from test_daemon import FAST_DEMO, make_daemon  # noqa: F401  (the fixture)
from livewatch.digests.service import DigestPlan, DigestService
from livewatch.errors import ErrorCode, RequestError

PLAN = DigestPlan(("door", "yard"), "1h", "What happened?", 64)


class Fake:
    def __init__(self) -> None:
        self.asked: list[tuple[str, float, float]] = []
        self.published: list[dict] = []
        self.now = 7200.0 * 100 + 30.0

    async def ask(self, camera: str, question: str, since: float, until: float, max_tokens: int):
        self.asked.append((camera, since, until))
        if camera == "yard":
            raise RequestError(ErrorCode.NO_FRAMES, "no frames between those times")
        return f"{camera}: a person came by", [{"frame_id": 7, "url": f"/frames/{camera}/7.jpg"}]

    def service(self, tmp: Path, plans=None) -> DigestService:
        return DigestService(plans or {"evening": PLAN}, tmp, None, self.ask, self.published.append, lambda: self.now)


def test_a_run_covers_the_range_since_the_last_and_keeps_going_when_a_camera_fails(tmp_path: Path) -> None:
    fake = Fake()

    async def main() -> None:
        s = fake.service(tmp_path)
        first = await s.run("evening")
        assert first["type"] == "digest" and first["digest"] == "evening" and first["reason"] == "request"
        assert (first["since"], first["until"]) == (fake.now - 30.0, fake.now)  # new: since the schedule's last time
        door, yard = first["cameras"]
        assert door == {"camera": "door", "text": "door: a person came by",
                        "evidence": [{"frame_id": 7, "url": "/frames/door/7.jpg"}]}
        assert yard == {"camera": "yard", "error": {"code": "no_frames", "message": "no frames between those times"}}
        fake.now += 600.0
        second = await s.run("evening")
        assert second["since"] == first["until"] and second["until"] == fake.now
        assert fake.published == [first, second]
        with pytest.raises(RequestError) as err:
            await s.run("nope")
        assert err.value.code is ErrorCode.UNKNOWN_DIGEST
        listing = s.list()
        assert listing["digests"][0]["last_run"] == fake.now and listing["recent"][-1]["id"] == second["id"]
        assert listing["digests"][0]["next_run"] == (int(fake.now) // 3600 + 1) * 3600

    asyncio.run(main())
    saved = json.loads((tmp_path / "digests.json").read_text())
    assert saved["last_run"] == {"evening": fake.now} and len(saved["recent"]) == 2
    assert (tmp_path / "digests.json").stat().st_mode & 0o777 == 0o600


def test_a_missed_run_runs_once_at_start_up(tmp_path: Path) -> None:
    fake = Fake()
    (tmp_path / "digests.json").write_text(json.dumps({"last_run": {"evening": fake.now - 3 * 3600}, "recent": []}))

    async def main() -> None:
        s = fake.service(tmp_path)
        s.start()
        for _ in range(100):
            if fake.published:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await s.stop()

    asyncio.run(main())
    assert [d["reason"] for d in fake.published] == ["missed"]  # three hours missed: one run over all of them
    assert fake.published[0]["since"] == fake.now - 3 * 3600

    fake.published.clear()
    asyncio.run(main())  # it ran: nothing missed any more
    assert fake.published == []


def test_an_unreadable_state_file_is_moved_aside(tmp_path: Path) -> None:
    fake = Fake()
    (tmp_path / "digests.json").write_text('{"last_run": {"evening": "yesterday"}}')

    async def main() -> None:
        s = fake.service(tmp_path)
        s.start()
        await asyncio.sleep(0.05)
        await s.stop()
        assert s.state.last_run == {}

    asyncio.run(main())
    assert fake.published == [] and list(tmp_path.glob("digests.json.corrupt-*"))


def test_the_protocol_requests() -> None:
    from livewatch.server import protocol as p

    assert p.parse_request('{"type": "digest.run", "id": 1, "digest": "evening"}') == p.DigestRun(id=1, digest="evening")
    assert p.parse_request('{"type": "digest.list", "id": "x"}') == p.DigestList(id="x")
    for bad in ('{"type": "digest.run", "id": 1}', '{"type": "digest.run", "id": 1, "digest": "../x"}',
                '{"type": "digest.list", "id": 1, "extra": 2}'):
        with pytest.raises(p.ProtocolError):
            p.parse_request(bad)
    assert json.loads(p.encode_request(p.DigestRun(id=2, digest="e"))) == {"type": "digest.run", "id": 2, "digest": "e"}


# -- a real daemon ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_digest_on_a_one_minute_schedule_reaches_everyone(make_daemon, tmp_path: Path) -> None:  # noqa: F811
    import websockets

    from mqtt_broker import MosquittoBroker
    from test_evidence_daemon import TOKEN, get
    from test_sinks import SECRET, Receiver, Subscriber, until

    with Receiver() as hook, MosquittoBroker(tmp_path / "broker").start() as broker:
        config = (FAST_DEMO + f'[events]\nwebhook_url = "{hook.url}"\nwebhook_secret_env = "HOOK_SECRET"\n'
                  f'mqtt_url = "{broker.url}"\n'
                  '[digests.minute]\ncameras = ["demo", "gone"]\nschedule = "1m"\nmax_tokens = 6\n')
        env = {"HOOK_SECRET": SECRET.decode(), "LIVEWATCH_TOKEN": TOKEN}
        d = make_daemon(config, env=env).start()
        headers = {"Authorization": f"Bearer {TOKEN}"}

        async def main() -> dict:
            async with Subscriber(broker.port, "livewatch/digest/#", "homeassistant/sensor/#") as sub:
                async with websockets.connect(d.url, additional_headers=headers) as ws:
                    await ws.send(json.dumps({"type": "watch.subscribe", "id": 1}))
                    while True:  # the next minute's digest, as the subscriber of every watch gets it
                        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=150))
                        if message["type"] == "digest":
                            break
                await sub.wait("livewatch/digest/minute", timeout=30)
                await until(lambda: any(r["body"].get("type") == "digest" for r in hook.requests), timeout=30)
                pushed = json.loads(sub.on("livewatch/digest/minute")[0][0])
                await sub.wait("homeassistant/sensor/livewatch_digest_minute/config", timeout=10)
                sensor = json.loads(sub.on("homeassistant/sensor/livewatch_digest_minute/config")[0][0])
            assert pushed["id"] == message["id"]
            assert sensor["state_topic"] == sensor["json_attributes_topic"] == "livewatch/digest/minute"
            assert sensor["unique_id"] == "livewatch_digest_minute" and "value_template" in sensor
            return message

        digest = asyncio.run(main())
        assert digest["digest"] == "minute" and digest["reason"] == "schedule" and digest["until"] % 60 == 0
        demo, gone = digest["cameras"]
        assert demo["camera"] == "demo" and isinstance(demo["text"], str) and demo["evidence"]
        assert gone["camera"] == "gone" and gone["error"]["code"] == "unknown_camera"
        for item in demo["evidence"][:2]:
            url = f"http://127.0.0.1:{d.port}{item['url']}"
            assert get(url)[0] == 200 and get(url, token=None)[0] == 401
        webhook = next(r for r in hook.requests if r["body"].get("type") == "digest")
        assert webhook["signed"] and webhook["body"]["id"] == digest["id"]

        out = d.cli("digest", "run", "minute", "--json", token=TOKEN, timeout=120)
        assert out.returncode == 0, out.stderr
        ran = json.loads(out.stdout)
        assert ran["reason"] == "request" and ran["since"] == digest["until"]
        out = d.cli("digest", "ls", token=TOKEN)
        assert out.returncode == 0 and out.stdout.startswith("minute\t1m\tdemo,gone\tnext "), out.stdout
        out = d.cli("digest", "run", "nope", token=TOKEN)
        assert out.returncode == 5 and "unknown_digest" in out.stderr
        assert d.terminate() == 0

    # down through a scheduled run: the state says the last run was ten minutes ago; the start runs it once
    state_file = d.state / "digests.json"
    saved = json.loads(state_file.read_text())
    saved["last_run"]["minute"] = time.time() - 600
    state_file.write_text(json.dumps(saved))
    quiet = FAST_DEMO + '[digests.minute]\ncameras = ["demo"]\nschedule = "1m"\nmax_tokens = 4\n'
    again = make_daemon(quiet, env={"LIVEWATCH_TOKEN": TOKEN}, state=d.state).start()

    def recent() -> list[dict]:
        out = again.cli("digest", "ls", "--json", token=TOKEN)
        return json.loads(out.stdout)["recent"] if out.returncode == 0 else []

    from media import wait_until

    wait_until(lambda: any(r["reason"] == "missed" for r in recent()), 120, interval=1.0)
    assert sum(r["reason"] == "missed" for r in recent()) == 1

