"""Frame sampling by media timestamps, and the wall clock of sampled frames. Pure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Sampler:
    """Keeps one frame per 1/fps seconds of media time (not of arrival time).

    The first frame is kept; then a frame is kept when its timestamp reaches the next slot. When the stream
    jumps (a gap, a reconnect, a timestamp reset) the slots restart from that frame instead of firing a burst.
    """

    fps: float
    next_t: float | None = None

    def reset(self) -> None:
        self.next_t = None

    def would_want(self, t: float) -> bool:
        """What ``want(t)`` would answer, without taking the slot (to skip decoding a frame nobody keeps)."""
        period = 1.0 / self.fps
        if self.next_t is None or t < self.next_t - 2 * period or t > self.next_t + 2 * period:
            return True
        return t + 1e-6 >= self.next_t

    def want(self, t: float) -> bool:
        period = 1.0 / self.fps
        if self.next_t is None or t < self.next_t - 2 * period or t > self.next_t + 2 * period:
            self.next_t = t + period
            return True
        if t + 1e-6 >= self.next_t:
            self.next_t += period
            return True
        return False


@dataclass
class WallClock:
    """Wall-clock time of frames, strictly increasing across reconnects.

    With an RTCP sender report (``use_rtcp``) a frame's time is the sender's clock at its media time. Otherwise
    the receive clock: a frame cannot be received before it is taken, so the offset between media time and
    arrival is estimated as the smallest (arrival - media) over the last ``window`` sampled frames, which
    discounts frames that arrive late in a burst after (re)connecting. Times that would go backwards (a clock
    step, a reconnect) are pushed just past the last one and counted.
    """

    window: int = 30
    last: float = float("-inf")
    clamped: int = 0
    _rtcp: tuple[float, float] | None = None
    _offsets: deque[float] = field(default_factory=deque)

    def new_session(self) -> None:
        self._rtcp = None
        self._offsets.clear()

    def use_rtcp(self, wall: float, media: float) -> None:
        self._rtcp = (wall, media)

    def time_of(self, media: float, arrival: float) -> float:
        if self._rtcp is not None:
            t = self._rtcp[0] + (media - self._rtcp[1])
        else:
            self._offsets.append(arrival - media)
            if len(self._offsets) > self.window:
                self._offsets.popleft()
            t = media + min(self._offsets)
        if t <= self.last:
            t = self.last + 1e-3
            self.clamped += 1
        self.last = t
        return t
