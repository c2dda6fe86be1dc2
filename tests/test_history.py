"""The history archive (livewatch.memory.history and the camera memory's use of it, on a real frame store): pairs
that leave memory stay on disk as rows with no role, are trimmed oldest first by age and by bytes, come back after
a restart without their pixels being decoded, and a failing disk sheds the oldest history instead of stopping the
camera."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from memory_helpers import frame
from livewatch.memory.camera import CameraMemory, MemoryParams
from livewatch.memory.history import History
from livewatch.memory.jpegfile import PairRecord
from livewatch.memory.store import FrameStore


def record(i: int, t: float) -> PairRecord:
    return PairRecord(i, (2 * i, 2 * i + 1), (t, t + 1.0), (t, t + 1.0), False, 0.1, True, False, (b"x" * 10,))


def test_history_trims_oldest_first_by_age_and_by_bytes() -> None:
    h = History(max_age_s=10.0, max_bytes=1000)
    assert [r.in_window or r.is_star for r in (h.add(record(i, 2.0 * i), 100) for i in range(5))] == [False] * 5
    assert h.trim() == [] and h.nbytes == 500  # spans 0 .. 9 s
    h.add(record(5, 10.0), 100)  # spans 0 .. 11 s: the oldest goes
    assert [r.id for r in h.trim()] == [0] and len(h) == 5
    h.add(record(6, 11.0), 700)  # 1,200 bytes: the oldest go until it fits
    assert [r.id for r in h.trim()] == [1, 2] and h.nbytes == 1000
    assert [e.record.id for e in h.between(8.5, 10.5)] == [4, 5]
    assert [r.id for r in h.shed(0.5)] == [3, 4] and h.stats()["history_pairs"] == 2
    assert not History(0, 100).enabled and not History(100, 0).enabled


def params(**kw) -> MemoryParams:
    return MemoryParams(star_pairs=2, window_pairs=3, max_bytes=10**9, **kw)


def feed(mem: CameraMemory, start: int, n: int, t0: float = 1000.0) -> None:
    for seq in range(start, start + n):
        mem.add_frame(frame(seq, t0 + seq, scene=(seq // 8) % 4))


def files(tmp_path: Path) -> set[int]:
    return {int(p.name.split("-")[0]) for p in (tmp_path / "frames" / "cam").glob("*.jpg")}


def test_pairs_leaving_memory_stay_on_disk_and_come_back_after_a_restart(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    mem = CameraMemory("cam", params(history_s=3600.0, history_max_bytes=10**9), store)
    feed(mem, 0, 60)
    in_memory = {p.id for p in mem.context()[0]}
    stats = mem.stats()
    assert stats["history_pairs"] == 30 - len(in_memory) and stats["history_span_s"] > 0
    assert files(tmp_path) == set(range(30))  # every pair's files: in memory or in the history
    assert stats["history_bytes"] + stats["bytes_on_disk"] == store.bytes_on_disk("cam")

    loaded = FrameStore(tmp_path).load("cam")
    assert {r.id for r, _ in loaded.archived} | {r.id for r, _ in loaded.pairs} == set(range(30))
    assert all(not r.in_window and not r.is_star for r, _ in loaded.archived)
    again = CameraMemory("cam", params(history_s=3600.0, history_max_bytes=10**9), FrameStore(tmp_path))
    again.restore()
    assert again.stats()["history_pairs"] == stats["history_pairs"]
    assert {p.id for p in again.context()[0]} == in_memory

    shorter = CameraMemory("cam", params(history_s=10.0, history_max_bytes=10**9), FrameStore(tmp_path))
    shorter.restore()  # a shorter history configured: trimmed at once, files and rows
    kept = shorter.history.entries
    assert kept[-1].end_time - kept[0].time <= 10.0
    assert files(tmp_path) == in_memory | {e.record.id for e in kept}


def test_history_within_its_byte_bound_and_off_when_configured_off(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    one_pair = None
    mem = CameraMemory("cam", params(history_s=3600.0, history_max_bytes=60_000), store)
    feed(mem, 0, 80)
    one_pair = max(e.nbytes for e in mem.history.entries)
    assert 60_000 - one_pair < mem.history.nbytes <= 60_000
    off = CameraMemory("off", params(), FrameStore(tmp_path / "b"))
    feed(off, 0, 40)
    assert off.stats()["history_pairs"] == 0 and len(list((tmp_path / "b" / "frames" / "off").glob("*.jpg"))) <= 10


def test_a_failing_disk_sheds_the_oldest_history_and_the_camera_goes_on(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mem = CameraMemory("cam", params(history_s=3600.0, history_max_bytes=10**9), FrameStore(tmp_path))
    feed(mem, 0, 60)
    before = len(mem.history)
    oldest = mem.history.entries[0].record.id
    real_open = os.open

    def full_disk_open(path, flags, *args, **kwargs):
        if flags & os.O_WRONLY and str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("os.open", full_disk_open)
    feed(mem, 60, 2)
    assert len(mem.history) < before and oldest not in files(tmp_path)  # space given back at once
    assert len(mem.context()[0]) >= 3  # the camera goes on from RAM
    monkeypatch.undo()
    feed(mem, 62, 4)
    assert mem.stats()["unsaved_pairs"] == 0


def test_a_daemon_keeps_its_history_through_kill_9_within_its_bound(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A real daemon watching a real H.264 file camera (looped) at 4 fps with a 2-pair window: the pairs that
    leave memory fill the history up to its byte bound; a kill -9 loses none of what was committed."""
    import json

    from daemon_helpers import DaemonProcess
    from media import wait_until, write_h264

    clip = write_h264(tmp_path / "clip.mp4", seconds=3.0, fps=15)
    config = ("[capture]\nfps = 4.0\n[memory]\nstar_frames = 2\nwindow_frames = 4\nwindow_slack_frames = 0\n"
              "history_max_bytes = 60000\n"
              f'[cameras.file]\nurl = "{clip}#loop=1"\n')
    d = DaemonProcess(tmp_path, tiny_model_dir, config).start()
    try:
        def memory() -> dict:
            out = d.cli("status", "--json")
            return json.loads(out.stdout.strip().splitlines()[-1])["memory"]["file"] if out.returncode == 0 else {}

        def full() -> bool:  # the bound reached: the oldest are leaving
            m = memory()
            return m.get("history_bytes", 0) > 40_000

        wait_until(full, 60, interval=0.5)
        before = memory()
        assert before["history_pairs"] >= 4 and before["history_bytes"] <= 60_000
        d.kill9()
    finally:
        d.stop()
    again = DaemonProcess(tmp_path, tiny_model_dir, config.replace("#loop=1", "#loop=0").replace("fps = 4.0", "fps = 0.1"),
                          state=d.state).start()
    try:
        out = again.cli("status", "--json")
        after = json.loads(out.stdout.strip().splitlines()[-1])["memory"]["file"]
        assert after["history_pairs"] >= before["history_pairs"] - 2  # at most the last unsynced commit
        assert after["history_bytes"] <= 60_000 and after["history_span_s"] > 0
    finally:
        again.stop()


def test_a_question_about_a_time_range_uses_that_range_only_and_leaves_the_live_prefix(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    """A real daemon with a history: `ask --since/--until` answers from the frames of that range (checked from the
    evidence), and the camera's next live question still reuses its prefix."""
    import json

    from daemon_helpers import DaemonProcess
    from media import wait_until

    config = ("[capture]\nfps = 4.0\n[memory]\nstar_frames = 2\nwindow_frames = 4\nwindow_slack_frames = 0\n"
              '[model]\nencode_mode = "eager"\n[cameras.demo]\nurl = "testsrc://?size=320x240&rate=8"\n')
    d = DaemonProcess(tmp_path, tiny_model_dir, config).start()
    try:
        def status() -> dict:
            out = d.cli("status", "--json")
            return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}

        wait_until(lambda: status().get("memory", {}).get("demo", {}).get("history_pairs", 0) >= 6, 60, 0.5)
        oldest = status()["memory"]["demo"]["history_oldest_time"]
        start, end = oldest - 0.5, oldest + 2.5  # the history's first few pairs: long gone from memory
        import datetime

        iso = [datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat() for t in (start, end)]
        live = json.loads(d.cli("ask", "--json", "--max-tokens", "3", "Now?").stdout.strip().splitlines()[-1])
        out = d.cli("ask", "--json", "--max-tokens", "3", "--since", iso[0], "--until", iso[1], "What happened?")
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        assert answer["metrics"]["range"]["pairs"] == len(answer["evidence"]) >= 1
        assert all(e["end_time"] >= start and e["time"] <= end for e in answer["evidence"])
        assert all(e["url"].startswith("/frames/demo/") for e in answer["evidence"])
        assert d.cli("status", "--json").returncode == 0
        again = json.loads(d.cli("ask", "--json", "--max-tokens", "3", "And now?").stdout.strip().splitlines()[-1])
        assert live["metrics"]["frames_in_context"] > 0 and "range" not in again["metrics"]
        bad = d.cli("ask", "--since", "yesterday", "x")
        assert bad.returncode != 0 and "bad_request" in bad.stderr
        empty = d.cli("ask", "--since", "2001-01-01", "--until", "2001-01-02", "x")
        assert empty.returncode != 0 and "no_frames" in empty.stderr
    finally:
        d.stop()
