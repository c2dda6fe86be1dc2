"""Where a local backend keeps its cameras' frames: one store for the daemon, or one per camera for a cluster shard.

A daemon keeps every camera in one ``FrameStore`` in its state directory (``OneStore``). A cluster shard keeps each
camera in a store of its own under the shared store directory, ``<store_dir>/cameras/<name>/`` (``StorePerCamera``),
so a camera that moves to another shard (its shard lost, or a rebalance) restores its star memory and stream window
there, and one SQLite index is only ever written by the one shard that runs the camera. Both open on a worker
thread (a store's check, or the rebuild of a damaged index, may take a while); a store that cannot be opened leaves
its cameras running from RAM (status: ``disk_cache_enabled = false``), logged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from livewatch.errors import StorageError
from livewatch.log import get_logger
from livewatch.memory.rebuild import camera_dir, read_frame_file
from livewatch.memory.store import FrameStore
from livewatch.names import is_camera_name

log = get_logger("livewatch.store")


class Stores(Protocol):
    def open(self) -> None:
        """Open what is shared by every camera (blocking: call it on a thread)."""

    def open_camera(self, camera: str) -> FrameStore | None:
        """The store of ``camera``'s memory (blocking: call it on a thread); None: the camera runs from RAM."""

    def store_of(self, camera: str) -> FrameStore | None:
        """The store ``open_camera`` gave ``camera`` (None: none, or not opened)."""

    def close_camera(self, camera: str, *, delete: bool) -> None:
        """``camera`` stopped (blocking); ``delete``: its frames are gone for good (its memory deleted them)."""

    def close(self) -> None: ...


class OneStore:
    """The daemon's one store in its state directory (None: the directory could not be locked or written)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._store: FrameStore | None = None
        self._opened = False

    def open(self) -> None:
        if self._opened or self.state_dir is None:
            return
        self._opened = True
        try:
            self._store = FrameStore(self.state_dir)
        except StorageError as exc:
            log.error("store.unavailable", error=str(exc), state_dir=str(self.state_dir))

    def open_camera(self, camera: str) -> FrameStore | None:
        self.open()
        return self._store

    def store_of(self, camera: str) -> FrameStore | None:
        return self._store

    def close_camera(self, camera: str, *, delete: bool) -> None:
        """The one store stays open for the other cameras (a deleted camera's memory removed its frames)."""

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def camera_store_dir(store_root: Path, camera: str) -> Path:
    if not is_camera_name(camera):  # never a path out of the store (the protocol checked it already)
        raise ValueError(f"invalid camera name: {camera[:80]!r}")
    return store_root / "cameras" / camera


def stored_frame(store_root: Path, camera: str, frame_id: int) -> bytes | None:
    """A frame of ``camera`` read from a shared store (by any process, while its shard writes)."""
    return read_frame_file(camera_dir(camera_store_dir(store_root, camera), camera), frame_id)


class StorePerCamera:
    """A store per camera under ``store_root`` (a cluster shard's cameras)."""

    def __init__(self, store_root: Path) -> None:
        self.store_root = store_root
        self._stores: dict[str, FrameStore] = {}

    def open(self) -> None:
        """Nothing is shared: each camera's store opens with it."""

    def open_camera(self, camera: str) -> FrameStore | None:
        if camera in self._stores:
            return self._stores[camera]
        try:
            store = FrameStore(camera_store_dir(self.store_root, camera))
        except StorageError as exc:
            log.error("store.unavailable", camera=camera, error=str(exc))
            return None
        self._stores[camera] = store
        return store

    def store_of(self, camera: str) -> FrameStore | None:
        return self._stores.get(camera)

    def close_camera(self, camera: str, *, delete: bool) -> None:
        store = self._stores.pop(camera, None)
        if store is not None:
            store.close()
        if delete:
            shutil.rmtree(camera_store_dir(self.store_root, camera), ignore_errors=True)

    def close(self) -> None:
        for camera in list(self._stores):
            self.close_camera(camera, delete=False)
