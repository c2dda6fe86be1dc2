"""Cameras added or removed over the API, persisted across restarts.

The configuration file stays the operator's; runtime changes live beside the frame store in
``<state_dir>/cameras.json`` ({"added": {name: url}, "removed": [name, ...]}), written atomically
(temporary file, fsync, rename) with mode 0600 because URLs may hold credentials. The cameras the daemon
watches are the configured ones, minus "removed", plus "added".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from livewatch.config import Camera
from livewatch.errors import StorageError


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
        added = data.get("added", {})
        removed = data.get("removed", [])
        if not isinstance(added, dict) or not all(isinstance(v, str) for v in added.values()):
            raise StorageError(f"{self.path}: 'added' must map camera names to URLs")
        if not isinstance(removed, list):
            raise StorageError(f"{self.path}: 'removed' must be a list of camera names")
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

    def remove(self, name: str) -> None:
        self.added.pop(name, None)
        self.removed.add(name)
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = json.dumps({"added": self.added, "removed": sorted(self.removed)}, indent=2)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot save runtime cameras: {exc.strerror or exc}") from exc
