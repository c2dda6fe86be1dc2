"""A small file of the state directory written whole or not at all, readable by the daemon's user only."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

from livewatch.errors import StorageError


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename) with mode 0600. Raises OSError.

    The temporary file has a fresh random name (mkstemp: O_EXCL, mode 0600): two writers never share one, and
    nothing planted in the directory can be written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_aside(path: Path) -> Path | None:
    """Rename an unreadable state file to ``<name>.corrupt-<UTC time>`` (kept for a person to look at); the new
    path, or None when there was nothing to move."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return aside


def read_json_object(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None when there is no file); StorageError naming ``what`` otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise StorageError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"{path}: not a JSON object")
    return data


V = TypeVar("V")


class RuntimeOverlay(Generic[V]):
    """What the API changed over the configuration file, kept in one state file: ``added`` (name -> value) and
    ``removed`` (configured names), saved whole at each change (``write_private``). Subclasses read the file back
    (``load``, validating it as untrusted input) and say how a value is saved (``saved_value``)."""

    what = "runtime entries"  # for error messages

    def __init__(self, path: Path) -> None:
        self.path = path
        self.added: dict[str, V] = {}
        self.removed: set[str] = set()

    def saved_value(self, value: V) -> Any:
        return value

    def add(self, name: str, value: V) -> None:
        self.added[name] = value
        self.removed.discard(name)
        self._save()

    def remove(self, name: str, configured: bool) -> None:
        """Forget an added entry; a configured one is remembered as removed."""
        self.added.pop(name, None)
        if configured:
            self.removed.add(name)
        self._save()

    def move_aside(self) -> Path | None:
        """Rename an unreadable file aside (``move_aside``) and start empty; the new path, or None."""
        self.added, self.removed = {}, set()
        return move_aside(self.path)

    def _save(self) -> None:
        payload = json.dumps({"added": {n: self.saved_value(v) for n, v in self.added.items()},
                              "removed": sorted(self.removed)}, indent=2)
        try:
            write_private(self.path, payload)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot save {self.what}: {exc.strerror or exc}") from exc
