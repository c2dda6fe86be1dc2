"""How much of the engine the watches take, measured, and whether one more fits (pure: times are passed in).

Each engine step that evaluates watches reports its evaluation time (``WatchResult.eval_ms``, shared by the step's
watches) and how many it evaluated. Over the last ``window_s`` seconds that gives the engine time one evaluation
costs here (this GPU, these cameras' prefixes, the batch sizes the steps had). Every watch is evaluated once per
new frame pair of its camera (``evaluations_per_s``: capture.fps / 2), so N watches take
N x evaluations_per_s x seconds_per_evaluation of the engine's time; a new watch is admitted while that stays
within ``limit``. The cap thus follows what watches cost, not a fixed count (256 watches with descriptions took a
CPU daemon's whole engine and a question waited 24 s), and it holds from the first measured step on, however fast
watches are added (a share measured over wall time lags behind a burst of additions). Until a step has been
measured at most ``UNMEASURED`` are admitted (configured watches always load); a cost measured once is kept while
no watch is evaluated (cameras offline). ``share`` is what the watches actually took, for status.
"""

from __future__ import annotations

from collections import deque

UNMEASURED = 16  # watches admitted before any evaluation was measured


class WatchLoad:
    def __init__(self, limit: float, evaluations_per_s: float, window_s: float = 60.0) -> None:
        self.limit = limit
        self.evaluations_per_s = evaluations_per_s
        self.window_s = window_s
        self._steps: deque[tuple[float, float, int]] = deque()  # (monotonic time, seconds, evaluations)
        self._started: float | None = None
        self._last_cost: float | None = None  # kept when the window empties (cameras offline: no evaluations)

    def observe(self, now: float, eval_ms: float, evaluations: int) -> None:
        """One step evaluated ``evaluations`` watches in ``eval_ms`` (ending at ``now``)."""
        if evaluations <= 0:
            return
        if self._started is None:
            self._started = now - eval_ms / 1e3
        self._steps.append((now, eval_ms / 1e3, evaluations))
        self._trim(now)

    def seconds_per_evaluation(self, now: float) -> float | None:
        """The mean over the window; the last such mean when no step fell in it; None before any step."""
        self._trim(now)
        evaluations = sum(n for _, _, n in self._steps)
        if evaluations:
            self._last_cost = sum(s for _, s, _ in self._steps) / evaluations
        return self._last_cost

    def projected(self, watches: int, now: float) -> float | None:
        """The share of the engine's time ``watches`` watches take at the measured cost (None: not measured)."""
        cost = self.seconds_per_evaluation(now)
        return None if cost is None else watches * self.evaluations_per_s * cost

    def admits(self, watches: int, now: float) -> bool:
        """Whether ``watches`` watches (the new one included) fit within ``limit``; before the first measured step,
        at most ``UNMEASURED`` (a burst of additions waits for the engine to show what one costs)."""
        projected = self.projected(watches, now)
        if projected is None:
            return watches <= UNMEASURED
        return projected <= self.limit + 1e-9  # at the limit is within it

    def share(self, now: float) -> float | None:
        """The engine time the watches took over the window (at least 1 s of it), as a fraction."""
        self._trim(now)
        if self._started is None or now - self._started < 1.0:
            return None
        return sum(s for _, s, _ in self._steps) / min(self.window_s, now - self._started)

    def _trim(self, now: float) -> None:
        while self._steps and now - self._steps[0][0] > self.window_s:
            self._steps.popleft()
