"""Digests in the daemon: each configured digest runs on its schedule, asks each of its cameras its question over
the range since its last run (the range questions' path: memory and history, evidence ranked), keeps the result
in the state directory and pushes it to the WebSocket subscribers and the sinks.

A run that the daemon missed (down at 18:00) runs once at start-up, over the range since the last run it made; the
first run of a new digest covers the range since the schedule's time before it (a scheduled first run: one period). ``run(name)`` runs one now (``digest.run``). The state file
``digests.json`` ({"last_run": {name: time}, "recent": [digest, ...]}) is written atomically; one that cannot be
read is moved aside (the digests then start as new).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

from livewatch.atomicfile import move_aside, read_json_object, write_private
from livewatch.digests.schedule import Schedule, parse_schedule
from livewatch.errors import ErrorCode, RequestError, StorageError, public_failure
from livewatch.log import get_logger

log = get_logger("livewatch.digests")

KEEP = 100  # digests kept in the state file, newest last
# (camera, question, since, until, max_tokens) -> the answer's text and evidence
AskRange = Callable[[str, str, float, float, int], Awaitable[tuple[str, list[dict[str, Any]]]]]


@dataclass(frozen=True)
class DigestPlan:
    """A configured digest (``[digests.NAME]``)."""

    cameras: tuple[str, ...]
    schedule: str
    question: str
    max_tokens: int


@dataclass(frozen=True)
class Digest:
    name: str
    section: DigestPlan
    schedule: Schedule


class DigestState:
    """The state file: each digest's last run and the recent digests."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "digests.json"
        self.last_run: dict[str, float] = {}
        self.recent: list[dict[str, Any]] = []

    def load(self) -> None:
        try:
            data = read_json_object(self.path, "digests")
            if data is None:
                return
            last, recent = data.get("last_run", {}), data.get("recent", [])
            if not isinstance(last, dict) or not all(isinstance(v, (int, float)) for v in last.values()) \
                    or not isinstance(recent, list) or not all(isinstance(d, dict) for d in recent):
                raise StorageError(f"{self.path}: not a digests file")
        except StorageError as exc:
            aside = move_aside(self.path)
            log.error("digests.unreadable", error=str(exc), moved_to=str(aside) if aside else None)
            return
        self.last_run = {str(k): float(v) for k, v in last.items()}
        self.recent = recent[-KEEP:]

    def add(self, digest: dict[str, Any]) -> None:
        self.last_run[digest["digest"]] = digest["until"]
        self.recent = [*self.recent, digest][-KEEP:]
        try:
            write_private(self.path, json.dumps({"last_run": self.last_run, "recent": self.recent}))
        except OSError as exc:  # the digest still goes out; only its record (and the missed-run check) suffers
            log.error("digests.save_failed", error=exc.strerror or type(exc).__name__)


class DigestService:
    def __init__(self, sections: dict[str, DigestPlan], state_dir: Path, tz: tzinfo | None, ask: AskRange,
                 publish: Callable[[dict[str, Any]], None], clock: Callable[[], float] = time.time) -> None:
        self.digests = {name: Digest(name, s, parse_schedule(s.schedule)) for name, s in sections.items()}
        self.state = DigestState(state_dir)
        self.tz = tz
        self._ask = ask
        self._publish = publish
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}

    def start(self) -> None:
        """Read the state, run the missed digests once, then follow the schedules."""
        if not self.digests:
            return
        self.state.load()
        now = self._clock()
        for d in self.digests.values():
            last = self.state.last_run.get(d.name)
            due = d.schedule.last_at_or_before(now, self.tz)
            if last is not None and due is not None and due > last:
                log.info("digest.missed", digest=d.name, due=due, last_run=last)
                self._start_run(d, "missed", now)
        self._task = asyncio.create_task(self._follow(), name="digests")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def list(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "digests": [{"name": d.name, "cameras": d.section.cameras, "schedule": d.schedule.text,
                         "question": d.section.question, "last_run": self.state.last_run.get(d.name),
                         "next_run": d.schedule.next_after(now, self.tz), "running": d.name in self._running}
                        for d in self.digests.values()],
            "recent": self.state.recent[-20:],
        }

    async def run(self, name: str) -> dict[str, Any]:
        """Run digest ``name`` now (or wait for the run in progress) and return it."""
        d = self.digests.get(name)
        if d is None:
            raise RequestError(ErrorCode.UNKNOWN_DIGEST, f"no digest named {name!r}")
        task = self._running.get(name) or self._start_run(d, "request", self._clock())
        return await asyncio.shield(task)

    # -- internals ------------------------------------------------------------------------------------------

    def _start_run(self, d: Digest, reason: str, now: float) -> asyncio.Task[dict[str, Any]]:
        task = asyncio.create_task(self._run(d, reason, now), name=f"digest-{d.name}")
        self._running[d.name] = task
        task.add_done_callback(lambda _: self._running.pop(d.name, None))
        return task

    async def _follow(self) -> None:
        while True:
            now = self._clock()
            due = {d.name: d.schedule.next_after(now, self.tz) for d in self.digests.values()}
            at = min(due.values())
            await asyncio.sleep(max(at - self._clock(), 0.0) + 0.05)
            for name, when in due.items():
                if when <= self._clock() and name not in self._running:
                    self._start_run(self.digests[name], "schedule", when)

    async def _run(self, d: Digest, reason: str, until: float) -> dict[str, Any]:
        since = self.state.last_run.get(d.name)
        if since is None or since >= until:  # a new digest: since the schedule's time before this run
            before = d.schedule.last_at_or_before(until - 1.0, self.tz)
            since = before if before is not None and before < until else until - 86400.0
        cameras: list[dict[str, Any]] = []
        for camera in d.section.cameras:
            try:
                text, evidence = await self._ask(camera, d.section.question, since, until, d.section.max_tokens)
                cameras.append({"camera": camera, "text": text, "evidence": evidence[:8]})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one camera's failure (no frames in the range, unknown) is its entry's
                code, message = public_failure(exc, shutting_down=False, event="digest.camera_failed",
                                               digest=d.name, camera=camera)
                cameras.append({"camera": camera, "error": {"code": code.value, "message": message}})
        digest = {"type": "digest", "id": uuid.uuid4().hex, "digest": d.name, "reason": reason,
                  "time": self._clock(), "since": since, "until": until, "question": d.section.question,
                  "cameras": cameras}
        self.state.add(digest)
        log.info("digest.sent", digest=d.name, reason=reason, since=since, until=until,
                 failed=sum(1 for c in cameras if "error" in c))
        self._publish(digest)
        return digest
