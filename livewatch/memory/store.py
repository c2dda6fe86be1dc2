"""The crash-safe frame store: JPEG files plus a SQLite index (WAL mode, synchronous=FULL).

Layout under the state directory:

    frames/index.sqlite3            one index for every camera
    frames/<camera>/<id>-0.jpg      first frame of pair <id>   (a lone frame paired with itself has only -0)
    frames/<camera>/<id>-1.jpg      second frame
    frames/index.sqlite3.corrupt-<UTC time>[-wal|-shm]   an index found corrupt, kept aside for inspection
    frames/lost+found/<camera>/     frame files a rebuild could not index (never deleted by the store)

Every JPEG the store writes carries its pair's metadata in a JPEG comment (COM) segment right after the SOI
marker: a small JSON object ``{"lw":1,"camera":..,"id":..,"seq":[..],"wall":[..],"mono":[..],"single":..,
"importance":..,"frame":0|1}``. Decoders ignore COM segments, so the pixels are unchanged; the index can be rebuilt
from the files alone. ``write_files`` stores the tagged bytes back into ``PairRecord.jpegs``, so ``nbytes``, the
``bytes`` column and the size on disk are the same number.

Protocol of one commit, so that a kill -9 at any instant leaves the last committed state intact:

1. each new JPEG is written to ``<name>.tmp``, fsync'ed, renamed to its final name; the directory is fsync'ed;
2. one SQLite transaction inserts the new pairs, updates roles, deletes removed pairs and the camera's counters;
3. only then are the files of removed pairs unlinked.

A crash before 2 leaves files no index row names (orphans); a crash after 2 leaves files of removed pairs. Both
are deleted by ``load`` at the next start, together with stray ``.tmp`` files, so the index and the files agree:
every row has its files and every file has its row. ``load`` deletes only names the store itself writes
(``<id>-<0|1>.jpg`` and their ``.tmp``) and only inside the camera's own directory.

Opening checks the index (``PRAGMA quick_check`` and the expected tables and columns). An index that is corrupt or
not a database is renamed aside (with its -wal and -shm), an error ``store.index_corrupt`` is logged, and a new
index is rebuilt from the files' metadata: every readable pair comes back in the stream window (``in_window=1``,
``is_star=0``; ``CameraMemory.restore`` trims a window longer than its capacity), frame files without readable
metadata are moved to ``lost+found``. A missing index is rebuilt the same way (quietly when there are no
files). The rebuild is built in ``index.sqlite3.rebuild`` and renamed into place only when complete, so a crash
during a rebuild finds no index at the next start and rebuilds again: a half-built, valid-looking index can never
make ``load`` delete frames as orphans.

A row with no role (``in_window = is_star = 0``) is a pair of the camera's history (memory/history.py): its files
are kept, and ``load`` returns it apart (``archived``), its files checked but not decoded.

Every SQLite or file system error leaves the class as ``StorageError`` with its cause chained.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livewatch.errors import StorageError
from livewatch.log import get_logger
from livewatch.memory.jpegfile import FrameMeta, PairRecord, decode_jpeg, tag_jpeg
from livewatch.memory.rebuild import (
    FRAME_NAME, INDEX_NAME, TMP_NAME, RebuildReport, camera_dir, fsync_dir, move_index_aside,
    read_frame_file, read_regular_file, rebuild_index,
)

log = get_logger("livewatch.store")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    camera TEXT NOT NULL,
    id INTEGER NOT NULL,
    seq0 INTEGER NOT NULL, seq1 INTEGER NOT NULL,
    wall0 REAL NOT NULL, wall1 REAL NOT NULL,
    mono0 REAL NOT NULL, mono1 REAL NOT NULL,
    single INTEGER NOT NULL,
    importance REAL NOT NULL,
    in_window INTEGER NOT NULL,
    is_star INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    why TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (camera, id)
);
CREATE TABLE IF NOT EXISTS cameras (
    camera TEXT PRIMARY KEY,
    next_id INTEGER NOT NULL,
    total_frames_added INTEGER NOT NULL
);
"""
_COLUMNS = {
    "pairs": ["camera", "id", "seq0", "seq1", "wall0", "wall1", "mono0", "mono1", "single", "importance",
              "in_window", "is_star", "bytes", "why"],
    "cameras": ["camera", "next_id", "total_frames_added"],
}

_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

@dataclass
class LoadedCamera:
    pairs: list[tuple[PairRecord, list[np.ndarray]]]  # in memory (a role), with decoded RGB frames
    next_id: int
    total_frames_added: int
    removed_orphans: int
    dropped_rows: int
    archived: list[tuple[PairRecord, int]] = field(default_factory=list)  # no role: (record, bytes), no pixels


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


MAX_FRAME_FILE_BYTES = 32 * 1024 * 1024  # a stored frame is a JPEG at the model's pixel cap: well under 1 MB


def _row_ok(row: tuple[Any, ...]) -> bool:
    """Index values of the types the store writes (SQLite keeps whatever a planted row holds)."""
    ints, reals = (row[0], row[1], row[2], row[7], row[9], row[10]), (row[3], row[4], row[5], row[6], row[8])
    return (all(isinstance(v, int) and not isinstance(v, bool) for v in ints) and row[0] >= 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in reals))


def _is_frame_file(path: Path) -> bool:
    """A regular file (not a link) of a plausible size, without reading it."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_FRAME_FILE_BYTES


def _read_frame_file(path: Path) -> bytes | None:
    """A frame file's bytes, or None: never through a symlink, only a regular file, at most MAX_FRAME_FILE_BYTES."""
    return read_regular_file(path, MAX_FRAME_FILE_BYTES)


class _CorruptIndex(Exception):
    """The index is corrupt, not a database, or not our schema; the text says why."""


class FrameStore:
    """Thread-safe (one lock); each camera's memory calls it from its own thread.

    Raises StorageError (never a raw sqlite3 error) from every method. ``rebuilt`` says what a rebuild of the
    index at open recovered, None when the index was used as found.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "frames"
        self.index_path = self.root / INDEX_NAME
        self._lock = threading.Lock()
        self.rebuilt: RebuildReport | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot open the frame store in {self.root}: {exc.strerror or exc}") from exc
        self._db = self._open()

    # -- opening, checking, rebuilding --------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise StorageError(f"cannot open the frame store index {self.index_path}: {exc.strerror or exc}") from exc
        if st is not None and not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise StorageError(f"cannot open the frame store: its index {self.index_path} is {what}")
        if st is None:
            report = rebuild_index(self.root, _SCHEMA)
            if report.pairs or report.lost_found:
                log.warning("store.index_rebuilt", path=str(self.index_path), reason="missing", **vars(report))
            self.rebuilt = report
        try:
            return self._connect()
        except _CorruptIndex as exc:
            cause = str(exc)
        moved_to = move_index_aside(self.root)
        event: dict[str, Any] = {"path": str(self.index_path), "moved_to": str(moved_to), "error": cause}
        try:
            self.rebuilt = rebuild_index(self.root, _SCHEMA)
        except StorageError as exc:
            log.error("store.index_corrupt", **event, rebuild_error=str(exc))
            raise
        log.error("store.index_corrupt", **event, **vars(self.rebuilt))
        try:
            return self._connect()
        except _CorruptIndex as exc:
            raise StorageError(
                f"cannot open the frame store: the rebuilt index {self.index_path} is unusable: {exc}"
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        """Open and check the index. Raises _CorruptIndex when it is damaged, StorageError for any other failure."""
        try:
            db = sqlite3.connect(self.index_path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the frame store index {self.index_path}: {exc}") from exc
        try:
            # checked before journal_mode=WAL, which writes to the header of the file
            problems = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _CorruptIndex("quick_check: " + "; ".join(problems[:5]))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            for table, columns in _COLUMNS.items():
                found = [str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")]
                if table == "pairs" and found == columns[:-1]:  # an index from before stars kept their reason
                    db.execute("ALTER TABLE pairs ADD COLUMN why TEXT NOT NULL DEFAULT ''")
                    found = columns
                if found != columns:
                    raise _CorruptIndex(f"table {table} has columns {found}, expected {columns}")
        except sqlite3.Error as exc:
            self._close_quietly(db)
            if _is_corruption(exc):
                raise _CorruptIndex(str(exc)) from exc
            raise StorageError(f"cannot open the frame store index {self.index_path}: {exc}") from exc
        except _CorruptIndex:
            self._close_quietly(db)
            raise
        return db

    @staticmethod
    def _close_quietly(db: sqlite3.Connection) -> None:
        try:
            db.close()
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot close the frame index {self.index_path}: {exc}") from exc

    def _dir(self, camera: str) -> Path:
        return camera_dir(self.root.parent, camera)

    def read_pair(self, camera: str, record: PairRecord) -> list[np.ndarray] | None:
        """The decoded frames of a stored pair (a history question's), None when a file is missing or broken."""
        images = []
        for path in self._files(camera, record):
            blob = _read_frame_file(path)
            image = decode_jpeg(blob) if blob is not None else None
            if image is None:
                return None
            images.append(image)
        return images

    def read_frame(self, camera: str, pair_id: int, max_bytes: int = 16 << 20) -> bytes | None:
        """The JPEG of pair ``pair_id``'s newest frame (None when it is not stored: left memory, or never saved)."""
        return read_frame_file(self._dir(camera), pair_id, max_bytes)

    def _files(self, camera: str, record: PairRecord) -> list[Path]:
        d = self._dir(camera)
        return [d / f"{record.id}-{i}.jpg" for i in range(1 if record.single else 2)]

    @contextmanager
    def _reading(self, failure: str) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; a SQLite error becomes StorageError(failure)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StorageError(f"{failure}: {exc}") from exc

    # -- reading ------------------------------------------------------------------------------------------------

    def load(self, camera: str) -> LoadedCamera:
        """The camera's committed state; cleans orphans and drops rows whose files are missing or corrupt."""
        with self._reading(f"cannot read the frame index for camera {camera!r}") as db:
            rows = db.execute(
                "SELECT id, seq0, seq1, wall0, wall1, mono0, mono1, single, importance, in_window, is_star, bytes, why "
                "FROM pairs WHERE camera = ? ORDER BY wall0, id",
                (camera,),
            ).fetchall()
            meta = db.execute("SELECT next_id, total_frames_added FROM cameras WHERE camera = ?", (camera,)).fetchone()
        loaded: list[tuple[PairRecord, list[np.ndarray]]] = []
        archived: list[tuple[PairRecord, int]] = []
        dropped: list[int] = []
        for r in rows:
            if not _row_ok(r) or not isinstance(r[11], int):  # a planted or damaged row: its id must never be a path
                dropped.append(r[0])
                continue
            why = r[12] if isinstance(r[12], str) and len(r[12]) <= 32 and r[12].isidentifier() and r[10] else ""
            rec = PairRecord(r[0], (r[1], r[2]), (r[3], r[4]), (r[5], r[6]), bool(r[7]), r[8], bool(r[9]), bool(r[10]),
                             why=why)
            if not rec.in_window and not rec.is_star:  # the history archive: files checked, not decoded
                if all(_is_frame_file(path) for path in self._files(camera, rec)):
                    archived.append((rec, r[11]))
                else:
                    dropped.append(rec.id)
                continue
            images, blobs = [], []
            for path in self._files(camera, rec):
                blob = _read_frame_file(path)
                if blob is None:
                    break
                img = decode_jpeg(blob)
                if img is None:
                    break
                images.append(img)
                blobs.append(blob)
            if len(images) != len(self._files(camera, rec)):
                dropped.append(rec.id)
                continue
            rec.jpegs = tuple(blobs)
            loaded.append((rec, images))
        if dropped:
            with self._transaction(f"cannot drop broken rows of camera {camera!r}"):
                self._db.executemany("DELETE FROM pairs WHERE camera = ? AND id = ?", [(camera, i) for i in dropped])
        keep = {p.name for rec, _ in [*loaded, *archived] for p in self._files(camera, rec)}
        orphans = 0
        try:
            names = list(self._dir(camera).iterdir())
        except OSError:
            names = []  # no directory yet (or unreadable: nothing to clean then)
        for path in names:
            if path.name in keep or not (FRAME_NAME.fullmatch(path.name) or TMP_NAME.fullmatch(path.name)):
                continue
            try:
                if not path.is_symlink() and not path.is_file():
                    continue  # a directory of that name: not the store's
                path.unlink()  # a symlink planted under a store name goes too (the link, not its target)
                orphans += 1
            except OSError:
                pass
        next_id = meta[0] if meta else 0
        if loaded or archived:
            next_id = max(next_id, max(rec.id for rec, _ in [*loaded, *archived]) + 1)
        return LoadedCamera(loaded, next_id, meta[1] if meta else 0, orphans, len(dropped), archived)

    def cameras(self) -> list[str]:
        with self._reading("cannot list the cameras of the frame index") as db:
            return [r[0] for r in db.execute("SELECT camera FROM cameras ORDER BY camera")]

    def bytes_on_disk(self, camera: str) -> int:
        with self._reading(f"cannot read the frame index for camera {camera!r}") as db:
            row = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM pairs WHERE camera = ?", (camera,)).fetchone()
        return int(row[0])

    # -- writing ------------------------------------------------------------------------------------------------

    def write_files(self, camera: str, record: PairRecord) -> None:
        """Step 1 for one pair. Raises StorageError (the pair stays unsaved; nothing half-written remains).

        Each file gets the pair's metadata (a JPEG comment); on success ``record.jpegs`` holds the bytes written.
        """
        d = self._dir(camera)
        blobs = tuple(self._tagged(camera, record, i, blob) for i, blob in enumerate(record.jpegs))
        written: list[Path] = []
        try:
            d.mkdir(parents=True, exist_ok=True)
            for path, blob in zip(self._files(camera, record), blobs, strict=True):
                tmp = path.with_name(path.name + ".tmp")
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
                with os.fdopen(os.open(tmp, flags, 0o600), "wb") as fh:
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                written.append(path)
            fsync_dir(d)
        except OSError as exc:
            for path in [*written, *(p.with_name(p.name + ".tmp") for p in self._files(camera, record))]:
                try:
                    path.unlink()
                except OSError:
                    pass
            raise StorageError(f"cannot write frames of camera {camera!r}: {exc.strerror or exc}") from exc
        record.jpegs = blobs

    @staticmethod
    def _tagged(camera: str, record: PairRecord, frame: int, blob: bytes) -> bytes:
        try:
            return tag_jpeg(blob, FrameMeta.of(camera, record, frame))
        except ValueError:
            # not representable (a non-finite value): stored untagged; only a rebuild of the index would miss it
            return blob

    def commit(
        self,
        camera: str,
        inserts: Iterable[PairRecord],
        roles: Iterable[PairRecord],
        deletes: Iterable[PairRecord],
        next_id: int,
        total_frames_added: int,
    ) -> None:
        """Steps 2 and 3. ``inserts`` must have their files written. Raises StorageError, index unchanged."""
        inserts, roles, deletes = list(inserts), list(roles), list(deletes)
        with self._transaction(f"cannot update the frame index for camera {camera!r}"):
            self._db.executemany(
                "INSERT OR REPLACE INTO pairs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (camera, r.id, r.seq[0], r.seq[1], r.wall[0], r.wall[1], r.mono[0], r.mono[1], int(r.single),
                     r.importance, int(r.in_window), int(r.is_star), r.nbytes, r.why)
                    for r in inserts
                ],
            )
            self._db.executemany(
                "UPDATE pairs SET in_window = ?, is_star = ?, why = ? WHERE camera = ? AND id = ?",
                [(int(r.in_window), int(r.is_star), r.why, camera, r.id) for r in roles],
            )
            self._db.executemany(
                "DELETE FROM pairs WHERE camera = ? AND id = ?", [(camera, r.id) for r in deletes]
            )
            self._db.execute(
                "INSERT INTO cameras VALUES (?, ?, ?) ON CONFLICT(camera) DO UPDATE SET "
                "next_id = excluded.next_id, total_frames_added = excluded.total_frames_added",
                (camera, next_id, total_frames_added),
            )
        self.unlink(camera, deletes)

    @contextmanager
    def _transaction(self, failure: str) -> Iterator[None]:
        """One SQLite transaction under the lock; any error rolls back, a SQLite one becomes StorageError(failure)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # BEGIN itself failed, or SQLite already rolled back
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"{failure}: {exc}") from exc
                raise

    def unlink(self, camera: str, records: Iterable[PairRecord]) -> None:
        for rec in records:
            for path in self._files(camera, rec):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    pass  # left as an orphan; load() removes it at the next start

    def remove_camera(self, camera: str) -> None:
        """Delete a camera's index rows, then its frames."""
        d = self._dir(camera)
        with self._transaction(f"cannot remove camera {camera!r} from the frame index"):
            self._db.execute("DELETE FROM pairs WHERE camera = ?", (camera,))
            self._db.execute("DELETE FROM cameras WHERE camera = ?", (camera,))
        shutil.rmtree(d, ignore_errors=True)
