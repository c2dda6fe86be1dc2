"""Watches added over the API, persisted across restarts (``<state_dir>/watches.json``).

Configured watches (``[watches.NAME]``) stay the operator's; the API's are saved here, atomically (temporary file,
fsync, rename, mode 0600), as {"added": {name: spec}, "removed": [configured names]}, the same shape and rules as
the runtime cameras (livewatch.registry). The file is state-directory input, so it is validated as untrusted:
a file that cannot be read or holds an invalid watch is moved aside by the daemon and never stops a start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from livewatch.atomicfile import move_aside, read_json_object, write_private
from livewatch.errors import StorageError
from livewatch.names import is_camera_name
from livewatch.server.watchproto import WatchAdd, WatchProtocolError, parse_watch_request
from livewatch.watches.events import WatchSpec


def spec_from_json(name: str, data: Any) -> WatchSpec:
    """A stored (or configured) watch, checked with the protocol's own rules; ValueError if invalid."""
    if not isinstance(data, dict):
        raise ValueError(f"watch {name!r}: not an object")
    fields = {k: v for k, v in data.items() if k != "name"}
    try:
        req = parse_watch_request("watch.add", {"name": name, **fields}, None)
    except WatchProtocolError as exc:
        raise ValueError(f"watch {name!r}: {exc}") from None
    assert isinstance(req, WatchAdd)
    return spec_of(req)


def spec_of(req: WatchAdd) -> WatchSpec:
    return WatchSpec(req.name, req.camera, req.condition, req.on, req.off, req.confirm, req.cooldown_s,
                     req.active_hours, req.describe)


class WatchStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "watches.json"
        self.added: dict[str, WatchSpec] = {}
        self.removed: set[str] = set()

    def load(self) -> None:
        data = read_json_object(self.path, "runtime watches")
        if data is None:
            return
        if not isinstance(data.get("added", {}), dict):
            raise StorageError(f"{self.path}: 'added' must be an object")
        removed = data.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(n, str) and is_camera_name(n) for n in removed):
            raise StorageError(f"{self.path}: 'removed' must be a list of watch names")
        try:
            added = {str(n): spec_from_json(str(n), s) for n, s in data.get("added", {}).items()}
        except ValueError as exc:
            raise StorageError(f"{self.path}: {exc}") from None
        self.added, self.removed = added, set(removed)

    def effective(self, configured: dict[str, WatchSpec]) -> dict[str, WatchSpec]:
        specs = {n: s for n, s in configured.items() if n not in self.removed}
        specs.update(self.added)
        return specs

    def add(self, spec: WatchSpec) -> None:
        self.added[spec.name] = spec
        self.removed.discard(spec.name)
        self._save()

    def remove(self, name: str, configured: bool) -> None:
        self.added.pop(name, None)
        if configured:
            self.removed.add(name)
        self._save()

    def move_aside(self) -> Path | None:
        self.added, self.removed = {}, set()
        return move_aside(self.path)

    def _save(self) -> None:
        payload = json.dumps({"added": {n: {k: v for k, v in s.to_json().items() if k != "name"}
                                        for n, s in self.added.items()},
                              "removed": sorted(self.removed)}, indent=2)
        try:
            write_private(self.path, payload)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot save runtime watches: {exc.strerror or exc}") from exc
