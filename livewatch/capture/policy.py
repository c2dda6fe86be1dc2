"""Reconnect policy and the camera state machine. Pure: time and randomness are injected.

States: connecting -> streaming -> (fault) -> backoff -> connecting ...; stopped on request or when a file ends;
failed when the input can never work: a permanent error (file gone, 404, 401, unsupported codec) repeated
``max_permanent`` times in a row. Transient faults (refused, timeout, stream ended, corrupt data) retry forever
with capped exponential backoff and jitter: live cameras reboot and networks come back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class CameraState(str, Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter], then capped
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        base = min(self.initial_s * self.multiplier**self.attempt, self.max_s)
        self.attempt += 1
        return min(base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)), self.max_s)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Supervisor:
    """Tracks one camera's state; the reader thread reports events and obeys the returned delays."""

    backoff: Backoff = field(default_factory=Backoff)
    max_permanent: int = 3
    stable_after_s: float = 10.0  # streaming this long resets the backoff
    state: CameraState = CameraState.CONNECTING
    last_error: str | None = None
    reconnects: int = 0
    permanent_failures: int = 0
    streaming_since: float | None = None
    retry_at: float | None = None

    def connecting(self) -> None:
        if self.state in (CameraState.STOPPED, CameraState.FAILED):
            return
        self.state = CameraState.CONNECTING
        self.retry_at = None

    def frame(self, now: float) -> None:
        if self.state is not CameraState.STREAMING:
            self.state = CameraState.STREAMING
            self.streaming_since = now
            self.permanent_failures = 0
        elif self.streaming_since is not None and now - self.streaming_since >= self.stable_after_s:
            self.backoff.reset()

    def fault(self, now: float, error: str, permanent: bool = False) -> float | None:
        """A failure; returns the delay before reconnecting, or None when the camera is now failed/stopped."""
        if self.state in (CameraState.STOPPED, CameraState.FAILED):
            return None
        self.last_error = error
        self.streaming_since = None
        if permanent:
            self.permanent_failures += 1
            if self.permanent_failures >= self.max_permanent:
                self.state = CameraState.FAILED
                self.retry_at = None
                return None
        else:
            self.permanent_failures = 0
        delay = self.backoff.next_delay()
        self.state = CameraState.BACKOFF
        self.reconnects += 1
        self.retry_at = now + delay
        return delay

    def ended(self) -> None:
        """A file reached its end and does not loop."""
        if self.state is not CameraState.FAILED:
            self.state = CameraState.STOPPED

    def stop(self) -> None:
        if self.state is not CameraState.FAILED:
            self.state = CameraState.STOPPED
