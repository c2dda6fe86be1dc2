"""The WebSocket protocol: typed messages and their validation. Pure: no sockets, no clocks.

Every message is a JSON object with a ``type``. Requests carry a client-chosen ``id`` (a string of 1-128
characters or an integer) that replies echo. ``parse_request`` turns one text frame into a typed request or
raises ``ProtocolError`` with a stable code; the builders below produce every server message. README.md
("WebSocket protocol") documents the same, message by message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from livewatch.capture.masks import Masks, parse_masks
from livewatch.errors import ErrorCode, MaskError
from livewatch.names import CAMERA_NAME_RULE, is_camera_name
from livewatch.server import watchproto as wp


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


RequestId = str | int


@dataclass(frozen=True)
class Ask:
    id: RequestId
    camera: str | None
    question: str
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    since: str | None = None  # a question about the past: ISO 8601 or relative (-2h); see livewatch.timerange
    until: str | None = None
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings


MAX_STOPS = 4  # stop strings per question, each 1-64 characters (as OpenAI's API allows)


@dataclass(frozen=True)
class Answered:
    """A finished answer as the protocol sends it (the service's reply to an ``Ask``)."""

    text: str
    metrics: dict[str, Any]
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Cancel:
    id: RequestId


@dataclass(frozen=True)
class Status:
    id: RequestId


@dataclass(frozen=True)
class Memory:
    """The frames of a camera's context (star memory and window), for the page's strip."""

    id: RequestId
    camera: str


@dataclass(frozen=True)
class CameraAdd:
    id: RequestId
    name: str
    url: str


@dataclass(frozen=True)
class CameraRemove:
    id: RequestId
    name: str


@dataclass(frozen=True)
class CameraMasks:
    """Read a camera's privacy masks (``masks`` None) or replace them (an empty tuple clears them)."""

    id: RequestId
    camera: str
    masks: Masks | None = None


@dataclass(frozen=True)
class DigestRun:
    id: RequestId
    digest: str


@dataclass(frozen=True)
class DigestList:
    id: RequestId


Request = Ask | Cancel | Status | Memory | CameraAdd | CameraRemove | CameraMasks | DigestRun | DigestList | \
    wp.WatchRequest


@dataclass(frozen=True)
class Limits:
    max_question_chars: int = 4000
    max_tokens: int = 1024


class _Fields:
    """Typed access to a request's fields; every failure is a ProtocolError naming the field."""

    def __init__(self, obj: dict[str, Any], request_id: Any, allowed: set[str]) -> None:
        self.obj = obj
        self.id = request_id
        extra = set(obj) - allowed - {"type", "id"}
        if extra:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown field(s): {', '.join(sorted(extra))}", request_id)

    def _fail(self, name: str, what: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_REQUEST, f"field {name!r} must be {what}", self.id)

    def string(self, name: str, *, required: bool = True, max_len: int = 4096) -> str | None:
        value = self.obj.get(name)
        if value is None:
            if required:
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"missing field {name!r}", self.id)
            return None
        if not isinstance(value, str):
            raise self._fail(name, "a string")
        if len(value) > max_len:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"field {name!r} is over {max_len} characters", self.id)
        return value

    def integer(self, name: str, lo: int, hi: int) -> int | None:
        value = self.obj.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self._fail(name, f"an integer in [{lo}, {hi}]")
        return value

    def number(self, name: str, lo: float, hi: float, default: float) -> float:
        value = self.obj.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(name, f"a number in [{lo}, {hi}]")
        if not lo <= value <= hi:
            raise self._fail(name, f"a number in [{lo}, {hi}]")
        return float(value)

    def stops(self, name: str) -> tuple[str, ...]:
        """A string or a list of up to MAX_STOPS strings of 1-64 characters."""
        value = self.obj.get(name)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if (not isinstance(items, list) or len(items) > MAX_STOPS
                or not all(isinstance(s, str) and 1 <= len(s) <= 64 for s in items)):
            raise self._fail(name, f"a string or a list of at most {MAX_STOPS} strings of 1-64 characters")
        return tuple(items)


def _request_id(obj: dict[str, Any]) -> RequestId:
    rid = obj.get("id")
    if isinstance(rid, bool) or rid is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing field 'id' (a string or an integer)")
    if isinstance(rid, int):
        if abs(rid) > 2**53:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "field 'id' is out of range")
        return rid
    if isinstance(rid, str) and 1 <= len(rid) <= 128:
        return rid
    raise ProtocolError(ErrorCode.BAD_REQUEST, "field 'id' must be a string of 1-128 characters or an integer")


def _camera_name(f: _Fields, name: str, required: bool) -> str | None:
    value = f.string(name, required=required, max_len=64)
    if value is not None and not is_camera_name(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"field {name!r}: {CAMERA_NAME_RULE}", f.id)
    return value


def parse_request(text: str | bytes, limits: Limits = Limits()) -> Request:
    """One WebSocket message to a typed request. Raises ProtocolError."""
    if isinstance(text, bytes):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "binary messages are not part of the protocol; send JSON text")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:  # the position only: the decoder's words are not ours to pass on
        position = int(exc.pos)
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON (at character {position})") from None
    except (RecursionError, ValueError):  # nesting too deep; an integer of thousands of digits
        raise ProtocolError(ErrorCode.BAD_REQUEST, "not valid JSON: nested too deep or a number too long") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a message must be a JSON object")
    try:  # a "\ud800" escape decodes to a lone surrogate, which no reply could encode back
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the message holds a string that is not valid Unicode") from None
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing field 'type'", obj.get("id") if _id_ok(obj) else None)
    rid = _request_id(obj)
    if kind == "ask":
        f = _Fields(obj, rid, {"camera", "question", "max_tokens", "temperature", "top_p", "top_k", "seed", "since",
                               "until", "stop"})
        camera = _camera_name(f, "camera", required=False)
        question = f.string("question", max_len=limits.max_question_chars)
        assert question is not None
        if not question.strip():
            raise ProtocolError(ErrorCode.BAD_REQUEST, "field 'question' is empty", rid)
        return Ask(
            id=rid,
            camera=camera,
            question=question,
            max_tokens=f.integer("max_tokens", 1, limits.max_tokens),
            temperature=f.number("temperature", 0.0, 2.0, 0.0),
            top_p=f.number("top_p", 1e-6, 1.0, 1.0),
            top_k=f.integer("top_k", 0, 1000) or 0,
            seed=f.integer("seed", 0, 2**32 - 1),
            since=f.string("since", required=False, max_len=40),
            until=f.string("until", required=False, max_len=40),
            stop=f.stops("stop"),
        )
    if kind == "cancel":
        _Fields(obj, rid, set())
        return Cancel(id=rid)
    if kind == "status":
        _Fields(obj, rid, set())
        return Status(id=rid)
    if kind == "memory":
        camera = _camera_name(_Fields(obj, rid, {"camera"}), "camera", required=True)
        assert camera is not None
        return Memory(id=rid, camera=camera)
    if kind == "camera.add":
        f = _Fields(obj, rid, {"name", "url"})
        name = _camera_name(f, "name", required=True)
        url = f.string("url", max_len=2048)
        assert name is not None and url is not None
        return CameraAdd(id=rid, name=name, url=url)
    if kind == "camera.remove":
        f = _Fields(obj, rid, {"name"})
        name = _camera_name(f, "name", required=True)
        assert name is not None
        return CameraRemove(id=rid, name=name)
    if kind == "camera.masks":
        f = _Fields(obj, rid, {"camera", "masks"})
        camera = _camera_name(f, "camera", required=True)
        assert camera is not None
        try:
            masks = parse_masks(obj["masks"]) if "masks" in obj else None
        except MaskError as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"field 'masks': {exc}", rid) from None
        return CameraMasks(id=rid, camera=camera, masks=masks)
    if kind == "digest.run":
        name = _camera_name(_Fields(obj, rid, {"digest"}), "digest", required=True)  # names follow the same rule
        assert name is not None
        return DigestRun(id=rid, digest=name)
    if kind == "digest.list":
        _Fields(obj, rid, set())
        return DigestList(id=rid)
    if kind in wp.KINDS:
        try:
            return wp.parse_watch_request(kind, obj, rid)
        except wp.WatchProtocolError as exc:
            raise ProtocolError(exc.code, str(exc), rid) from None
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE,
        f"unknown message type {kind[:64]!r} (known: ask, cancel, status, memory, camera.add, camera.remove, "
        f"camera.masks, digest.run, digest.list, "
        f"{', '.join(wp.KINDS)})",
        rid,
    )


_TYPES: dict[type, str] = {Ask: "ask", Cancel: "cancel", Status: "status", CameraAdd: "camera.add",
                           CameraRemove: "camera.remove", CameraMasks: "camera.masks", Memory: "memory",
                           DigestRun: "digest.run", DigestList: "digest.list", wp.WatchAdd: "watch.add", wp.WatchRemove: "watch.remove",
                           wp.WatchList: "watch.list", wp.WatchSubscribe: "watch.subscribe",
                           wp.WatchUnsubscribe: "watch.unsubscribe", wp.Find: "find"}
_DEFAULTS = {"temperature": 0.0, "top_p": 1.0, "top_k": 0}


def encode_request(request: Request) -> str:
    """A typed request as the client sends it (the inverse of ``parse_request``; defaults and None left out)."""
    fields = {k: v.to_json() if isinstance(v, Masks) else list(v) if isinstance(v, tuple) else v
              for k, v in vars(request).items() if v is not None and _DEFAULTS.get(k, object()) != v}
    return _dump({"type": _TYPES[type(request)], **fields})


def parse_reply(text: str | bytes) -> dict[str, Any]:
    """One server message as a dict with a string ``type``; ProtocolError for anything else."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the daemon sent a message that is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the daemon sent a message without a type")
    return obj


def _id_ok(obj: dict[str, Any]) -> bool:
    rid = obj.get("id")
    return (isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) <= 2**53) or (
        isinstance(rid, str) and 1 <= len(rid) <= 128
    )


# -- server messages --------------------------------------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def token_message(request_id: RequestId, text: str) -> str:
    return _dump({"type": "token", "id": request_id, "text": text})


def answer_message(request_id: RequestId, camera: str, text: str, metrics: dict[str, Any],
                   evidence: list[dict[str, Any]] | None = None) -> str:
    return _dump({"type": "answer", "id": request_id, "camera": camera, "text": text, "metrics": metrics,
                  "evidence": evidence or []})


def error_message(request_id: RequestId | None, code: ErrorCode, message: str) -> str:
    return _dump({"type": "error", "id": request_id, "code": code.value, "message": message})


def status_message(
    request_id: RequestId, cameras: dict[str, Any], engine: dict[str, Any], memory: dict[str, Any],
    watches: dict[str, Any] | None = None, server: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
) -> str:
    message = {"type": "status", "id": request_id, "cameras": cameras, "engine": engine, "memory": memory,
               "watches": watches or {}, "server": server or {}}
    if cluster is not None:
        message["cluster"] = cluster
    return _dump(message)


def memory_message(request_id: RequestId, camera: str, frames: list[dict[str, Any]]) -> str:
    return _dump({"type": "memory", "id": request_id, "camera": camera, "frames": frames})


def camera_added_message(request_id: RequestId, name: str, url: str) -> str:
    return _dump({"type": "camera.added", "id": request_id, "name": name, "url": url})


def camera_removed_message(request_id: RequestId, name: str) -> str:
    return _dump({"type": "camera.removed", "id": request_id, "name": name})


def digest_result_message(request_id: RequestId, digest: dict[str, Any]) -> str:
    return _dump({"type": "digest.result", "id": request_id, "digest": digest})


def digest_list_message(request_id: RequestId, listing: dict[str, Any]) -> str:
    return _dump({"type": "digest.list", "id": request_id, **listing})


def camera_masks_message(request_id: RequestId, camera: str, masks: Masks) -> str:
    return _dump({"type": "camera.masks", "id": request_id, "camera": camera, "masks": masks.to_json()})
