"""The watch manager's rules, in process (the daemon's engine and sinks replaced by recorders; the real ones are
tested in test_watch_daemon.py and test_sinks.py): concurrent API changes keep the store and the set in step, a
removed camera's watches end and forget their evidence, a re-added identical watch keeps its state, a bad
evaluation result is dropped without losing the others, describe follow-ups are capped."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from livewatch.engine.results import WatchResult
from livewatch.errors import ErrorCode, RequestError
from livewatch.watches.events import WatchEvent, WatchSpec
from livewatch.watches.manager import MAX_DESCRIBES, WatchManager
from livewatch.watches.store import WatchStore


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.items: list[tuple] = []

    def publish_event(self, event: WatchEvent) -> None:
        self.items.append(("event", event.watch, event.kind))

    def watch_changed(self, spec: WatchSpec, present: bool) -> None:
        self.items.append(("changed", spec.camera, spec.name, present))

    def watch_state(self, spec: WatchSpec, on: bool) -> None:
        self.items.append(("state", spec.name, on))

    def stats(self) -> dict:
        return {}

    async def stop(self, timeout_s: float | None = None) -> None:
        return None


def manager(tmp_path: Path, cameras: list[str], describe=None) -> tuple[WatchManager, dict, Recorder]:
    engine: dict[str, dict[str, str]] = {}
    sink = Recorder()

    async def no_describe(camera: str, question: str, tokens: int) -> str:
        await asyncio.sleep(3600)
        return ""

    m = WatchManager(WatchStore(tmp_path), {}, lambda c, w: engine.__setitem__(c, w), lambda: cameras,
                     lambda c, i: b"\xff\xd8jpeg", describe or no_describe, sinks=[sink], max_watches=8)
    m.start()
    return m, engine, sink


def result(watch: str, p: float, camera: str = "door", frame: int = 7, condition: str = "") -> WatchResult:
    return WatchResult(camera, watch, p, frame, 1_780_000_000.0, 1, 2.0, condition)


def test_concurrent_adds_and_removes_keep_the_store_and_the_set_in_step(tmp_path: Path) -> None:
    async def main() -> None:
        m, engine, _ = manager(tmp_path, ["door"])
        specs = [WatchSpec(f"w{i}", "door", f"thing {i}") for i in range(6)]
        await asyncio.gather(*(m.add(s) for s in specs))
        await asyncio.gather(*(m.remove(f"w{i}") for i in range(0, 6, 2)))
        saved = json.loads((tmp_path / "watches.json").read_text())["added"]
        assert sorted(saved) == sorted(m.watches) == ["w1", "w3", "w5"]
        assert sorted(engine["door"]) == ["w1", "w3", "w5"]
    asyncio.run(main())


def test_a_removed_camera_ends_its_watches_and_forgets_their_evidence(tmp_path: Path) -> None:
    async def main() -> None:
        cameras = ["door"]
        m, engine, sink = manager(tmp_path, cameras)
        await m.add(WatchSpec("person", "door", "a person", on=0.5, off=0.2, confirm=1, cooldown_s=0))
        m.on_results([result("person", 0.9)])
        assert m.watches["person"].trigger.state == "on" and m.evidence("door", 7) == b"\xff\xd8jpeg"
        cameras.remove("door")
        m.camera_changed("door")
        assert engine["door"] == {} and m.watches["person"].trigger.state == "off"
        assert ("event", "person", "ended") in sink.items and ("state", "person", False) in sink.items
        m.on_results([result("person", 0.9)])  # a result still in flight for the removed camera
        assert m.watches["person"].trigger.state == "off"
    asyncio.run(main())


def test_an_identical_watch_added_again_keeps_its_state(tmp_path: Path) -> None:
    async def main() -> None:
        m, _, sink = manager(tmp_path, ["door", "yard"])
        spec = WatchSpec("person", "door", "a person", on=0.5, off=0.2, confirm=1, cooldown_s=0)
        await m.add(spec)
        m.on_results([result("person", 0.9)])
        await m.add(spec)
        assert m.watches["person"].trigger.state == "on" and sink.items.count(("event", "person", "ended")) == 0
        await m.add(WatchSpec("person", "door", "a parcel", on=0.5, off=0.2, confirm=1, cooldown_s=0))
        m.on_results([result("person", 0.9, condition="a person")])  # computed on the old condition: dropped
        assert m.watches["person"].trigger.state == "off"
        m.on_results([result("person", 0.9, condition="a parcel")])
        assert m.watches["person"].trigger.state == "on"
        await m.add(WatchSpec("person", "yard", "a person"))  # moved: ended, old sensor removed, new one added
        assert ("event", "person", "ended") in sink.items
        assert ("changed", "door", "person", False) in sink.items and ("changed", "yard", "person", True) in sink.items
    asyncio.run(main())


def test_bad_results_are_dropped_without_losing_the_others(tmp_path: Path) -> None:
    async def main() -> None:
        m, _, _ = manager(tmp_path, ["door"])
        for name in ("a", "b"):
            await m.add(WatchSpec(name, "door", name, on=0.5, off=0.2, confirm=1, cooldown_s=0))
        m.on_results([result("a", math.nan), result("b", 0.9)])
        assert m.results_dropped == 1 and m.watches["b"].trigger.state == "on"
        assert m.watches["a"].trigger.last_probability is None
        json.dumps(m.stats(), allow_nan=False)  # status stays serialisable
    asyncio.run(main())


def test_describe_follow_ups_are_capped(tmp_path: Path) -> None:
    async def main() -> None:
        m, _, _ = manager(tmp_path, ["door"])
        for i in range(MAX_DESCRIBES + 2):
            await m.add(WatchSpec(f"w{i}", "door", "x", on=0.5, off=0.2, confirm=1, cooldown_s=0, describe=True))
        m.on_results([result(f"w{i}", 0.9) for i in range(MAX_DESCRIBES + 2)])
        assert m.describes_skipped == 2 and m.stats()["describes_skipped"] == 2
        await m.stop()
        m.on_results([result("w0", 0.1)])  # stopped: nothing applied any more
        assert m.watches["w0"].trigger.state == "on"
    asyncio.run(main())


def test_the_watch_load_projects_the_measured_cost_of_an_evaluation() -> None:
    from livewatch.watches.load import WatchLoad

    load = WatchLoad(limit=0.5, evaluations_per_s=0.5, window_s=60)
    assert load.projected(100, 0.0) is None  # nothing measured: a burst of additions waits for the first step
    assert load.admits(16, 0.0) and not load.admits(17, 0.0)
    load.observe(1.0, 40.0, 4)  # 10 ms an evaluation
    load.observe(2.0, 0.0, 0)  # a step without evaluations tells nothing
    assert load.seconds_per_evaluation(2.0) == pytest.approx(0.010)
    assert load.projected(100, 2.0) == pytest.approx(0.5)  # 100 watches x 0.5 a second x 10 ms
    assert load.admits(100, 2.0) and not load.admits(101, 2.0)
    assert load.share(1.5) is None  # under a second of wall time: no share yet
    load.observe(3.0, 160.0, 4)  # dearer now: 25 ms on average over the window
    assert load.seconds_per_evaluation(3.0) == pytest.approx(0.025) and not load.admits(41, 3.0)
    assert load.share(3.0) == pytest.approx(0.2 / 2.04)
    # the window moved on with no evaluation (cameras offline): nothing taken, the last cost kept for the cap
    assert load.share(100.0) == 0.0 and load.seconds_per_evaluation(100.0) == pytest.approx(0.025)
    assert not load.admits(41, 100.0)


def test_a_watch_add_past_the_measured_engine_share_is_busy_and_descriptions_take_question_slots(
        tmp_path: Path) -> None:
    class Budget:
        limit, count = 2, 0

    budget = Budget()
    started: list[str] = []

    async def describe(camera: str, question: str, tokens: int) -> str:
        started.append(camera)
        assert budget.count >= 1  # the description holds a question slot while it runs
        await asyncio.sleep(3600)
        return ""

    async def main() -> None:
        now = [0.0]
        m = WatchManager(WatchStore(tmp_path), {}, lambda c, w: None, lambda: ["door"], lambda c, i: b"\xff\xd8jpeg",
                         describe, max_watches=64, question_budget=budget, engine_share=0.5, evaluations_per_s=0.5,
                         clock=lambda: now[0])
        m.start()
        await m.add(WatchSpec("a", "door", "a person", confirm=1, describe=True))
        await m.add(WatchSpec("b", "door", "a car", confirm=1, describe=True))
        for t in range(1, 31):  # each evaluation costs 0.2 s: two watches at 0.5 a second take 20%
            now[0] = float(t)
            m.on_results([WatchResult("door", "a", 0.1, 7, 1.0, t, 400.0, "a person"),
                          WatchResult("door", "b", 0.1, 7, 1.0, t, 400.0, "a car")])
        await m.add(WatchSpec("c", "door", "a dog"))  # 30%
        await m.add(WatchSpec("d", "door", "a cat"))  # 40%
        await m.add(WatchSpec("e", "door", "a bird"))  # 50%
        with pytest.raises(RequestError) as info:
            await m.add(WatchSpec("f", "door", "a fox"))  # 60%
        message = str(info.value)
        assert info.value.code is ErrorCode.BUSY and "6 watches would take 60%" in message and "200.0 ms" in message
        await m.add(WatchSpec("a", "door", "a person, again", confirm=1, describe=True))  # a replacement fits
        assert m.stats()["engine_share"] == pytest.approx(30 * 0.4 / 29.4, abs=1e-4)
        budget.count = budget.limit  # the daemon's questions fill the budget: a start goes without a description
        m.on_results([WatchResult("door", "b", 0.99, 7, 1.0, 40, 1.0, "a car")])
        await asyncio.sleep(0)
        assert started == [] and m.describes_skipped == 1
        budget.count = 0
        m.on_results([WatchResult("door", "a", 0.99, 7, 1.0, 41, 1.0, "a person, again")])
        await asyncio.sleep(0.05)
        assert started == ["door"] and budget.count == 1
        await m.stop()
        assert budget.count == 0  # a cancelled description gives its slot back
    asyncio.run(main())
