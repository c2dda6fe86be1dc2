"""Watches added over the API are kept in the state directory (watches.json), validated like API input when read
back: a file that is not JSON, or holds an invalid watch, is refused whole (the daemon moves it aside)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from livewatch.errors import StorageError
from livewatch.watches.events import WatchSpec
from livewatch.watches.store import WatchStore

SPEC = WatchSpec("door", "front", "a person at the door", 0.8, 0.3, 3, 120.0, (22, 6), True)


def test_saved_watches_come_back_and_removal_of_a_configured_one_is_kept(tmp_path: Path) -> None:
    store = WatchStore(tmp_path)
    store.add(SPEC.name, SPEC)
    store.remove("garage", configured=True)
    assert stat.S_IMODE((tmp_path / "watches.json").stat().st_mode) == 0o600
    again = WatchStore(tmp_path)
    again.load()
    assert again.added == {"door": SPEC} and again.removed == {"garage"}
    configured = {"garage": WatchSpec("garage", "back", "the garage door is open"), "door": WatchSpec("door", "x", "y")}
    assert again.effective(configured) == {"door": SPEC}


@pytest.mark.parametrize("content", [
    "not json",
    "[]",
    '{"added": {"door": {"camera": "front", "condition": "x", "on": 0.2, "off": 0.5}}}',
    '{"added": {"door": {"camera": "../etc", "condition": "x"}}}',
    '{"added": {"bad name": {"camera": "front", "condition": "x"}}}',
    '{"added": {"door": {"camera": "front", "condition": "x\\u0000"}}}',
    '{"added": {}, "removed": ["../x"]}',
    '{"added": {"door": {"camera": "front", "condition": "x", "extra": 1}}}',
])
def test_an_invalid_file_is_refused_whole_and_can_be_moved_aside(tmp_path: Path, content: str) -> None:
    (tmp_path / "watches.json").write_text(content)
    store = WatchStore(tmp_path)
    with pytest.raises(StorageError):
        store.load()
    aside = store.move_aside()
    assert aside is not None and aside.read_text() == content and not (tmp_path / "watches.json").exists()
    assert store.added == {} and store.removed == set()
    store.add(SPEC.name, SPEC)  # and saving starts afresh
    assert json.loads((tmp_path / "watches.json").read_text())["added"]["door"]["camera"] == "front"
