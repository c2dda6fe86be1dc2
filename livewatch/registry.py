"""Cameras added or removed over the API, persisted across restarts.

The configuration file stays the operator's; runtime changes live beside the frame store in
``<state_dir>/cameras.json`` ({"added": {name: url}, "removed": [name, ...]}), written atomically
(temporary file, fsync, rename) with mode 0600 because URLs may hold credentials. The cameras the daemon
watches are the configured ones, minus "removed", plus "added". "removed" only ever names configured cameras
(removing a camera that was added over the API just forgets it), so it stays as small as the config file.
A file that cannot be read is moved aside by the daemon (``move_aside``): saved cameras never stop a start.
"""

from __future__ import annotations

from pathlib import Path

from livewatch.atomicfile import RuntimeOverlay, read_json_object
from livewatch.config import Camera
from livewatch.errors import StorageError
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
