"""Where each camera runs: pure placement of cameras on shards (no Ray, no I/O; the front applies the moves).

A shard reports its measured encode load: the fraction of wall time its engine spent bringing prefixes up to date
(``busy``: encode seconds per second over the last minute), beside its cameras. A camera costs its shard about
``busy / cameras``. A new camera goes to the shard with the lowest *estimated* load: its measured load plus the
cost of the cameras placed on it since that measurement (at the mean camera cost over the cluster), then the fewest
cameras, then the shard id, so placing 20 cameras at start spreads them before any shard has measured anything, and
in lazy mode (no encodes until a question) the counts decide.

A camera placed less than ``window`` seconds ago (the span of the load measurement) still counts at the estimated
cost: the shard's measured load does not hold it fully yet.

Placement is sticky: a camera stays on its shard until that shard is lost or ``moves`` picks it to even the load
out after a shard joins. ``moves`` moves a camera only across a gap of more than one and a half cameras' load, and at
most ``limit`` per call, so a rebalance after a shard joins happens a few cameras at a time while questions go on.
After moves made by load, no other move by load for ``window`` seconds: both shards' measurements must first see
the change (moves by count, where nothing was measured, need no wait).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ShardLoad:
    """A shard as placement sees it. ``unmeasured``: cameras placed since its last report."""

    id: str
    busy: float = 0.0
    cameras: set[str] = field(default_factory=set)
    unmeasured: set[str] = field(default_factory=set)


class Placement:
    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.shards: dict[str, ShardLoad] = {}
        self.owner: dict[str, str | None] = {}  # every camera the front serves; None: waiting for a shard
        self.placed_at: dict[str, float] = {}
        self.last_move = -math.inf  # the last moves decided by load

    # -- shards -----------------------------------------------------------------------------------------------

    def add_shard(self, shard: str) -> None:
        self.shards.setdefault(shard, ShardLoad(shard))

    def remove_shard(self, shard: str) -> list[str]:
        """A shard is gone: its cameras wait for a new place (returned, by name)."""
        gone = self.shards.pop(shard, None)
        orphans = sorted(gone.cameras) if gone is not None else []
        for camera in orphans:
            self.owner[camera] = None
        return orphans

    def report(self, shard: str, busy: float, cameras: set[str], now: float) -> None:
        """A shard's measured load over the cameras it runs now (measured over the last ``window`` seconds)."""
        s = self.shards.get(shard)
        if s is not None:
            s.busy = max(0.0, busy)
            s.unmeasured = {c for c in s.cameras
                            if c not in cameras or now - self.placed_at.get(c, -math.inf) < self.window}

    # -- cameras ----------------------------------------------------------------------------------------------

    def add_camera(self, camera: str) -> None:
        self.owner.setdefault(camera, None)

    def remove_camera(self, camera: str) -> str | None:
        """Forget ``camera``; the shard it ran on, if any."""
        shard = self.owner.pop(camera, None)
        self.placed_at.pop(camera, None)
        if shard is not None and shard in self.shards:
            self.shards[shard].cameras.discard(camera)
            self.shards[shard].unmeasured.discard(camera)
        return shard

    def assign(self, camera: str, shard: str, now: float) -> None:
        self.placed_at[camera] = now
        old = self.owner.get(camera)
        if old is not None and old in self.shards:
            self.shards[old].cameras.discard(camera)
            self.shards[old].unmeasured.discard(camera)
        self.owner[camera] = shard
        self.shards[shard].cameras.add(camera)
        self.shards[shard].unmeasured.add(camera)

    def unassign(self, camera: str) -> None:
        """The camera left its shard (a failed attach or a move under way): it waits for a place."""
        if camera in self.owner:
            shard = self.owner[camera]
            if shard is not None and shard in self.shards:
                self.shards[shard].cameras.discard(camera)
                self.shards[shard].unmeasured.discard(camera)
            self.owner[camera] = None

    def waiting(self) -> list[str]:
        return sorted(c for c, s in self.owner.items() if s is None)

    # -- decisions --------------------------------------------------------------------------------------------

    def camera_cost(self) -> float:
        """The mean measured encode load of one camera over the cluster (0 before any measurement)."""
        measured = [(s.busy, len(s.cameras - s.unmeasured)) for s in self.shards.values()]
        cameras = sum(n for _, n in measured)
        return sum(b for b, n in measured if n) / cameras if cameras else 0.0

    def estimate(self, shard: str, cost: float | None = None) -> float:
        s = self.shards[shard]
        return s.busy + len(s.unmeasured) * (self.camera_cost() if cost is None else cost)

    def choose(self) -> str | None:
        """The shard a new (or orphaned) camera goes to; None when there is none."""
        if not self.shards:
            return None
        cost = self.camera_cost()
        return min(self.shards, key=lambda s: (round(self.estimate(s, cost), 6), len(self.shards[s].cameras), s))

    def moves(self, limit: int, now: float) -> list[tuple[str, str, str]]:
        """Up to ``limit`` (camera, from, to) moves that even the shards out, most loaded to least loaded. A move
        is made only while the gap between the two is over one and a half cameras' load (two cameras by count
        where no load was measured), so a balanced cluster never churns."""
        if limit <= 0 or len(self.shards) < 2:
            return []
        cost = self.camera_cost()
        if cost > 0 and now - self.last_move < self.window:
            return []
        loads = {s: self.estimate(s, cost) for s in self.shards}
        counts = {s: len(v.cameras) for s, v in self.shards.items()}
        members = {s: sorted(v.cameras) for s, v in self.shards.items()}
        planned: list[tuple[str, str, str]] = []
        while len(planned) < limit:
            def key(s: str) -> tuple[float, int]:
                return (round(loads[s], 6), counts[s]) if cost > 0 else (0.0, counts[s])

            src, dst = max(self.shards, key=key), min(self.shards, key=key)
            per_camera = loads[src] / counts[src] if counts[src] and cost > 0 else 0.0
            by_load = cost > 0 and loads[src] - loads[dst] > 1.5 * per_camera
            by_count = cost == 0 and counts[src] - counts[dst] >= 2
            if src == dst or not members[src] or not (by_load or by_count):
                break
            camera = members[src].pop()
            planned.append((camera, src, dst))
            loads[src] -= per_camera
            loads[dst] += per_camera
            counts[src] -= 1
            counts[dst] += 1
        if planned and cost > 0:
            self.last_move = now
        return planned
