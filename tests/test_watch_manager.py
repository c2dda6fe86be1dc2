"""The watch manager's rules, in process (the daemon's engine and sinks replaced by recorders; the real ones are
tested in test_watch_daemon.py and test_sinks.py): concurrent API changes keep the store and the set in step, a
removed camera's watches end and forget their evidence, a re-added identical watch keeps its state, a bad
evaluation result is dropped without losing the others, describe follow-ups are capped."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from livewatch.engine.watcheval import WatchResult
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
