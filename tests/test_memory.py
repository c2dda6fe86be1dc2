"""CameraMemory with its on-disk store: bounds, restart, crash safety, failing disks."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from memory_helpers import frame
from livewatch.memory.camera import CameraMemory, MemoryParams
from livewatch.errors import StorageError
from livewatch.memory.jpegfile import decode_jpeg
from livewatch.memory.store import FrameStore

ROOT = Path(__file__).resolve().parent.parent


def feed(mem: CameraMemory, n: int, start: int = 0, scene_every: int = 16) -> None:
    for seq in range(start, start + n):
        mem.add_frame(frame(seq, 1000.0 + seq, scene=(seq // scene_every) % 5))


def test_window_and_star_bounds_hold_over_a_long_run(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    mem = CameraMemory("cam", MemoryParams(star_pairs=3, window_pairs=5, max_bytes=10**9), store)
    feed(mem, 400)
    pairs, version = mem.context()
    stats = mem.stats()
    assert stats["stream_memory_size"] == 10 and stats["star_memory_size"] <= 6
    assert stats["total_frames_added"] == 400 and version == 200
    assert len(pairs) == len({p.id for p in pairs}) <= 8
    assert [p.time for p in pairs] == sorted(p.time for p in pairs)
    files = sorted(p.name for p in (tmp_path / "frames" / "cam").iterdir())
    assert len(files) == stats["unique_frames"]
    assert stats["bytes_on_disk"] == store.bytes_on_disk("cam") == sum(
        (tmp_path / "frames" / "cam" / f).stat().st_size for f in files
    )


def test_window_slack_drops_its_oldest_pairs_at_once(tmp_path: Path) -> None:
    """window 4 pairs + slack 2: the window grows 5, 6, then the next pair drops it back to 4 (three leave at once);
    the set changes by appends only between two drops, so the engine extends its prefix instead of re-prefilling."""
    mem = CameraMemory("cam", MemoryParams(star_pairs=0, window_pairs=4, window_slack=2, max_bytes=10**9),
                       FrameStore(tmp_path))
    sizes, appends_only = [], []
    previous: list[int] = []
    for seq in range(0, 40, 2):
        mem.add_frame(frame(seq, 1000.0 + seq))
        mem.add_frame(frame(seq + 1, 1001.0 + seq))
        ids = [p.id for p in mem.context()[0]]
        sizes.append(len(ids))
        appends_only.append(ids[: len(previous)] == previous)
        previous = ids
    assert sizes[:10] == [1, 2, 3, 4, 5, 6, 4, 5, 6, 4]
    assert appends_only[:10] == [True] * 6 + [False, True, True, False]
    assert mem.stats()["stream_memory_size"] in (8, 10, 12)


def test_byte_bound_evicts_oldest_window_pairs(tmp_path: Path) -> None:
    mem = CameraMemory("cam", MemoryParams(star_pairs=2, window_pairs=50, max_bytes=1024 * 1024), FrameStore(tmp_path))
    one_pair = None
    for seq in range(0, 300, 2):
        mem.add_frame(frame(seq, 1000.0 + seq, size=(360, 640), noise=60))
        mem.add_frame(frame(seq + 1, 1001.0 + seq, size=(360, 640), noise=60))
        one_pair = one_pair or mem.bytes_in_memory()
        assert mem.bytes_in_memory() <= 1024 * 1024
    assert mem.stats()["stream_memory_size"] < 100  # the byte bound, not the frame bound, limited it
    assert one_pair is not None and mem.bytes_in_memory() > 1024 * 1024 - 2 * one_pair


def test_context_version_changes_exactly_when_the_set_changes(tmp_path: Path) -> None:
    mem = CameraMemory("cam", MemoryParams(star_pairs=2, window_pairs=3), None)
    versions = [mem.context()[1]]
    changed = []
    for seq in range(20):
        changed.append(mem.add_frame(frame(seq, 10.0 + seq)))
        versions.append(mem.context()[1])
    assert changed == [False, True] * 10
    assert all((b != a) == c for a, b, c in zip(versions, versions[1:], changed))
    assert mem.add_frame(frame(99, 5.0)) is False and mem.stats()["frames_out_of_order"] == 1
    assert mem.flush_pending() is False
    mem.add_frame(frame(100, 100.0))
    assert mem.flush_pending() is True
    assert mem.context()[0][-1].first is mem.context()[0][-1].second


def test_restart_restores_window_and_stars_exactly(tmp_path: Path) -> None:
    params = MemoryParams(star_pairs=4, window_pairs=5)
    mem = CameraMemory("cam", params, FrameStore(tmp_path))
    feed(mem, 101)  # an odd count: the last frame waits for its partner and is not committed
    before, _ = mem.context()
    stars_before = mem.stars.ids()
    window_before = list(mem.window)
    stats_before = mem.stats()

    again = CameraMemory("cam", params, FrameStore(tmp_path))
    again.restore()
    after, _ = again.context()
    assert [p.id for p in after] == [p.id for p in before]
    assert again.stars.ids() == stars_before and list(again.window) == window_before
    for a, b in zip(before, after):
        assert (a.first.wall_time, a.second.wall_time, a.first.seq, a.importance) == (
            b.first.wall_time, b.second.wall_time, b.first.seq, b.importance,
        )
        np.testing.assert_array_equal(a.first.image, b.first.image)
        np.testing.assert_array_equal(a.second.image, b.second.image)
    stats_after = again.stats()
    assert stats_after["total_frames_added"] == stats_before["total_frames_added"] - 1
    assert stats_after["unique_frames"] == stats_before["unique_frames"]
    # new pairs continue after the restored ids
    again.add_frame(frame(500, 5000.0))
    again.add_frame(frame(501, 5001.0))
    assert again.context()[0][-1].id == max(p.id for p in before) + 1


def test_removed_camera_frames_are_deleted(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    mem = CameraMemory("gone", MemoryParams(), store)
    feed(mem, 10)
    mem.delete_all()
    assert not (tmp_path / "frames" / "gone").exists()
    assert store.load("gone").pairs == [] and "gone" not in store.cameras()


def test_write_errors_keep_memory_serving_and_writes_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FrameStore(tmp_path)
    mem = CameraMemory("cam", MemoryParams(star_pairs=2, window_pairs=4), store)
    feed(mem, 6)
    real_open = os.open
    failing = {"on": True}

    def full_disk_open(path, flags, *args, **kwargs):  # the store writes each frame file through os.open
        if failing["on"] and flags & os.O_WRONLY and str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("os.open", full_disk_open)
    feed(mem, 10, start=6)
    stats = mem.stats()
    assert stats["write_errors"] >= 5 and not stats["disk_cache_enabled"] and stats["unsaved_pairs"] > 0
    pairs, _ = mem.context()
    assert len(pairs) >= 4  # context still served from RAM
    failing["on"] = False
    feed(mem, 2, start=16)
    stats = mem.stats()
    assert stats["unsaved_pairs"] == 0 and stats["disk_cache_enabled"]
    again = CameraMemory("cam", MemoryParams(star_pairs=2, window_pairs=4), FrameStore(tmp_path))
    again.restore()
    assert [p.id for p in again.context()[0]] == [p.id for p in mem.context()[0]]


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")


@pytest.fixture()
def mounts(tmp_path: Path):
    """Real small tmpfs mounts, so 'disk full' and 'read-only' are the kernel's own errors (needs root)."""
    made: list[Path] = []
    yield lambda name, options: (mount_tmpfs(tmp_path / name, options), made.append(tmp_path / name))[0] or tmp_path / name
    for path in made:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_real_full_disk(mounts) -> None:
    small = mounts("small", "size=600k")
    params = MemoryParams(star_pairs=2, window_pairs=40, max_bytes=10**9)
    mem = CameraMemory("cam", params, FrameStore(small))
    for seq in range(0, 200):
        mem.add_frame(frame(seq, 100.0 + seq, size=(360, 640), noise=80))
    stats = mem.stats()
    assert stats["write_errors"] > 0 and stats["unsaved_pairs"] > 0  # the disk filled up
    assert not stats["disk_cache_enabled"]
    assert len(mem.context()[0]) >= 40  # and the memory kept serving from RAM
    assert mem.context()[0][-1].end_time == 100.0 + 199
    # what was committed before the disk filled is intact
    loaded = FrameStore(small).load("cam")
    assert loaded.dropped_rows == 0 and len(loaded.pairs) > 0


def test_read_only_state_dir(mounts) -> None:
    ro = mounts("ro", "size=1m,ro")
    with pytest.raises(StorageError, match="cannot open the frame store"):
        FrameStore(ro)
    mem = CameraMemory("cam", MemoryParams(), None)  # what the daemon runs with then
    feed(mem, 10)
    assert len(mem.context()[0]) == 5 and not mem.stats()["disk_cache_enabled"]


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from memory_helpers import frame
    from livewatch.memory.camera import CameraMemory, MemoryParams
    from livewatch.memory.store import FrameStore
    from pathlib import Path
    from livewatch.log import configure_logging
    configure_logging("warning", "json", stream=sys.stderr)
    mem = CameraMemory("cam", MemoryParams(star_pairs=3, window_pairs=4), FrameStore(Path(sys.argv[1])))
    mem.restore()
    seq = mem.stats()["total_frames_added"]
    print("ready", flush=True)
    while True:
        mem.add_frame(frame(seq, 1000.0 + seq, scene=(seq // 10) % 4))
        seq += 1
    """
)


@pytest.mark.slow
def test_sigkill_at_random_points_never_corrupts_the_store(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(ROOT / "tests")))
    state = tmp_path / "state"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    committed_before = 0
    for _ in range(50):
        proc = subprocess.Popen([sys.executable, str(script), str(state)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = FrameStore(state)
        loaded = store.load("cam")
        assert loaded.dropped_rows == 0  # no index row ever lacked its files
        names = {p.name for p in (state / "frames" / "cam").iterdir()} if (state / "frames" / "cam").exists() else set()
        expected = set()
        for rec, images in loaded.pairs:
            for i in range(1 if rec.single else 2):
                expected.add(f"{rec.id}-{i}.jpg")
                assert decode_jpeg((state / "frames" / "cam" / f"{rec.id}-{i}.jpg").read_bytes()) is not None
        assert names == expected  # orphans and .tmp files were cleaned, nothing missing
        assert loaded.total_frames_added >= committed_before
        committed_before = loaded.total_frames_added
        store.close()
    assert committed_before > 20  # the writer made progress between kills
