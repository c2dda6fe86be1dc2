"""The crash-safe frame store: JPEG files plus a SQLite index (WAL mode, synchronous=FULL).

Layout under the state directory:

    frames/index.sqlite3            one index for every camera
    frames/<camera>/<id>-0.jpg      first frame of pair <id>   (a lone frame paired with itself has only -0)
    frames/<camera>/<id>-1.jpg      second frame

Protocol of one commit, so that a kill -9 at any instant leaves the last committed state intact:

1. each new JPEG is written to ``<name>.tmp``, fsync'ed, renamed to its final name; the directory is fsync'ed;
2. one SQLite transaction inserts the new pairs, updates roles, deletes removed pairs and the camera's counters;
3. only then are the files of removed pairs unlinked.

A crash before 2 leaves files no index row names (orphans); a crash after 2 leaves files of removed pairs. Both
are deleted by ``load`` at the next start, together with stray ``.tmp`` files, so the index and the files agree:
every row has its files and every file has its row.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from livewatch.errors import StorageError

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
    PRIMARY KEY (camera, id)
);
CREATE TABLE IF NOT EXISTS cameras (
    camera TEXT PRIMARY KEY,
    next_id INTEGER NOT NULL,
    total_frames_added INTEGER NOT NULL
);
"""


@dataclass
class PairRecord:
    """One stored pair. ``jpegs`` holds the encoded frames (1 for a lone frame, else 2) until persisted."""

    id: int
    seq: tuple[int, int]
    wall: tuple[float, float]
    mono: tuple[float, float]
    single: bool
    importance: float
    in_window: bool
    is_star: bool
    jpegs: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(j) for j in self.jpegs)


@dataclass
class LoadedCamera:
    pairs: list[tuple[PairRecord, list[np.ndarray]]]  # with decoded RGB frames
    next_id: int
    total_frames_added: int
    removed_orphans: int
    dropped_rows: int


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray | None:
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FrameStore:
    """Thread-safe (one lock); each camera's memory calls it from its own thread."""

    def __init__(self, root: Path) -> None:
        self.root = root / "frames"
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / "index.sqlite3", check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the frame store in {self.root}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _dir(self, camera: str) -> Path:
        return self.root / camera

    def _files(self, camera: str, record: PairRecord) -> list[Path]:
        d = self._dir(camera)
        return [d / f"{record.id}-{i}.jpg" for i in range(1 if record.single else 2)]

    # -- reading ------------------------------------------------------------------------------------------------

    def load(self, camera: str) -> LoadedCamera:
        """The camera's committed state; cleans orphans and drops rows whose files are missing or corrupt."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, seq0, seq1, wall0, wall1, mono0, mono1, single, importance, in_window, is_star "
                "FROM pairs WHERE camera = ? ORDER BY wall0, id",
                (camera,),
            ).fetchall()
            meta = self._db.execute(
                "SELECT next_id, total_frames_added FROM cameras WHERE camera = ?", (camera,)
            ).fetchone()
        loaded: list[tuple[PairRecord, list[np.ndarray]]] = []
        dropped: list[int] = []
        for r in rows:
            rec = PairRecord(r[0], (r[1], r[2]), (r[3], r[4]), (r[5], r[6]), bool(r[7]), r[8], bool(r[9]), bool(r[10]))
            images, blobs = [], []
            for path in self._files(camera, rec):
                try:
                    blob = path.read_bytes()
                except OSError:
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
        keep = {p.name for rec, _ in loaded for p in self._files(camera, rec)}
        orphans = 0
        d = self._dir(camera)
        if d.is_dir():
            for path in d.iterdir():
                if path.name not in keep:
                    try:
                        path.unlink()
                        orphans += 1
                    except OSError:
                        pass
        next_id = meta[0] if meta else 0
        if loaded:
            next_id = max(next_id, max(rec.id for rec, _ in loaded) + 1)
        return LoadedCamera(loaded, next_id, meta[1] if meta else 0, orphans, len(dropped))

    def cameras(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT camera FROM cameras ORDER BY camera")]

    def bytes_on_disk(self, camera: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM pairs WHERE camera = ?", (camera,)).fetchone()
        return int(row[0])

    # -- writing ------------------------------------------------------------------------------------------------

    def write_files(self, camera: str, record: PairRecord) -> None:
        """Step 1 for one pair. Raises StorageError (the pair stays unsaved; nothing half-written remains)."""
        d = self._dir(camera)
        written: list[Path] = []
        try:
            d.mkdir(parents=True, exist_ok=True)
            for path, blob in zip(self._files(camera, record), record.jpegs, strict=True):
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "wb") as fh:
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                written.append(path)
            _fsync_dir(d)
        except OSError as exc:
            for path in [*written, *(p.with_name(p.name + ".tmp") for p in self._files(camera, record))]:
                try:
                    path.unlink()
                except OSError:
                    pass
            raise StorageError(f"cannot write frames of camera {camera!r}: {exc.strerror or exc}") from exc

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
                "INSERT OR REPLACE INTO pairs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (camera, r.id, r.seq[0], r.seq[1], r.wall[0], r.wall[1], r.mono[0], r.mono[1], int(r.single),
                     r.importance, int(r.in_window), int(r.is_star), r.nbytes)
                    for r in inserts
                ],
            )
            self._db.executemany(
                "UPDATE pairs SET in_window = ?, is_star = ? WHERE camera = ? AND id = ?",
                [(int(r.in_window), int(r.is_star), camera, r.id) for r in roles],
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
        """One SQLite transaction under the lock; any error rolls back and becomes StorageError(failure)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StorageError(f"{failure}: {exc}") from exc

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
        with self._transaction(f"cannot remove camera {camera!r} from the frame index"):
            self._db.execute("DELETE FROM pairs WHERE camera = ?", (camera,))
            self._db.execute("DELETE FROM cameras WHERE camera = ?", (camera,))
        shutil.rmtree(self._dir(camera), ignore_errors=True)
