"""What a watch is and what it emits: plain, typed values shared by the trigger policy, the manager and the sinks.

A ``WatchSpec`` comes from the config file (``[watches.NAME]``) or the API (``watch.add``), checked by one set
of rules (``WatchSpec.from_fields``) wherever it comes from. A ``WatchEvent`` is
what the daemon sends when a watch's condition starts or ends to hold; ``to_message`` is its one wire form, the
same JSON for WebSocket subscribers, webhooks and MQTT. A description generated after the event goes out as an
update with the same event id (``kind`` ``described``), so no sink ever waits for generation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from livewatch.names import CAMERA_NAME_RULE, is_camera_name

EventKind = Literal["started", "ended", "described"]


MAX_CONDITION_CHARS = 300
WATCH_FIELDS = {"camera", "condition", "on", "off", "confirm", "cooldown_s", "active_hours", "describe"}  # and name
NAME_RULE = CAMERA_NAME_RULE.replace("camera names", "names")


def check_condition(text: str) -> str | None:
    """Why a watch's condition (or a search's query) is not acceptable, or None."""
    if not text.strip():
        return "the condition is empty"
    if len(text) > MAX_CONDITION_CHARS:
        return f"the condition is over {MAX_CONDITION_CHARS} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "the condition holds a control character"
    return None  # the tokenizer's markers are plain text to the model (engine.prompting.prompt.ClientTextTokenizer)


@dataclass(frozen=True)
class WatchSpec:
    name: str
    camera: str
    condition: str  # natural language: "a person is standing at the door"
    on: float = 0.7  # P(yes) at or above which the condition counts as holding
    off: float = 0.4  # P(yes) at or below which it counts as gone (hysteresis between the two)
    confirm: int = 2  # consecutive evaluations beyond a threshold before the state changes
    cooldown_s: float = 60.0  # no second "started" event sooner than this after the last one
    active_hours: tuple[int, int] | None = None  # (from, to) local hours, to exclusive; wraps midnight; None: always
    describe: bool = False  # follow a "started" event with a short generated description

    @classmethod
    def from_fields(cls, obj: dict[str, Any]) -> WatchSpec:
        """A watch from its JSON fields (``watch.add``, the config's ``[watches.NAME]``, the saved watches), with
        the one set of rules; ValueError naming the field otherwise. Unknown fields are the caller's to refuse."""
        name, camera = (_name(obj, field) for field in ("name", "camera"))
        condition = obj.get("condition")
        if not isinstance(condition, str):
            raise ValueError("missing field 'condition' (a string)")
        if why := check_condition(condition):
            raise ValueError(f"field 'condition': {why.replace('the condition', 'it')}")
        on, off = _number(obj, "on", 0.0, 1.0, 0.7), _number(obj, "off", 0.0, 1.0, 0.4)
        if off >= on:
            raise ValueError(f"field 'off' ({off}) must be below 'on' ({on})")
        confirm = obj.get("confirm", 2)
        if isinstance(confirm, bool) or not isinstance(confirm, int) or not 1 <= confirm <= 20:
            raise ValueError("field 'confirm' must be an integer in [1, 20]")
        hours = obj.get("active_hours")
        if hours is not None and (
                not isinstance(hours, list) or len(hours) != 2
                or not all(isinstance(h, int) and not isinstance(h, bool) for h in hours)
                or not (0 <= hours[0] <= 23 and 0 <= hours[1] <= 24) or hours[0] == hours[1]):
            raise ValueError("field 'active_hours' must be [from, to]: from 0-23, to 0-24 (exclusive), different")
        describe = obj.get("describe", False)
        if not isinstance(describe, bool):
            raise ValueError("field 'describe' must be true or false")
        return cls(name, camera, condition, on, off, confirm, _number(obj, "cooldown_s", 0.0, 86400.0, 60.0),
                   (hours[0], hours[1]) if hours else None, describe)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "camera": self.camera, "condition": self.condition, "on": self.on, "off": self.off,
            "confirm": self.confirm, "cooldown_s": self.cooldown_s,
            "active_hours": list(self.active_hours) if self.active_hours else None, "describe": self.describe,
        }


@dataclass(frozen=True)
class WatchEvent:
    watch: str
    camera: str
    kind: EventKind
    probability: float  # P(yes) of the evaluation that decided the event
    frame_time: float  # wall-clock capture time of the newest frame in the context that decided it
    frame_id: int  # the newest pair in that context: the evidence frame
    decided_at: float = field(default_factory=time.time)  # wall clock when the engine decided
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    description: str | None = None

    @property
    def frame_path(self) -> str:
        """Where the daemon serves the evidence frame (token-protected)."""
        return f"/frames/{self.camera}/{self.frame_id}.jpg"

    def described(self, text: str) -> WatchEvent:
        """The update that carries a generated description of this event (same id)."""
        return replace(self, kind="described", description=text)

    def to_message(self, sent_at: float | None = None) -> dict[str, Any]:
        """The event as sent; ``latency_s`` runs from the deciding frame's capture to ``sent_at`` (now)."""
        sent = time.time() if sent_at is None else sent_at
        return {
            "type": "event", "id": self.id, "watch": self.watch, "camera": self.camera, "kind": self.kind,
            "probability": round(self.probability, 4), "frame_time": self.frame_time, "frame_id": self.frame_id,
            "frame_url": self.frame_path, "decided_at": self.decided_at,
            "latency_s": round(max(sent - self.frame_time, 0.0), 3), "description": self.description,
        }


def _name(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise ValueError(f"missing field {field!r} (a string)")
    if not is_camera_name(value):
        raise ValueError(f"field {field!r}: {NAME_RULE}")
    return value


def _number(obj: dict[str, Any], field: str, lo: float, hi: float, default: float) -> float:
    value = obj.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"field {field!r} must be a number in [{lo}, {hi}]")
    return float(value)
