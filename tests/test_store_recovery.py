"""The frame store survives a corrupt, foreign or missing index: aside, rebuild from the frames' metadata, no loss."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections.abc import MutableMapping
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from livewatch.errors import StorageError
from livewatch.frames import FramePair
from livewatch.memory.camera import CameraMemory, MemoryParams
from livewatch.memory.jpegfile import (
    META_MAX_BYTES,
    FrameMeta,
    PairRecord,
    add_jpeg_comment,
    decode_jpeg,
    encode_jpeg,
    read_frame_meta,
    read_jpeg_comment,
    strip_jpeg_comment,
    tag_jpeg,
)
from livewatch.memory.store import FrameStore
from memory_helpers import frame, scene_image

CAMERAS = ("door", "yard")
BIG_WINDOW = MemoryParams(star_pairs=3, window_pairs=500)


def fill(state: Path, params: MemoryParams, frames: int) -> dict[str, list[FramePair]]:
    """Write ``frames`` frames per camera through CameraMemory; returns each camera's context."""
    store = FrameStore(state)
    contexts = {}
    for k, cam in enumerate(CAMERAS):
        mem = CameraMemory(cam, params, store)
        for seq in range(frames):
            mem.add_frame(frame(seq, 1000.0 + seq + 0.25 * k, scene=(seq // 8 + k) % 5, size=(24, 32)))
        assert mem.stats()["unsaved_pairs"] == 0
        contexts[cam] = mem.context()[0]
    store.close()
    return contexts


def restored(state: Path, params: MemoryParams = BIG_WINDOW) -> dict[str, CameraMemory]:
    store = FrameStore(state)
    mems = {}
    for cam in CAMERAS:
        mems[cam] = CameraMemory(cam, params, store)
        mems[cam].restore()
    return mems


def assert_same_pairs(before: list[FramePair], after: list[FramePair]) -> None:
    assert [p.id for p in after] == [p.id for p in before]
    for a, b in zip(before, after):
        assert (a.first.seq, a.second.seq, a.first.wall_time, a.second.wall_time, a.first.mono_time, a.importance) == (
            b.first.seq, b.second.seq, b.first.wall_time, b.second.wall_time, b.first.mono_time, b.importance,
        )
        np.testing.assert_array_equal(a.first.image, b.first.image)
        np.testing.assert_array_equal(a.second.image, b.second.image)


def quick_check(path: Path) -> str:
    try:
        with closing(sqlite3.connect(path)) as db:
            return "; ".join(str(r[0]) for r in db.execute("PRAGMA quick_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)


def corrupt_event(logs: list[MutableMapping[str, Any]]) -> MutableMapping[str, Any]:
    events = [e for e in logs if e["event"] == "store.index_corrupt"]
    assert len(events) == 1, logs
    assert events[0]["log_level"] == "error"
    return events[0]


def test_one_garbage_page_moves_the_index_aside_and_rebuilds_it_from_the_frames(tmp_path: Path) -> None:
    before = fill(tmp_path, BIG_WINDOW, 300)  # 150 pairs a camera: an index of many pages
    index = tmp_path / "frames" / "index.sqlite3"
    with closing(sqlite3.connect(index)) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        assert db.execute("PRAGMA page_count").fetchone()[0] >= 6
    assert not (tmp_path / "frames" / "index.sqlite3-wal").exists()  # checkpointed on close: all in the file
    with open(index, "r+b") as fh:
        fh.seek(page_size * 2)
        fh.write(random.Random(7).randbytes(page_size))
    assert quick_check(index) != "ok"

    with capture_logs() as logs:
        store = FrameStore(tmp_path)
    event = corrupt_event(logs)
    moved = Path(event["moved_to"])
    assert event["path"] == str(index) and event["error"]
    assert moved.parent == index.parent and moved.name.startswith("index.sqlite3.corrupt-") and moved.is_file()
    assert moved.read_bytes()[page_size * 2 : page_size * 3] == random.Random(7).randbytes(page_size)
    assert (event["pairs"], event["frames"], event["lost_found"], event["cameras"]) == (300, 600, 0, 2)
    assert quick_check(index) == "ok"
    assert store.cameras() == sorted(CAMERAS)
    assert store.rebuilt is not None and store.rebuilt.pairs == 300
    store.close()

    with capture_logs() as logs:
        mems = restored(tmp_path)
    assert not [e for e in logs if e["event"] == "store.index_corrupt"]
    for cam in CAMERAS:
        assert_same_pairs(before[cam], mems[cam].context()[0])
        stats = mems[cam].stats()
        cam_store = mems[cam].store
        assert cam_store is not None  # the store stayed in use
        assert stats["total_frames_added"] == 300 and stats["bytes_on_disk"] == cam_store.bytes_on_disk(cam)
        # ids continue after the recovered ones
        mems[cam].add_frame(frame(1000, 5000.0))
        mems[cam].add_frame(frame(1001, 5001.0))
        assert mems[cam].context()[0][-1].id == 150


def test_index_of_random_bytes_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    before = fill(tmp_path, BIG_WINDOW, 40)
    index = tmp_path / "frames" / "index.sqlite3"
    garbage = random.Random(3).randbytes(20000)
    index.write_bytes(garbage)
    with capture_logs() as logs:
        mems = restored(tmp_path)
    event = corrupt_event(logs)
    assert "not a database" in event["error"]
    moved = Path(event["moved_to"])
    assert moved.read_bytes() == garbage
    assert re.fullmatch(r"index\.sqlite3\.corrupt-\d{8}T\d{6}Z", moved.name)
    for cam in CAMERAS:
        assert_same_pairs(before[cam], mems[cam].context()[0])


def test_missing_index_is_rebuilt_instead_of_deleting_every_frame_as_an_orphan(tmp_path: Path) -> None:
    before = fill(tmp_path, BIG_WINDOW, 20)
    (tmp_path / "frames" / "index.sqlite3").unlink()
    # as left by a crash while a corrupt index was moved aside: SQLite must not replay it into the new index
    (tmp_path / "frames" / "index.sqlite3-wal").write_bytes(b"stale wal")
    with capture_logs() as logs:
        mems = restored(tmp_path)
    assert [e["reason"] for e in logs if e["event"] == "store.index_rebuilt"] == ["missing"]
    aside = list((tmp_path / "frames").glob("index.sqlite3.corrupt-*-wal"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"stale wal"
    for cam in CAMERAS:
        assert_same_pairs(before[cam], mems[cam].context()[0])


def test_index_that_is_a_directory_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "frames" / "index.sqlite3").mkdir(parents=True)
    with pytest.raises(StorageError, match="cannot open the frame store: .*index.sqlite3 is a directory"):
        FrameStore(tmp_path)
    assert (tmp_path / "frames" / "index.sqlite3").is_dir()  # nothing was moved or deleted


def test_sqlite_errors_after_open_become_storage_errors(tmp_path: Path) -> None:
    fill(tmp_path, BIG_WINDOW, 4)
    store = FrameStore(tmp_path)
    with closing(sqlite3.connect(tmp_path / "frames" / "index.sqlite3")) as db:
        db.execute("DROP TABLE pairs")
        db.execute("DROP TABLE cameras")
        db.commit()
    rec = PairRecord(99, (0, 1), (1.0, 2.0), (1.0, 2.0), False, 0.5, True, False)
    calls = [
        lambda: store.load("door"),
        store.cameras,
        lambda: store.bytes_on_disk("door"),
        lambda: store.commit("door", [rec], [], [], 100, 2),
        lambda: store.remove_camera("door"),
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        assert isinstance(info.value.__cause__, sqlite3.Error)
    assert (tmp_path / "frames" / "door").is_dir()  # the failed remove_camera deleted no frame
    store.close()


def test_frames_without_metadata_go_to_lost_and_found_and_stay_there(tmp_path: Path) -> None:
    before = fill(tmp_path, BIG_WINDOW, 20)
    door = tmp_path / "frames" / "door"
    old = encode_jpeg(scene_image(2, 0, size=(24, 32)), 90)  # written by a version without metadata
    (door / "900-0.jpg").write_bytes(old)
    (door / "900-1.jpg").write_bytes(old)
    (door / "901-0.jpg").write_bytes(b"\xff\xd8\xff\xfe\x00\x05{}garbage")
    moved_pair = before["door"][-1]  # a copy in the wrong place: metadata says pair 3, the name says 950
    (door / "950-0.jpg").write_bytes((door / f"{moved_pair.id}-0.jpg").read_bytes())
    (door / "notes.txt").write_text("not a frame")
    (door / "7-1.jpg.tmp").write_bytes(b"half written")
    index = tmp_path / "frames" / "index.sqlite3"
    index.write_bytes(b"not sqlite" * 100)

    with capture_logs() as logs:
        mems = restored(tmp_path)
    event = corrupt_event(logs)
    assert event["lost_found"] == 4 and event["tmp_removed"] == 1
    lost = tmp_path / "frames" / "lost+found" / "door"
    assert sorted(p.name for p in lost.iterdir()) == ["900-0.jpg", "900-1.jpg", "901-0.jpg", "950-0.jpg"]
    assert (lost / "900-0.jpg").read_bytes() == old
    assert (door / "notes.txt").exists() and not (door / "7-1.jpg.tmp").exists()
    assert_same_pairs(before["door"], mems["door"].context()[0])

    # the next normal start (healthy index, orphan cleanup) leaves lost+found and foreign names alone
    again = restored(tmp_path)
    assert len(list(lost.iterdir())) == 4 and (door / "notes.txt").exists()
    assert_same_pairs(before["door"], again["door"].context()[0])
    door_store = again["door"].store
    assert door_store is not None and "lost+found" not in door_store.cameras()


def test_half_pair_goes_to_lost_and_found(tmp_path: Path) -> None:
    before = fill(tmp_path, BIG_WINDOW, 12)
    door = tmp_path / "frames" / "door"
    victim = before["door"][2]
    (door / f"{victim.id}-1.jpg").unlink()
    (tmp_path / "frames" / "index.sqlite3").unlink()
    mems = restored(tmp_path)
    assert [p.id for p in mems["door"].context()[0]] == [p.id for p in before["door"] if p.id != victim.id]
    assert (tmp_path / "frames" / "lost+found" / "door" / f"{victim.id}-0.jpg").exists()


def test_restored_window_longer_than_capacity_is_trimmed_through_the_star_memory(tmp_path: Path) -> None:
    # live: no star memory and a long window, so every pair is a window pair, as after a rebuild
    store = FrameStore(tmp_path)
    mem = CameraMemory("door", MemoryParams(star_pairs=0, window_pairs=100), store)
    for seq in range(80):
        scene = 3 if seq in (40, 41) else 0  # one event: pair 20
        mem.add_frame(frame(seq, 1000.0 + seq, scene=scene, size=(24, 32)))
    by_id = {p.id: p for p in mem.context()[0]}
    assert len(by_id) == 40 and not mem.stars.ids()
    event_pair = by_id[20]
    assert event_pair.importance > 0.8 and by_id[30].importance < 0.6  # an event, and a quiet pair
    store.close()

    small = MemoryParams(star_pairs=3, window_pairs=5)
    store = FrameStore(tmp_path)
    with capture_logs() as logs:
        again = CameraMemory("door", small, store)
        again.restore()
    assert list(again.window) == [35, 36, 37, 38, 39]
    stars = again.stars.ids()
    assert 20 in stars and len(stars) <= 3
    # every star is an event, but for the scene's reference (the first pair, kept while no event needs its place)
    assert [i for i in stars if by_id[i].importance <= small.threshold] in ([], [0])
    kept = set(stars) | set(again.window)
    assert [p.id for p in again.context()[0]] == sorted(kept)
    restored_event = [e for e in logs if e["event"] == "memory.restored"][0]
    assert restored_event["window_trimmed"] == 35 and restored_event["forgotten"] == 40 - len(kept)
    # the forgotten pairs are gone from the index and the disk, the roles are committed
    files = sorted((tmp_path / "frames" / "door").iterdir())
    assert {int(p.name.split("-")[0]) for p in files} == kept
    assert store.bytes_on_disk("door") == sum(p.stat().st_size for p in files) == again.stats()["bytes_on_disk"]
    third = CameraMemory("door", small, FrameStore(tmp_path))
    third.restore()
    assert third.stars.ids() == stars and list(third.window) == list(again.window)
    np.testing.assert_array_equal(
        next(p for p in third.context()[0] if p.id == 20).first.image, event_pair.first.image
    )


def test_stars_keep_why_they_were_kept_across_a_restart_and_an_index_from_before_migrates(tmp_path: Path) -> None:
    before = fill(tmp_path, BIG_WINDOW, 40)
    stars = {cam: {p.id: p.why for p in ctx if p.star} for cam, ctx in before.items()}
    assert all(stars.values()) and all(why for s in stars.values() for why in s.values())
    assert {"reference", "free_slot"} & {why for s in stars.values() for why in s.values()}
    mems = restored(tmp_path)
    assert {cam: {p.id: p.why for p in m.context()[0] if p.star} for cam, m in mems.items()} == stars
    for m in mems.values():
        assert all(p.why == "" for p in m.context()[0] if not p.star)
        m.store.close()  # type: ignore[union-attr]
    # an index written before stars kept their reason: 13 columns; it opens with the column added, roles kept
    index = tmp_path / "frames" / "index.sqlite3"
    with closing(sqlite3.connect(index)) as db:
        db.execute("ALTER TABLE pairs DROP COLUMN why")
        db.commit()
    with capture_logs() as logs:
        mems = restored(tmp_path)
    assert not [e for e in logs if e["event"] in ("store.index_corrupt", "store.index_rebuilt")]
    for cam, m in mems.items():
        assert {p.id for p in m.context()[0] if p.star} == set(stars[cam])
        assert all(p.why == "" for p in m.context()[0])


# -- the JPEG comment segment ---------------------------------------------------------------------------------


def test_jpeg_comment_round_trip_and_decoding_is_unchanged() -> None:
    image = scene_image(1, 5, size=(48, 64), moving=True)
    jpeg = encode_jpeg(image, 90)
    rec = PairRecord(12, (24, 25), (1712345678.123456, 1712345678.623456), (88.5, 89.0), False, 0.734, True, False)
    meta = FrameMeta.of("door", rec, 1)
    tagged = tag_jpeg(jpeg, meta)
    assert tagged[:4] == b"\xff\xd8\xff\xfe"
    length = int.from_bytes(tagged[4:6], "big")
    assert tagged[6 : 4 + length] == meta.to_json() and tagged[4 + length :] == jpeg[2:]
    assert len(tagged) == len(jpeg) + 2 + length
    assert json.loads(meta.to_json())["lw"] == 1 and len(meta.to_json()) < 300
    assert read_frame_meta(tagged) == meta
    assert read_frame_meta(jpeg) is None
    assert strip_jpeg_comment(tagged) == jpeg
    assert tag_jpeg(tagged, meta) == tagged  # idempotent: one segment, not two
    np.testing.assert_array_equal(decode_jpeg(tagged), decode_jpeg(jpeg))
    assert decode_jpeg(add_jpeg_comment(jpeg, b"x" * 60000)) is not None
    with pytest.raises(ValueError):
        add_jpeg_comment(b"GIF89a", b"{}")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xfe\x00",  # no room for the length
        b"\xff\xd8\xff\xfe\x00\x01{}",  # length below its own 2 bytes
        b"\xff\xd8\xff\xfe\x10\x00{}",  # length past the end
        b"\xff\xd8\xff\xe0\x00\x04{}",  # an APP0 segment, not a comment
    ],
)
def test_malformed_comment_segments_are_rejected(data: bytes) -> None:
    assert read_jpeg_comment(data) is None and read_frame_meta(data) is None


GOOD = {"lw": 1, "camera": "door", "id": 3, "seq": [6, 7], "wall": [10.5, 11.5], "mono": [1.0, 2.0],
        "single": False, "importance": 0.4, "frame": 0}


@pytest.mark.parametrize(
    "change",
    [
        {"lw": 2}, {"lw": True}, {"camera": 5}, {"camera": ""}, {"camera": "../x"}, {"id": "3"}, {"id": True},
        {"id": -1}, {"id": 2**70}, {"seq": [6]}, {"seq": [6, "7"]}, {"seq": [6.0, 7]}, {"wall": [1.0, None]},
        {"wall": [1e400, 2.0]}, {"mono": "1,2"}, {"single": 1}, {"importance": "high"}, {"frame": 2},
        {"frame": 1, "single": True}, {"importance": None},
    ],
)
def test_metadata_of_wrong_types_is_rejected(change: dict) -> None:
    assert FrameMeta.from_json(json.dumps(GOOD).encode()) is not None
    assert FrameMeta.from_json(json.dumps({**GOOD, **change}).encode()) is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[1,2]", b"\xff\xfe", b'{"lw":1}', json.dumps({**GOOD, "wall": [float("nan"), 1.0]}).encode(),
     b"[" * 5000 + b"]" * 5000, json.dumps({**GOOD, "pad": "x" * META_MAX_BYTES}).encode()],
)
def test_metadata_that_is_not_json_or_too_long_is_rejected(payload: bytes) -> None:
    assert FrameMeta.from_json(payload) is None


def test_written_files_carry_metadata_and_bytes_match_the_disk(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    mem = CameraMemory("door", MemoryParams(), store)
    for seq in range(5):
        mem.add_frame(frame(seq, 100.0 + seq, size=(24, 32)))
    mem.flush_pending()  # a lone frame: one file, single=True
    pairs = mem.context()[0]
    for p in pairs:
        files = sorted((tmp_path / "frames" / "door").glob(f"{p.id}-*.jpg"))
        assert len(files) == (1 if p.first is p.second else 2)
        for i, f in enumerate(files):
            meta = read_frame_meta(f.read_bytes())
            assert meta is not None and (meta.camera, meta.id, meta.frame, meta.single) == (
                "door", p.id, i, p.first is p.second,
            )
            assert (meta.seq, meta.wall, meta.importance) == (
                (p.first.seq, p.second.seq), (p.first.wall_time, p.second.wall_time), p.importance,
            )
    on_disk = sum(f.stat().st_size for f in (tmp_path / "frames" / "door").iterdir())
    assert store.bytes_on_disk("door") == mem.stats()["bytes_on_disk"] == mem.bytes_in_memory() == on_disk


def test_planted_rows_links_and_bombs_in_the_state_directory_are_harmless(tmp_path: Path) -> None:
    import sqlite3

    before = fill(tmp_path, BIG_WINDOW, 12)
    frames = tmp_path / "frames"
    secret = tmp_path / "outside" / "private-0.jpg"
    secret.parent.mkdir()
    secret.write_bytes(encode_jpeg(np.full((24, 32, 3), 7, np.uint8), 90))
    first, second = before["door"][0], before["door"][1]
    # a row whose id is a path, a frame file that is a link to /dev/zero, a JPEG declaring 32767x32767
    with sqlite3.connect(frames / "index.sqlite3") as db:
        db.execute("INSERT INTO pairs VALUES ('door', '../../outside/private', 0, 0, 1.0, 1.0, 1.0, 1.0, 1, 0.5, 1, 0,"
                   " 10, '<img src=x onerror=alert(1)>')")
    (frames / "door" / f"{first.id}-0.jpg").unlink()
    (frames / "door" / f"{first.id}-0.jpg").symlink_to("/dev/zero")
    bomb = bytearray((frames / "door" / f"{second.id}-0.jpg").read_bytes())
    sof = bytes(bomb).find(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = (32767).to_bytes(2, "big") * 2
    (frames / "door" / f"{second.id}-0.jpg").write_bytes(bytes(bomb))
    # a link planted where the next write's temporary file goes
    victim = tmp_path / "outside" / "victim"
    victim.write_text("untouched")
    mems = restored(tmp_path)
    door = mems["door"]
    assert [p.id for p in door.context()[0]] == [p.id for p in before["door"][2:]]  # the three rows were dropped
    next_tmp = frames / "door" / f"{before['door'][-1].id + 1}-0.jpg.tmp"
    next_tmp.symlink_to(victim)
    for seq in range(12, 16):
        door.add_frame(frame(seq, 1000.0 + seq, size=(24, 32)))
    assert victim.read_text() == "untouched" and secret.exists()
    assert not next_tmp.is_symlink()  # the failed write removed the planted link; the retry wrote its own file
    assert door.stats()["unsaved_pairs"] == 0
