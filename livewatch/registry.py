"""Cameras added or removed over the API, persisted across restarts.

The configuration file stays the operator's; runtime changes live beside the frame store in
``<state_dir>/cameras.json`` ({"added": {name: url}, "removed": [name, ...]}), written atomically
(temporary file, fsync, rename) with mode 0600 because URLs may hold credentials. The cameras the daemon
watches are the configured ones, minus "removed", plus "added". "removed" only ever names configured cameras
(removing a camera that was added over the API just forgets it), so it stays as small as the config file.
A file that cannot be read is moved aside by the daemon (``move_aside``): saved cameras never stop a start.
"""

from __future__ import annotations

import json
from pathlib import Path

from livewatch.atomicfile import RuntimeOverlay, move_aside, read_json_object, write_private
from livewatch.capture.masks import Masks, parse_masks
from livewatch.config import Camera
from livewatch.errors import MaskError, StorageError
from livewatch.names import is_camera_name


class CameraRegistry(RuntimeOverlay[str]):
    what = "runtime cameras"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir / "cameras.json")

    def load(self) -> None:
        data = read_json_object(self.path, "runtime cameras")
        if data is None:
            return
        added = data.get("added", {})
        removed = data.get("removed", [])
        if not isinstance(added, dict) or not all(isinstance(v, str) for v in added.values()):
            raise StorageError(f"{self.path}: 'added' must map camera names to URLs")
        if not isinstance(removed, list):
            raise StorageError(f"{self.path}: 'removed' must be a list of camera names")
        if not all(is_camera_name(str(n)) for n in [*added, *removed]):
            raise StorageError(f"{self.path}: holds a camera name that is not valid")
        self.added = dict(added)
        self.removed = {str(n) for n in removed}

    def effective(self, configured: tuple[Camera, ...]) -> list[Camera]:
        cameras = [c for c in configured if c.name not in self.removed and c.name not in self.added]
        cameras.extend(Camera(name, url) for name, url in self.added.items())
        return cameras


class MaskOverrides:
    """Privacy masks set over the API (``camera.masks``), kept in ``<state_dir>/masks.json`` ({"cameras": {name:
    [polygon, ...]}}, written atomically, mode 0600). They replace the configured masks of that camera; a camera
    that is removed forgets them. A file that cannot be read is moved aside by the daemon, like the cameras'."""

    what = "privacy masks"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "masks.json"
        self.cameras: dict[str, Masks] = {}

    def load(self) -> None:
        data = read_json_object(self.path, self.what)
        if data is None:
            return
        cameras = data.get("cameras", {})
        if not isinstance(cameras, dict) or not all(is_camera_name(str(n)) for n in cameras):
            raise StorageError(f"{self.path}: 'cameras' must map camera names to lists of polygons")
        try:
            self.cameras = {str(name): parse_masks(value) for name, value in cameras.items()}
        except MaskError as exc:
            raise StorageError(f"{self.path}: {exc}") from None

    def move_aside(self) -> Path | None:
        self.cameras = {}
        return move_aside(self.path)

    def masks(self, camera: Camera) -> Masks:
        """The camera's masks: set over the API, else configured."""
        return self.cameras.get(camera.name, camera.masks)

    def set(self, name: str, masks: Masks) -> None:
        self.cameras[name] = masks
        self._save()

    def forget(self, name: str) -> None:
        if self.cameras.pop(name, None) is not None:
            self._save()

    def _save(self) -> None:
        payload = json.dumps({"cameras": {n: m.to_json() for n, m in self.cameras.items()}}, indent=1)
        try:
            write_private(self.path, payload)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot save {self.what}: {exc.strerror or exc}") from exc
