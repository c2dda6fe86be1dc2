"""A small file of the state directory written whole or not at all, readable by the daemon's user only."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

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
