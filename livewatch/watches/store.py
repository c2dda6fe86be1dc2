"""Watches added over the API, persisted across restarts (``<state_dir>/watches.json``).

Configured watches (``[watches.NAME]``) stay the operator's; the API's are saved here, atomically (temporary file,
fsync, rename, mode 0600), as {"added": {name: spec}, "removed": [configured names]}, the same shape and rules as
the runtime cameras (livewatch.registry). The file is state-directory input, so it is validated as untrusted:
a file that cannot be read or holds an invalid watch is moved aside by the daemon and never stops a start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livewatch.atomicfile import RuntimeOverlay, read_json_object
from livewatch.errors import StorageError
from livewatch.names import is_camera_name
from livewatch.watches.events import WATCH_FIELDS, WatchSpec


def spec_from_json(name: str, data: Any) -> WatchSpec:
    """A stored (or configured) watch, checked with the API's own rules; ValueError if invalid."""
    if not isinstance(data, dict):
        raise ValueError(f"watch {name!r}: not an object")
    fields = {k: v for k, v in data.items() if k != "name"}
    unknown = set(fields) - WATCH_FIELDS
    if unknown:
        raise ValueError(f"watch {name!r}: unknown field(s): {', '.join(sorted(unknown))}")
    try:
        return WatchSpec.from_fields({"name": name, **fields})
    except ValueError as exc:
        raise ValueError(f"watch {name!r}: {exc}") from None


class WatchStore(RuntimeOverlay[WatchSpec]):
    what = "runtime watches"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir / "watches.json")

    def saved_value(self, value: WatchSpec) -> dict[str, Any]:
        return {k: v for k, v in value.to_json().items() if k != "name"}

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
