"""Rebuilding the frame store's index from the frame files, and the store's file layout.

A corrupt or missing index must never cost the frames: every file the store writes carries its pair's metadata
(``jpegfile.py``), so the index rows can be made again from the files alone. Files that cannot be indexed (no
metadata, a half pair, metadata that describes another place) are moved to ``lost+found/<camera>/``, never
deleted. The new index is built in ``index.sqlite3.rebuild`` and renamed into place only when complete.
"""

from __future__ import annotations

import os
import re
import stat
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from livewatch.errors import StorageError
from livewatch.memory.jpegfile import META_MAX_BYTES, FrameMeta, read_frame_meta

INDEX_NAME = "index.sqlite3"
LOST_FOUND = "lost+found"  # '+' is not allowed in camera names, so no camera directory can be this one
FRAME_NAME = re.compile(r"(0|[1-9][0-9]{0,17})-([01])\.jpg")
TMP_NAME = re.compile(r"(0|[1-9][0-9]{0,17})-[01]\.jpg\.tmp")


def read_regular_file(path: Path, max_bytes: int) -> bytes | None:
    """A file's bytes, or None: never through a symlink, only a regular file (a FIFO cannot block the reader), at
    most ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        data = fh.read(max_bytes + 1)
    return data if len(data) <= max_bytes else None


def read_frame_file(directory: Path, pair_id: int, max_bytes: int = 16 << 20) -> bytes | None:
    """The JPEG of pair ``pair_id``'s newest frame in a camera's directory of a store (read without the index,
    so another process may read while the store's owner writes)."""
    for name in (f"{pair_id}-1.jpg", f"{pair_id}-0.jpg"):
        if (data := read_regular_file(directory / name, max_bytes)) is not None:
            return data
    return None


def camera_dir(state_root: Path, camera: str) -> Path:
    """Where a store opened on ``state_root`` keeps ``camera``'s frame files."""
    if camera in ("", ".", "..", LOST_FOUND) or "/" in camera:
        raise ValueError(f"invalid camera name for the frame store: {camera!r}")
    return state_root / "frames" / camera


@dataclass
class RebuildReport:
    """What a rebuild of the index from the frame files found."""

    cameras: int = 0
    pairs: int = 0
    frames: int = 0
    lost_found: int = 0  # frame files without readable metadata, moved to lost+found
    tmp_removed: int = 0  # unfinished ``.tmp`` writes, deleted


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Found:
    path: Path
    meta: FrameMeta | None
    size: int


def move_index_aside(root: Path) -> Path:
    """Rename the index and its -wal/-shm to ``index.sqlite3.corrupt-<UTC time>[-wal|-shm]``.

    The -wal/-shm names keep SQLite's pairing, so opening the aside file with sqlite3 sees its WAL too. (Closing
    the checking connection may already have checkpointed the WAL into the file and removed it: SQLite's doing.)
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base, n = f"{INDEX_NAME}.corrupt-{stamp}", 1
    while any((root / f"{base}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        base = f"{INDEX_NAME}.corrupt-{stamp}-{n}"
    try:
        for suffix in ("", "-wal", "-shm"):  # the main file first: see _rebuild for a crash in between
            source = root / f"{INDEX_NAME}{suffix}"
            if source.exists():
                os.replace(source, root / f"{base}{suffix}")
        fsync_dir(root)
    except OSError as exc:
        raise StorageError(f"cannot move the corrupt index {(root / INDEX_NAME)} aside: {exc.strerror or exc}") from exc
    return root / base



def rebuild_index(root: Path, schema: str) -> RebuildReport:
    """Create the index from the frame files' metadata; the index file must not exist."""
    if any((root / f"{INDEX_NAME}{s}").exists() for s in ("-wal", "-shm")):
        # left by a crash while moving a corrupt index aside: SQLite would replay that WAL into the new index
        move_index_aside(root)
    report = RebuildReport()
    rows: list[tuple[Any, ...]] = []
    cameras: list[tuple[str, int, int]] = []
    building = root / f"{INDEX_NAME}.rebuild"
    try:
        for d in sorted(root.iterdir()):
            if d.name == LOST_FOUND or d.is_symlink() or not d.is_dir():
                continue
            found = _scan_camera(root, d, report)
            if found:
                rows.extend(found)
                report.cameras += 1
                frames = sum(1 if r[8] else 2 for r in found)
                report.pairs += len(found)
                report.frames += frames
                cameras.append((d.name, max(r[1] for r in found) + 1, frames))
        for stale in (building, building.with_name(building.name + "-journal")):
            stale.unlink(missing_ok=True)
        # a rollback-journal database: one file to fsync and rename; the rename is what commits the rebuild
        db = sqlite3.connect(building, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(schema)
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO pairs (camera, id, seq0, seq1, wall0, wall1, mono0, mono1, single, "
                           "importance, in_window, is_star, bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            db.executemany("INSERT INTO cameras VALUES (?,?,?)", cameras)
            db.execute("COMMIT")
        finally:
            db.close()
        fd = os.open(building, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(building, (root / INDEX_NAME))
        fsync_dir(root)
    except (OSError, sqlite3.Error) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise StorageError(f"cannot rebuild the frame index {(root / INDEX_NAME)}: {detail}") from exc
    return report



def _scan_camera(root: Path, d: Path, report: RebuildReport) -> list[tuple[Any, ...]]:
    """Index rows of one camera directory; moves its unindexable frame files to lost+found."""
    camera = d.name
    groups: dict[int, dict[int, _Found]] = {}
    for path in sorted(d.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        if TMP_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)
            report.tmp_removed += 1
            continue
        m = FRAME_NAME.fullmatch(path.name)
        if m is None:
            continue  # not a name the store writes: left alone (load never deletes it either)
        meta: FrameMeta | None = None
        size = 0
        try:
            with open(path, "rb") as fh:
                meta = read_frame_meta(fh.read(6 + META_MAX_BYTES))
                size = os.fstat(fh.fileno()).st_size
        except OSError:
            pass  # unreadable: goes to lost+found like a file without metadata
        if meta is not None and (meta.camera, meta.id, meta.frame) != (camera, int(m[1]), int(m[2])):
            meta = None  # copied or renamed: its metadata does not describe this place
        groups.setdefault(int(m[1]), {})[int(m[2])] = _Found(path, meta, size)
    rows: list[tuple[Any, ...]] = []
    lost: list[Path] = []
    for pid, files in sorted(groups.items()):
        first, second = files.get(0), files.get(1)
        m0 = first.meta if first else None
        m1 = second.meta if second else None
        if first is None or m0 is None or not (m0.single or (m1 is not None and m0.same_pair(m1))):
            lost.extend(f.path for f in files.values())
            continue
        members = [first] if m0.single else list(files.values())
        if m0.single and second is not None:
            lost.append(second.path)  # a lone frame has no second file
        rows.append((camera, pid, m0.seq[0], m0.seq[1], m0.wall[0], m0.wall[1], m0.mono[0], m0.mono[1],
                     int(m0.single), m0.importance, 1, 0, sum(f.size for f in members)))
    if lost:
        if (root / LOST_FOUND).is_symlink() or (root / LOST_FOUND / camera).is_symlink():
            raise OSError(f"{root / LOST_FOUND} is a symbolic link; the store does not write through links")
        target = root / LOST_FOUND / camera
        target.mkdir(parents=True, exist_ok=True)
        for path in lost:
            dest, n = target / path.name, 1
            while dest.exists():
                dest, n = target / f"{path.name}.{n}", n + 1
            os.replace(path, dest)
        fsync_dir(target)
        fsync_dir(d)
        report.lost_found += len(lost)
    return rows

