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
import os
import time
from pathlib import Path

from livewatch.config import Camera
from livewatch.errors import StorageError
from livewatch.names import is_camera_name


class CameraRegistry:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "cameras.json"
        self.added: dict[str, str] = {}
        self.removed: set[str] = set()

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise StorageError(f"{self.path}: cannot read runtime cameras: {exc}") from exc
        if not isinstance(data, dict):
            raise StorageError(f"{self.path}: not a JSON object")
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

    def add(self, name: str, url: str) -> None:
        self.added[name] = url
        self.removed.discard(name)
        self._save()

    def remove(self, name: str, configured: bool) -> None:
        self.added.pop(name, None)
        if configured:
            self.removed.add(name)
        self._save()

    def move_aside(self) -> Path | None:
        """Rename an unreadable file to ``cameras.json.corrupt-<UTC time>`` and start empty; the path, or None."""
        self.added, self.removed = {}, set()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        try:
            os.replace(self.path, aside)
        except OSError:
            return None
        return aside

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = json.dumps({"added": self.added, "removed": sorted(self.removed)}, indent=2)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)  # a planted file or link of that name: O_EXCL below creates our own
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot save runtime cameras: {exc.strerror or exc}") from exc
