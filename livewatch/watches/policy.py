"""When a watch fires: the trigger policy that turns a watch's evaluations into "started" and "ended" events.

Pure bookkeeping (no clock reads, no I/O, no threads): the engine evaluates a watch each time its camera's context
changes (every ~2 s) and passes each result to ``Trigger.update`` with the time it was decided (wall-clock
seconds) and the local hour of that time; ``update`` returns a ``Transition`` when the evaluation changes the
watch's state, else None.

- States: "off" (the condition does not hold) and "on". A trigger starts "off".
- From "off": an evaluation with ``p >= on`` counts toward confirmation, any other resets the count; ``confirm``
  consecutive ones switch to "on" and emit "started".
- Cooldown: no "started" sooner than ``cooldown_s`` after the previous one (``now - last_started < cooldown_s``).
  A confirmation inside the cooldown stays "off" (no event, no silent "on": subscribers would never hear of it)
  and keeps counting; the first evaluation at or after the cooldown's end with the count still confirmed (every
  evaluation since high) starts at once. A dip below ``on`` meanwhile resets the count as usual.
- From "on": ``confirm`` consecutive evaluations with ``p <= off`` switch to "off" and emit "ended"; any other
  resets that count. Values in the band ``(off, on)`` never change the state (hysteresis: no flapping).
- Active hours ``(from, to)``: local hours, ``to`` exclusive, wrapping midnight when ``from > to`` (``(22, 6)`` is
  22:00 to 05:59); None means always. An evaluation outside them never counts toward a start (the count resets,
  so a start after the period begins needs ``confirm`` fresh evaluations inside it); a watch that is "on" at the
  first evaluation outside ends there, with that evaluation's probability, whatever its value.
- ``reset`` forgets the state and the counts silently (the caller ends an "on" watch itself if it must), but
  keeps the time of the last start, so a restart cannot re-start inside the cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from livewatch.watches.events import WatchSpec

State = Literal["on", "off"]


@dataclass(frozen=True)
class Transition:
    kind: Literal["started", "ended"]
    probability: float  # P(yes) of the evaluation that decided it
    at: float  # the ``now`` passed with that evaluation


def check_spec(spec: WatchSpec) -> None:
    """Raise ValueError when the spec's trigger settings make no sense."""
    if not 0.0 <= spec.off < spec.on <= 1.0:
        raise ValueError(f"watch {spec.name!r}: need 0 <= off < on <= 1, got off={spec.off} on={spec.on}")
    if spec.confirm < 1:
        raise ValueError(f"watch {spec.name!r}: confirm must be >= 1, got {spec.confirm}")
    if spec.cooldown_s < 0:
        raise ValueError(f"watch {spec.name!r}: cooldown_s must be >= 0, got {spec.cooldown_s}")
    if spec.active_hours is not None:
        start, end = spec.active_hours
        if not (0 <= start <= 23 and 0 <= end <= 24 and start != end):
            raise ValueError(f"watch {spec.name!r}: active_hours must be (0..23, 0..24) with from != to, "
                             f"got {spec.active_hours}")


def in_active_hours(active_hours: tuple[int, int] | None, local_hour: int) -> bool:
    """Whether ``local_hour`` (0..23) lies in ``active_hours`` (``to`` exclusive, wraps midnight; None: always)."""
    if active_hours is None:
        return True
    start, end = active_hours
    if start < end:
        return start <= local_hour < end
    return local_hour >= start or local_hour < end


class Trigger:
    """One watch's trigger state; feed it every evaluation in time order."""

    def __init__(self, spec: WatchSpec) -> None:
        check_spec(spec)
        self.spec = spec
        self._state: State = "off"
        self._count = 0  # consecutive evaluations toward the other state
        self._last_started: float | None = None
        self._last_p: float | None = None
        self._evaluations = 0
        self._events = 0

    @property
    def state(self) -> State:
        return self._state

    @property
    def last_probability(self) -> float | None:
        return self._last_p

    @property
    def evaluations(self) -> int:
        return self._evaluations

    @property
    def events(self) -> int:
        return self._events

    def reset(self) -> None:
        """Back to "off" with no counts, silently; the cooldown clock and the counters stay."""
        self._state = "off"
        self._count = 0

    def update(self, now: float, p: float, local_hour: int) -> Transition | None:
        """Take one evaluation (P(yes) = ``p`` decided at ``now``, local hour ``local_hour``)."""
        if not 0 <= local_hour <= 23:
            raise ValueError(f"local_hour must be 0..23, got {local_hour}")
        self._evaluations += 1
        self._last_p = p
        active = in_active_hours(self.spec.active_hours, local_hour)
        if self._state == "on":
            if not active:
                return self._switch("ended", p, now)
            self._count = self._count + 1 if p <= self.spec.off else 0
            return self._switch("ended", p, now) if self._count >= self.spec.confirm else None
        self._count = self._count + 1 if active and p >= self.spec.on else 0
        if self._count < self.spec.confirm:
            return None
        if self._last_started is not None and now - self._last_started < self.spec.cooldown_s:
            return None  # confirmed but cooling down: keep counting, start once the cooldown has passed
        self._last_started = now
        return self._switch("started", p, now)

    def _switch(self, kind: Literal["started", "ended"], p: float, now: float) -> Transition:
        self._state = "on" if kind == "started" else "off"
        self._count = 0
        self._events += 1
        return Transition(kind, p, now)
