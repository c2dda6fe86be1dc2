"""The watch messages of the WebSocket protocol: typed requests, their validation, the replies. Pure.

    watch.add          {name, camera, condition, on?, off?, confirm?, cooldown_s?, active_hours?, describe?}
    watch.remove       {name}
    watch.list         {}
    watch.subscribe    {watches?: [name, ...]}   (absent: every watch, including ones added later)
    watch.unsubscribe  {}

Replies: ``watch.added`` (the watch as stored), ``watch.removed``, ``watch.list`` (every watch with its state),
``watch.subscribed``, ``watch.unsubscribed``; while subscribed, ``event`` messages arrive without an id
(README.md, "WebSocket protocol", has the fields).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from livewatch.errors import ErrorCode
from livewatch.names import is_camera_name
from livewatch.watches.events import NAME_RULE, WATCH_FIELDS, WatchSpec, check_condition

MAX_SUBSCRIBED = 256


class WatchProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str, request_id: Any) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class WatchAdd:
    id: Any
    name: str
    camera: str
    condition: str
    on: float = 0.7
    off: float = 0.4
    confirm: int = 2
    cooldown_s: float = 60.0
    active_hours: tuple[int, int] | None = None
    describe: bool = False

    def spec(self) -> WatchSpec:
        return WatchSpec(self.name, self.camera, self.condition, self.on, self.off, self.confirm, self.cooldown_s,
                         self.active_hours, self.describe)


@dataclass(frozen=True)
class WatchRemove:
    id: Any
    name: str


@dataclass(frozen=True)
class WatchList:
    id: Any


@dataclass(frozen=True)
class WatchSubscribe:
    id: Any
    watches: tuple[str, ...] | None = None  # None: all


@dataclass(frozen=True)
class WatchUnsubscribe:
    id: Any


@dataclass(frozen=True)
class Find:
    id: Any
    query: str  # what to look for, as a watch's condition
    cameras: tuple[str, ...] | None = None  # None: every camera
    since: str | None = None
    until: str | None = None
    top: int = 5


WatchRequest = WatchAdd | WatchRemove | WatchList | WatchSubscribe | WatchUnsubscribe | Find
KINDS = ("watch.add", "watch.remove", "watch.list", "watch.subscribe", "watch.unsubscribe", "find")
_FIELDS = {
    "watch.add": {"name", *WATCH_FIELDS},
    "watch.remove": {"name"}, "watch.list": set(), "watch.subscribe": {"watches"}, "watch.unsubscribe": set(),
    "find": {"query", "cameras", "since", "until", "top"},
}


def _bad(rid: Any, message: str) -> WatchProtocolError:
    return WatchProtocolError(ErrorCode.BAD_REQUEST, message, rid)


def _name(obj: dict[str, Any], field: str, rid: Any) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise _bad(rid, f"missing field {field!r} (a string)")
    if not is_camera_name(value):
        raise _bad(rid, f"field {field!r}: {NAME_RULE}")
    return value


def parse_watch_request(kind: str, obj: dict[str, Any], rid: Any) -> WatchRequest:
    """A ``watch.*`` message (``kind`` one of KINDS) to its typed request; WatchProtocolError otherwise."""
    extra = set(obj) - _FIELDS[kind] - {"type", "id"}
    if extra:
        raise _bad(rid, f"unknown field(s): {', '.join(sorted(extra))}")
    if kind == "watch.remove":
        return WatchRemove(rid, _name(obj, "name", rid))
    if kind == "watch.list":
        return WatchList(rid)
    if kind == "watch.unsubscribe":
        return WatchUnsubscribe(rid)
    if kind == "find":
        return _find(obj, rid)
    if kind == "watch.subscribe":
        names = obj.get("watches")
        if names is None:
            return WatchSubscribe(rid)
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_SUBSCRIBED:
            raise _bad(rid, f"field 'watches' must be a list of 1-{MAX_SUBSCRIBED} watch names")
        if not all(isinstance(n, str) and is_camera_name(n) for n in names):
            raise _bad(rid, f"field 'watches': {NAME_RULE}")
        return WatchSubscribe(rid, tuple(dict.fromkeys(names)))
    try:
        spec = WatchSpec.from_fields(obj)
    except ValueError as exc:
        raise _bad(rid, str(exc)) from None
    return WatchAdd(rid, spec.name, spec.camera, spec.condition, spec.on, spec.off, spec.confirm, spec.cooldown_s,
                    spec.active_hours, spec.describe)


def _text(obj: dict[str, Any], field: str, rid: Any) -> str:
    """A watch's condition or a find's query: plain text the model reads."""
    value = obj.get(field)
    if not isinstance(value, str):
        raise _bad(rid, f"missing field {field!r} (a string)")
    why = check_condition(value)
    if why is not None:
        raise _bad(rid, f"field {field!r}: {why.replace('the condition', 'it')}")
    return value


def _find(obj: dict[str, Any], rid: Any) -> Find:
    query = _text(obj, "query", rid)
    cameras = obj.get("cameras")
    if cameras is not None and (not isinstance(cameras, list) or not 1 <= len(cameras) <= MAX_SUBSCRIBED
                                or not all(isinstance(c, str) and is_camera_name(c) for c in cameras)):
        raise _bad(rid, f"field 'cameras' must be a list of 1-{MAX_SUBSCRIBED} camera names")
    times = {}
    for field in ("since", "until"):
        value = obj.get(field)
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 40):
            raise _bad(rid, f"field {field!r} must be a time of 1-40 characters")
        times[field] = value
    top = obj.get("top", 5)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 50:
        raise _bad(rid, "field 'top' must be an integer in [1, 50]")
    return Find(rid, query, tuple(dict.fromkeys(cameras)) if cameras else None, times["since"], times["until"], top)


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def reply(kind: str, request_id: Any, **fields: Any) -> str:
    """A reply to a watch request: ``watch.added``, ``watch.removed``, ``watch.list``, ``watch.subscribed``..."""
    return _dump({"type": kind, "id": request_id, **fields})
