"""Delivery of watch events to the outside (webhooks, MQTT): one bounded queue and one task per sink, so a slow or
dead destination delays nothing else, least of all the engine.

The engine's event path (on the event loop, after its hand-off from the engine thread) calls ``offer``, which
never blocks and never waits for a destination. What travels is a typed item, not a dict: a ``WatchEvent`` is
turned into its wire form (``WatchEvent.to_message``) by the sink at each attempt, so ``latency_s`` is the one
at send time; ``WatchState``, ``WatchAdded`` and ``WatchRemoved`` tell sinks that mirror state (MQTT) what to keep.

Queue policy: at most ``max_queue`` items. When full, a new event pushes out the oldest queued event (a fresh
alert matters more than a stale one; counted in ``dropped``); any other item is refused (``offer`` returns False,
counted). An item with a coalescing key (a watch's retained state or discovery config) replaces the queued item
with the same key instead of taking a new place: only its latest value matters. An event older than
``max_event_age_s`` (from the capture of the frame that decided it) is not sent any more, nor retried: it
counts as ``expired``, so a destination that recovers gets today's alerts, not a backlog of stale ones.

Delivery is one item at a time, in order. A failed attempt is retried after a capped exponential backoff with
jitter (0.5 s doubling to 30 s by default); after ``max_attempts`` the item counts as ``failed``. A destination
that is down as a whole (an MQTT broker) raises an ``offline`` failure, which does not use up the item's
attempts: the item waits for the destination, and the queue bound decides what is lost. Failures are logged as
``sink.delivery_failed`` with the sink, the attempt and the error class, never a URL, a body or a secret; the same
failure repeated is logged at most once a minute, with the number held back.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeAlias

from livewatch.errors import DeliveryError
from livewatch.log import get_logger
from livewatch.watches.events import WatchEvent, WatchSpec

log = get_logger("livewatch.sinks")


@dataclass(frozen=True)
class WatchState:
    """Whether a watch's condition holds now (MQTT keeps it retained)."""

    camera: str
    watch: str
    on: bool


@dataclass(frozen=True)
class WatchAdded:
    """A watch exists (configured or added by the API): MQTT publishes its discovery config."""

    spec: WatchSpec


@dataclass(frozen=True)
class WatchRemoved:
    """A watch was deleted: MQTT clears its discovery config and its retained state."""

    camera: str
    watch: str


@dataclass(frozen=True)
class DigestOut:
    """A digest (``livewatch.digests``) as its wire JSON: the webhook posts it, MQTT publishes it."""

    message: dict[str, Any]


Outgoing: TypeAlias = WatchEvent | WatchState | WatchAdded | WatchRemoved | DigestOut


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5  # delay after the first failure
    cap_s: float = 30.0  # the delay doubles up to this
    max_attempts: int = 8  # attempts per item (offline ones excepted) before it counts as failed
    jitter: float = 0.2  # each delay is drawn from [d * (1 - jitter), d], so sinks restarted together spread out

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s and self.max_attempts >= 1 and 0.0 <= self.jitter <= 1.0):
            raise ValueError("retry policy needs 0 < base_s <= cap_s, max_attempts >= 1, 0 <= jitter <= 1")

    def delay(self, failures: int, rand: float) -> float:
        """The wait after the ``failures``-th failure in a row; ``rand`` in [0, 1) picks the jitter."""
        full = min(self.cap_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 60))
        return full * (1.0 - self.jitter * rand)


@dataclass(frozen=True)
class SinkOptions:
    max_queue: int = 256  # items waiting for delivery; beyond it offer() refuses (see the queue policy above)
    retry: RetryPolicy = RetryPolicy()
    drain_timeout_s: float = 2.0  # stop() delivers what it can within this, then cancels
    max_event_age_s: float = 600.0  # events older than this are dropped as expired, not sent or retried
    log_every_s: float = 60.0  # the same failure is logged at most once per this

    def __post_init__(self) -> None:
        if self.max_queue < 1 or self.drain_timeout_s < 0 or self.log_every_s < 0:
            raise ValueError("sink options need max_queue >= 1, drain_timeout_s >= 0, log_every_s >= 0")


class RepeatFilter:
    """Keeps repeated identical failures from flooding the log: the first of a kind goes through, then at most one
    per ``interval_s``, carrying the number held back since the last one."""

    MAX_KINDS = 64

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._seen: dict[Hashable, tuple[float, int]] = {}  # kind -> (last logged at, held back since)

    def admit(self, kind: Hashable, now: float) -> int | None:
        """None: hold this one back. Otherwise log it now, with the returned count of those held back."""
        last = self._seen.get(kind)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[kind] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._seen) >= self.MAX_KINDS:
            del self._seen[min(self._seen, key=lambda k: self._seen[k][0])]
        self._seen[kind] = (now, 0)
        return 0 if last is None else last[1]


@dataclass
class _Slot:
    item: Outgoing
    key: Hashable | None


class Sink(ABC):
    """A destination for watch items, with its own bounded queue and delivery task.

    Subclasses implement ``deliver`` (one attempt; raise ``DeliveryError``) and may override ``accepts`` (items
    this sink ignores; ``offer`` returns True for them: nothing is lost), ``coalesce_key``, ``idle`` (called when
    the queue is empty; returns how long until it wants to run again) and ``close`` (after the last delivery).
    ``offer`` and everything else run on the event loop's thread. ``on_sent(latency_s)`` is called after each
    delivered event with the time from the deciding frame's capture to the destination's acknowledgement.
    """

    def __init__(self, name: str, options: SinkOptions | None = None,
                 on_sent: Callable[[float], None] | None = None) -> None:
        self.name = name
        self.options = options or SinkOptions()
        self.on_sent = on_sent
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.expired = 0
        self.retries = 0
        self.last_error: str | None = None
        self._queue: deque[_Slot] = deque()
        self._slots: dict[Hashable, _Slot] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight = False  # an item taken from the queue is being delivered (or waits for its retry)
        self._failing = False  # the last delivery failed: the next success is logged as a recovery
        self._repeats = RepeatFilter(self.options.log_every_s)
        self._rng = random.Random()

    # -- what subclasses provide ------------------------------------------------------------------------------

    @abstractmethod
    async def deliver(self, item: Outgoing) -> None:
        """One attempt to deliver ``item``; raises ``DeliveryError`` when it failed."""

    def accepts(self, item: Outgoing) -> bool:
        return True

    def coalesce_key(self, item: Outgoing) -> Hashable | None:
        return None

    async def idle(self) -> float | None:
        return None

    async def close(self) -> None:
        return None

    def _wake(self) -> None:
        """Run the delivery task's next round now (``idle`` asked to be called later, but something changed)."""
        self._wakeup.set()

    # -- the engine's side ------------------------------------------------------------------------------------

    def offer(self, item: Outgoing) -> bool:
        """Queue ``item`` for delivery without waiting. False: refused (queue full or sink stopped), counted."""
        if not self.accepts(item):
            return True
        if self._closing:
            self.dropped += 1
            return False
        key = self.coalesce_key(item)
        if key is not None and (slot := self._slots.get(key)) is not None:
            slot.item = item
            return True
        if len(self._queue) >= self.options.max_queue:
            oldest = next((s for s in self._queue if isinstance(s.item, WatchEvent)), None)
            self.dropped += 1
            self._report("sink.queue_full", "QueueFull", "queue full", dropped=self.dropped)
            if not isinstance(item, WatchEvent) or oldest is None:
                return False
            self._queue.remove(oldest)  # the newest alert in, the oldest queued one out
        slot = _Slot(item, key)
        self._queue.append(slot)
        if key is not None:
            self._slots[key] = slot
        self._wakeup.set()
        return True

    # The same, in the terms of the watch manager's EventSink protocol (manager.py).

    def publish_event(self, event: WatchEvent) -> None:
        self.offer(event)

    def publish_digest(self, digest: dict[str, Any]) -> None:
        self.offer(DigestOut(digest))

    def watch_changed(self, spec: WatchSpec, present: bool) -> None:
        self.offer(WatchAdded(spec) if present else WatchRemoved(spec.camera, spec.name))

    def watch_state(self, spec: WatchSpec, on: bool) -> None:
        self.offer(WatchState(spec.camera, spec.name, on))

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        """Start the delivery task (on the running loop). Items offered before are delivered first."""
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sink-{self.name}")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new items, deliver the queued ones for up to ``timeout_s`` (``drain_timeout_s``), cancel the
        rest (they stay counted in ``queued``), then close the destination."""
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            deadline = self.options.drain_timeout_s if timeout_s is None else timeout_s
            done, _ = await asyncio.wait({task}, timeout=deadline)
            if not done:
                task.cancel()
                await asyncio.wait({task})
        await self.close()
        log.info("sink.stopped", sink=self.name, sent=self.sent, failed=self.failed, dropped=self.dropped,
                 undelivered=self.queued)

    @property
    def queued(self) -> int:
        """Items taken and neither delivered nor failed yet (the one being delivered included)."""
        return len(self._queue) + self._in_flight

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "queued": self.queued, "sent": self.sent, "failed": self.failed,
                "dropped": self.dropped, "expired": self.expired, "retries": self.retries,
                "last_error": self.last_error}

    def _expired(self, item: Outgoing) -> bool:
        if isinstance(item, WatchEvent) and time.time() - item.frame_time > self.options.max_event_age_s:
            self.expired += 1
            return True
        return False

    # -- the delivery task ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while (item := await self._take()) is not None:
                self._in_flight = True
                await self._send(item)
                self._in_flight = False
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sink.crashed", sink=self.name)

    async def _take(self) -> Outgoing | None:
        while not self._queue:
            if self._closing:
                return None
            self._wakeup.clear()  # before idle(): an offer during it still wakes us
            wait_s = await self.idle()
            if self._queue or self._closing:
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait_s)
            except TimeoutError:
                pass
        slot = self._queue.popleft()
        if slot.key is not None:
            del self._slots[slot.key]
        return slot.item

    async def _send(self, item: Outgoing) -> None:
        policy = self.options.retry
        attempts = 0  # the ones that count against max_attempts
        failures = 0  # in a row, offline ones included: they set the backoff
        while True:
            if self._expired(item):
                return
            try:
                await self.deliver(item)
            except asyncio.CancelledError:
                raise
            except DeliveryError as exc:
                failures += 1
                attempts += 0 if exc.offline else 1
                final = not exc.retryable or attempts >= policy.max_attempts
                self.last_error = exc.reason
                self._failing = True
                self._report("sink.delivery_failed", exc.error, exc.reason, attempt=failures, final=final)
                if final:
                    self.failed += 1
                    return
                self.retries += 1
                delay = policy.delay(failures, self._rng.random())
                if exc.retry_after_s is not None:
                    delay = min(max(delay, exc.retry_after_s), policy.cap_s)
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug in deliver(): retrying would repeat it
                self.failed += 1
                self.last_error = type(exc).__name__
                if self._repeats.admit(("bug", type(exc).__name__), time.monotonic()) is not None:
                    log.exception("sink.delivery_failed", sink=self.name, attempt=failures + 1,
                                  error=type(exc).__name__, final=True)
                return
            else:
                self.sent += 1
                if self._failing:
                    self._failing = False
                    self._report("sink.recovered", "", "", level="info", retries=self.retries)
                if isinstance(item, WatchEvent) and self.on_sent is not None:
                    try:
                        self.on_sent(max(time.time() - item.frame_time, 0.0))
                    except Exception:  # a metrics hook must not stop deliveries
                        log.exception("sink.hook_failed", sink=self.name)
                return

    def _report(self, event: str, error: str, reason: str, level: str = "warning", **fields: Any) -> None:
        """Log ``event`` unless the same one was logged less than ``log_every_s`` ago."""
        held = self._repeats.admit((event, error, reason), time.monotonic())
        if held is None:
            return
        if error:
            fields.update(error=error, reason=reason)
        getattr(log, level)(event, sink=self.name, suppressed=held, **fields)

