"""What a watch is and what it emits: plain, typed values shared by the trigger policy, the manager and the sinks.

A ``WatchSpec`` comes from the config file (``[watches.NAME]``) or the API (``watch.add``). A ``WatchEvent`` is
what the daemon sends when a watch's condition starts or ends to hold; ``to_message`` is its one wire form, the
same JSON for WebSocket subscribers, webhooks and MQTT. A description generated after the event goes out as an
update with the same event id (``kind`` ``described``), so no sink ever waits for generation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

EventKind = Literal["started", "ended", "described"]


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
