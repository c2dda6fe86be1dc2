"""The daemon's watches: their specs, their triggers, and their events to every sink. The event loop's thread only.

The engine evaluates every watch of a camera on each new prefix version (engine/model/watcheval.py) and hands the results
over (``on_results``, scheduled onto the loop by the daemon). Each result goes through the watch's ``Trigger``
(policy.py, pure); a transition becomes a ``WatchEvent`` that goes out at once to the WebSocket subscribers and to
every configured sink (webhook, MQTT: each with its own bounded queue, so none waits for another). A watch with
``describe`` then asks the engine an ordinary question about the camera and sends the answer as an update of the
same event (kind ``described``): the notification itself never waits for generation.

The evidence frame of an event (the newest pair of the context that decided it) is read from the frame store when
the event is made and kept for the last ``EVIDENCE_KEPT`` events, so its URL keeps working after the pair leaves
the camera's memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any, Protocol

from livewatch.engine.results import WatchResult
from livewatch.errors import ErrorCode, RequestError
from livewatch.log import get_logger
from livewatch.watches.events import WatchEvent, WatchSpec
from livewatch.watches.load import WatchLoad
from livewatch.watches.policy import Trigger
from livewatch.watches.store import WatchStore

log = get_logger("livewatch.watches")
EVIDENCE_KEPT = 256
MAX_DESCRIBES = 2  # describe follow-ups at once: a flapping watch cannot fill the engine's question queue
DESCRIBE_QUESTION = "Describe in one or two sentences what is happening now, for a notification."


class EventSink(Protocol):
    """A delivery channel (webhook, MQTT) as the manager uses it."""

    name: str

    def publish_event(self, event: WatchEvent) -> None: ...

    def publish_digest(self, digest: dict[str, Any]) -> None: ...

    def watch_changed(self, spec: WatchSpec, present: bool) -> None: ...

    def watch_state(self, spec: WatchSpec, on: bool) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    async def stop(self, timeout_s: float | None = None) -> None: ...


class _Watch:
    def __init__(self, spec: WatchSpec) -> None:
        self.spec = spec
        self.trigger = Trigger(spec)
        self.eval_ms = 0.0
        self.last_event: dict[str, Any] | None = None
        self.last_latency_s: float | None = None

    def describe(self) -> dict[str, Any]:
        p = self.trigger.last_probability
        return {**self.spec.to_json(), "state": self.trigger.state, "evaluations": self.trigger.evaluations,
                "events": self.trigger.events, "last_probability": round(p, 4) if p is not None else None,
                "eval_ms": round(self.eval_ms, 2), "last_event": self.last_event,
                "last_event_latency_s": self.last_latency_s}


class QuestionBudget(Protocol):
    """Questions in flight in the daemon and their limit (``server.handler.InflightCounter``)."""

    limit: int
    count: int


class WatchManager:
    def __init__(
        self,
        store: WatchStore,
        configured: dict[str, WatchSpec],
        engine_set: Callable[[str, dict[str, str]], None],
        camera_names: Callable[[], Sequence[str]],
        read_frame: Callable[[str, int], bytes | None],
        describe: Callable[[str, str, int], Awaitable[str]],
        sinks: Sequence[EventSink] = (),
        tz: tzinfo | None = None,
        max_watches: int = 256,
        describe_tokens: int = 48,
        on_latency: Callable[[str, float], None] | None = None,
        question_budget: QuestionBudget | None = None,
        engine_share: float = 1.0,
        evaluations_per_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.configured = dict(configured)
        self._engine_set = engine_set
        self._camera_names = camera_names
        self._read_frame = read_frame
        self._describe = describe
        self.sinks = list(sinks)
        self.tz = tz
        self.max_watches = max_watches
        self.describe_tokens = describe_tokens
        self._on_latency = on_latency
        self._budget = question_budget  # descriptions are questions: they take a slot of the daemon's budget
        self.load = WatchLoad(engine_share, evaluations_per_s)
        self._clock = clock
        self.watches: dict[str, _Watch] = {}
        self._subscribers: dict[str, tuple[frozenset[str] | None, Callable[[str], None]]] = {}
        self._evidence: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # watch.add / watch.remove one at a time: the store and the set stay in step
        self._stopped = False
        self.events_sent = 0
        self.describes_skipped = 0  # describe follow-ups not started: MAX_DESCRIBES or the question budget was full
        self.results_dropped = 0  # evaluations not applied: not finite, or a bug (logged)

    # -- the set of watches -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Every configured and saved watch (at most max_watches), registered with the engine and the sinks."""
        specs = list(self.store.effective(self.configured).values())
        if len(specs) > self.max_watches:
            log.error("watches.too_many", watches=len(specs), max_watches=self.max_watches,
                      ignored=[s.name for s in specs[self.max_watches:]][:20])
        for spec in specs[: self.max_watches]:
            self._install(spec)

    def _end_if_on(self, watch: _Watch) -> None:
        """A watch that goes away (removed, replaced) while its condition holds ends: no subscriber, webhook or
        Home Assistant sensor stays "on" for a watch that no longer exists."""
        if watch.trigger.state != "on" or watch.last_event is None:
            return
        p = watch.trigger.last_probability
        last = watch.last_event
        event = WatchEvent(watch.spec.name, watch.spec.camera, "ended", p if p is not None and math.isfinite(p) else 0.0,
                           last["frame_time"], last["frame_id"])
        self._publish(watch, event, observed=False)  # not decided by a frame: no latency figure
        watch.trigger.reset()
        for sink in self.sinks:
            sink.watch_state(watch.spec, on=False)

    def _install(self, spec: WatchSpec) -> None:
        old = self.watches.get(spec.name)
        if old is not None and old.spec == spec:
            return  # the same watch again (a script re-adding it): its state and cooldown stay
        if old is not None:
            self._end_if_on(old)
        self.watches[spec.name] = _Watch(spec)
        if old is not None and old.spec.camera != spec.camera:
            self._sync_engine(old.spec.camera)
            for sink in self.sinks:
                sink.watch_changed(old.spec, present=False)  # no orphan sensor under the old camera
        self._sync_engine(spec.camera)
        for sink in self.sinks:
            sink.watch_changed(spec, present=True)

    def _sync_engine(self, camera: str) -> None:
        self._engine_set(camera, {w.spec.name: w.spec.condition for w in self.watches.values()
                                  if w.spec.camera == camera})

    def warn_missing(self) -> None:
        """Log the watches whose camera does not exist (they wait for it)."""
        cameras = set(self._camera_names())
        for spec in (w.spec for w in self.watches.values()):
            if spec.camera not in cameras:
                log.warning("watch.camera_missing", watch=spec.name, camera=spec.camera)

    async def add(self, spec: WatchSpec) -> dict[str, Any]:
        async with self._lock:
            if spec.camera not in self._camera_names():
                raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {spec.camera!r}")
            if spec.name not in self.watches and len(self.watches) >= self.max_watches:
                raise RequestError(ErrorCode.BUSY, f"at most {self.max_watches} watches (events.max_watches)")
            if spec.name not in self.watches and not self.load.admits(len(self.watches) + 1, self._clock()):
                cost = self.load.seconds_per_evaluation(self._clock())
                if cost is None:
                    raise RequestError(ErrorCode.BUSY, "the cost of a watch is not measured yet (a camera's first "
                                       "evaluations): retry in a few seconds")
                share = self.load.projected(len(self.watches) + 1, self._clock()) or 0.0
                raise RequestError(ErrorCode.BUSY, f"the engine has no room for another watch: "
                                   f"{len(self.watches) + 1} watches would take {share:.0%} of its time at the "
                                   f"measured {cost * 1e3:.1f} ms per evaluation (events.watch_engine_share is "
                                   f"{self.load.limit:.0%})")
            await asyncio.to_thread(self.store.add, spec.name, spec)
            self._install(spec)
            log.info("watch.added", watch=spec.name, camera=spec.camera)
            return self.watches[spec.name].describe()

    async def remove(self, name: str) -> None:
        async with self._lock:
            watch = self.watches.get(name)
            if watch is None:
                raise RequestError(ErrorCode.UNKNOWN_WATCH, f"no watch named {name!r}")
            await asyncio.to_thread(self.store.remove, name, name in self.configured)
            del self.watches[name]
            self._sync_engine(watch.spec.camera)
            self._end_if_on(watch)
            for sink in self.sinks:
                sink.watch_changed(watch.spec, present=False)
            log.info("watch.removed", watch=name)

    def camera_changed(self, camera: str) -> None:
        """A camera was added or removed: its watches stay defined, evaluated while the camera exists. A removed
        camera's watches end (if on) and start afresh with the camera; its evidence frames are forgotten (a camera
        added again under that name numbers its frames from 0)."""
        if camera in self._camera_names():
            self._sync_engine(camera)
            return
        self._engine_set(camera, {})
        for watch in [w for w in self.watches.values() if w.spec.camera == camera]:
            self._end_if_on(watch)
            watch.trigger.reset()
        for key in [k for k in self._evidence if k[0] == camera]:
            del self._evidence[key]

    def list(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.watches.values()]

    # -- subscribers --------------------------------------------------------------------------------------------

    def subscribe(self, client: str, watches: tuple[str, ...] | None, send: Callable[[str], None]) -> None:
        self._subscribers[client] = (frozenset(watches) if watches else None, send)

    def unsubscribe(self, client: str) -> None:
        self._subscribers.pop(client, None)

    # -- evaluations to events ----------------------------------------------------------------------------------

    def on_results(self, results: Sequence[WatchResult]) -> None:
        """One engine step's evaluations (they share the step's ``eval_ms``)."""
        if self._stopped:
            return
        if results and math.isfinite(results[0].eval_ms) and results[0].eval_ms >= 0:
            self.load.observe(self._clock(), results[0].eval_ms, len(results))
        cameras = set(self._camera_names())
        for result in results:
            try:
                self._apply(result, cameras)
            except Exception:  # one bad result must not lose the others
                self.results_dropped += 1
                log.exception("watch.result_failed", watch=result.watch, camera=result.camera)

    def _apply(self, result: WatchResult, cameras: set[str]) -> None:
        if not math.isfinite(result.probability):
            self.results_dropped += 1
            return
        watch = self.watches.get(result.watch)
        if (watch is None or watch.spec.camera != result.camera or result.camera not in cameras
                or (result.condition and result.condition != watch.spec.condition)):
            return  # removed, moved or given another condition while the engine evaluated it
        watch.eval_ms = result.eval_ms
        now = time.time()
        hour = (datetime.fromtimestamp(now, self.tz) if self.tz else datetime.fromtimestamp(now)).hour
        transition = watch.trigger.update(now, result.probability, hour)
        if transition is None:
            return
        event = WatchEvent(watch.spec.name, result.camera, transition.kind, result.probability,
                           result.frame_time, result.frame_id)
        self._keep_evidence(result.camera, result.frame_id)
        self._publish(watch, event)
        for sink in self.sinks:
            sink.watch_state(watch.spec, on=transition.kind == "started")
        if transition.kind == "started" and watch.spec.describe:
            budget = self._budget
            if len(self._tasks) < MAX_DESCRIBES and (budget is None or budget.count < budget.limit):
                self._spawn(self._follow_with_description(watch, event))
            else:
                self.describes_skipped += 1

    def _publish(self, watch: _Watch, event: WatchEvent, observed: bool = True) -> None:
        message = event.to_message()
        watch.last_event = {k: message[k] for k in ("id", "kind", "probability", "frame_time", "frame_id",
                                                    "decided_at")}
        watch.last_latency_s = message["latency_s"]
        log.info("watch.event", watch=event.watch, camera=event.camera, kind=event.kind,
                 probability=message["probability"], latency_s=message["latency_s"], event_id=event.id)
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        sent = False
        for names, send in list(self._subscribers.values()):
            if names is None or event.watch in names:
                send(text)
                sent = True
        if sent and observed and self._on_latency is not None:
            self._on_latency("websocket", message["latency_s"])
        for sink in self.sinks:
            sink.publish_event(event)
        self.events_sent += 1

    def publish_digest(self, digest: dict[str, Any]) -> None:
        """A digest to the subscribers of every watch (``watch.subscribe`` without names) and to the sinks."""
        text = json.dumps(digest, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        for names, send in list(self._subscribers.values()):
            if names is None:
                send(text)
        for sink in self.sinks:
            sink.publish_digest(digest)

    async def _follow_with_description(self, watch: _Watch, event: WatchEvent) -> None:
        if self._budget is not None:
            self._budget.count += 1
        try:
            text = await self._describe(event.camera, DESCRIBE_QUESTION, self.describe_tokens)
        except Exception as exc:  # the event went out already; the description is a bonus
            log.warning("watch.describe_failed", watch=event.watch, error=type(exc).__name__)
            return
        finally:
            if self._budget is not None:
                self._budget.count -= 1
        if self.watches.get(watch.spec.name) is watch and not self._stopped:
            self._publish(watch, event.described(_printable(text.strip())), observed=False)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """No more results are applied; descriptions in progress are cancelled; every sink delivers what it can
        within its drain timeout."""
        self._stopped = True
        for camera in {w.spec.camera for w in self.watches.values()}:
            self._engine_set(camera, {})
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(sink.stop() for sink in self.sinks), return_exceptions=True)

    # -- evidence frames ----------------------------------------------------------------------------------------

    def _keep_evidence(self, camera: str, frame_id: int) -> None:
        key = (camera, frame_id)
        if key in self._evidence:
            self._evidence.move_to_end(key)
            return
        try:
            data = self._read_frame(camera, frame_id)
        except (OSError, ValueError):
            data = None
        if data is not None:
            self._evidence[key] = data
            while len(self._evidence) > EVIDENCE_KEPT:
                self._evidence.popitem(last=False)

    def kept_evidence(self, camera: str, frame_id: int) -> bytes | None:
        """A watch event's evidence frame, kept in memory (None: not one of the last events')."""
        return self._evidence.get((camera, frame_id))

    def evidence(self, camera: str, frame_id: int) -> bytes | None:
        """An event's evidence frame, else any stored frame of the camera's memory (reads a file)."""
        data = self.kept_evidence(camera, frame_id)
        if data is not None:
            return data
        try:
            return self._read_frame(camera, frame_id)
        except (OSError, ValueError):
            return None

    def stats(self) -> dict[str, Any]:
        return {"watches": {n: w.describe() for n, w in self.watches.items()}, "events_sent": self.events_sent,
                "subscribers": len(self._subscribers), "describes_skipped": self.describes_skipped,
                "engine_share": _rounded(self.load.share(self._clock())), "engine_share_limit": self.load.limit,
                "results_dropped": self.results_dropped, "sinks": {s.name: s.stats() for s in self.sinks}}


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def _printable(text: str) -> str:
    """A model's text as sinks and terminals may show it: no control characters (escape sequences included)."""
    return "".join(ch if ch.isprintable() or ch in "\n" else " " for ch in text)
