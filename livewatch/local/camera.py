"""One watched camera in the running daemon: reader thread -> hand-off -> memory -> engine context.

The pump task takes sampled frames from the reader's hand-off and feeds the camera's memory on a worker
thread (JPEG encoding and fsync never run on the event loop), one frame at a time, in order. When the context
changed it publishes the new (pairs, version) to the engine. If no frame comes for three sampling periods, a
lone waiting frame is paired with itself so that it still reaches the context.

The memory's statistics are snapshotted after each frame on that same thread, so the event loop reads them
without touching the memory while it is being written.

A camera whose URL cannot be used any more (a saved camera whose file vanished, or that the URL policy now
refuses) still runs, in state ``failed`` with its error and no reader: its restored frames stay askable, and one
bad saved camera never stops the daemon. A camera added over the API is untrusted: its ``last_error`` in status
is generic (the detail, which would tell a refused port from a 401 from a non-video reply, is only in the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from livewatch.capture.handoff import LatestHandoff
from livewatch.capture.masks import Masks
from livewatch.capture.zones import ZoneTap
from livewatch.capture.reader import CameraReader
from livewatch.capture.source import CaptureParams, SourceSpec
from livewatch.capture.policy import CameraState
from livewatch.frames import Frame, FramePair
from livewatch.log import bind, get_logger
from livewatch.memory.camera import CameraMemory

log = get_logger("livewatch.camera")


class CameraRuntime:
    def __init__(
        self,
        name: str,
        spec: SourceSpec | None,
        memory: CameraMemory,
        publish: Callable[[str, list, int], None],
        capture: CaptureParams = CaptureParams(),
        *,
        frame_size: Callable[[int, int], tuple[int, int]] | None,
        connect_check: Callable[[], None] | None = None,
        untrusted: bool = False,
        start_error: str | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.untrusted = untrusted
        self.start_error = start_error or ("the camera URL cannot be used" if spec is None else None)
        self._connect_check = connect_check
        self.memory = memory
        self._memory_lock = asyncio.Lock()  # the memory is not thread-safe: one reader or writer at a time
        self._publish = publish
        self._capture = capture
        self._frame_size = frame_size
        self.reader: CameraReader | None = None
        self._task: asyncio.Task[None] | None = None
        self.memory_stats: dict[str, Any] = memory.stats()
        self.context: list[FramePair] = []  # the pairs last published (the page's strip reads them)
        self.taps: list[ZoneTap] = []  # this camera's zones (the reader feeds them)
        self.tap: ZoneTap | None = None  # a zone's own tap
        self.parent: CameraRuntime | None = None  # a zone's parent, while it runs

    def start(self) -> None:
        pairs, version = self.memory.context()
        self.context = pairs
        # restored memory is in context before the first new frame; an empty context makes the camera known, so
        # an early question gets "no_frames" rather than "unknown camera"
        self._publish(self.name, pairs, version)
        if self.spec is None:
            return
        loop = asyncio.get_running_loop()
        handoff: LatestHandoff[Frame] = LatestHandoff(loop, maxlen=8)
        if self.spec.kind == "zone":
            assert self.spec.crop is not None
            self.tap = ZoneTap(self.name, self.spec.crop, self._frame_size, handoff, self.spec.masks)
            self._task = asyncio.create_task(self._pump(handoff), name=f"camera-{self.name}")
            return  # fed by its parent's reader once linked (``link``)
        self.reader = CameraReader(
            self.name,
            self.spec,
            handoff,
            fps=self._capture.fps,
            frame_size=self._frame_size,
            open_timeout_s=self._capture.open_timeout_s,
            read_timeout_s=self._capture.read_timeout_s,
            connect_check=self._connect_check,
            uniform_errors=self.untrusted,
        )
        self.reader.taps = tuple(self.taps)
        self.reader.start()
        self._task = asyncio.create_task(self._pump(handoff), name=f"camera-{self.name}")

    # -- zones --------------------------------------------------------------------------------------------------

    def link(self, parent: CameraRuntime) -> None:
        """This zone is fed by ``parent``'s reader from its next sampled frame."""
        assert self.tap is not None
        self.parent = parent
        parent.taps.append(self.tap)
        if parent.reader is not None:
            parent.reader.taps = tuple(parent.taps)

    def unlink(self, error: str | None = None) -> None:
        """No longer fed (stopped, or ``error``: the parent went away, which the zone's state then says)."""
        parent, self.parent = self.parent, None
        if parent is not None and self.tap in parent.taps:
            parent.taps.remove(self.tap)
            if parent.reader is not None:
                parent.reader.taps = tuple(parent.taps)
        if error is not None:
            self.start_error = error

    def set_masks(self, masks: Masks) -> None:
        """From the reader's next sampled frame on (the reader reads its attribute once a frame)."""
        if self.spec is not None:
            self.spec = replace(self.spec, masks=masks)
        if self.reader is not None:
            self.reader.masks = masks
        if self.tap is not None:
            self.tap.masks = masks

    async def _pump(self, handoff: LatestHandoff[Frame]) -> None:
        bind(camera=self.name)
        stall = 3.0 / self._capture.fps
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(handoff.get(), timeout=stall)
                except TimeoutError:
                    await self._step(None)
                    continue
                if frame is None:  # the reader ended (stopped, failed, or daemon shutdown)
                    await self._step(None)
                    return
                await self._step(frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("camera.pump_crashed")
            raise

    async def range_items(self, since: float, until: float) -> list[Any]:
        """memory.range_items, between two of the pump's steps."""
        async with self._memory_lock:
            return await asyncio.to_thread(self.memory.range_items, since, until)

    async def load_items(self, items: list[Any]) -> list[FramePair]:
        """memory.load_items (store reads), between two of the pump's steps."""
        async with self._memory_lock:
            return await asyncio.to_thread(self.memory.load_items, items)

    async def range_pairs(self, since: float, until: float, max_pairs: int) -> list[FramePair]:
        """Memory and history pairs of [since, until] (memory.range_pairs), between two of the pump's steps."""
        async with self._memory_lock:
            return await asyncio.to_thread(self.memory.range_pairs, since, until, max_pairs)

    async def _step(self, frame: Frame | None) -> None:
        async with self._memory_lock:
            changed, pairs, version, stats = await asyncio.to_thread(self._feed, frame)
        self.memory_stats = stats
        if changed:
            self.context = pairs
            self._publish(self.name, pairs, version)

    def _feed(self, frame: Frame | None) -> tuple[bool, list, int, dict[str, Any]]:
        changed = self.memory.add_frame(frame) if frame is not None else self.memory.flush_pending()
        pairs, version = self.memory.context() if changed else ([], 0)
        return changed, pairs, version, self.memory.stats()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader, let the pump drain what was sampled, flush the lone frame."""
        if self.reader is not None:
            await asyncio.to_thread(self.reader.stop, timeout)
        if self.tap is not None:  # a zone: no more frames from the parent; the pump ends after the last one
            self.unlink()
            self.tap.handoff.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:
                pass  # already logged by the pump

    def reader_stats(self) -> dict[str, Any]:
        if self.tap is not None:  # a zone: its parent's decoder, its own frames
            parent = self.parent
            if parent is None:
                return {"state": CameraState.FAILED.value, "frames_sampled": self.tap.sampled, "frames_dropped": 0,
                        "reconnects": 0, "last_error": self.start_error, "zone_of": self.spec.target
                        if self.spec else None, "decoder": "none"}
            stats = parent.reader_stats()
            return {"state": stats["state"], "frames_sampled": self.tap.sampled, "frames_dropped": 0,
                    "reconnects": stats.get("reconnects", 0), "last_error": stats.get("last_error"),
                    "zone_of": parent.name, "decoder": "parent",
                    "resolution": list(self.tap.size) if self.tap.size else None}
        if self.reader is None:
            state = CameraState.FAILED if self.spec is None else CameraState.STOPPED
            return {"state": state.value, "frames_sampled": 0, "frames_dropped": 0, "reconnects": 0,
                    "last_error": self.start_error if self.spec is None else None}
        stats = {**self.reader.stats(), "decoder": "own", "zones": [t.name for t in self.taps]}
        if self.untrusted and stats.get("last_error"):
            stats["last_error"] = "the camera could not be opened or read; the daemon's log has the detail"
        return stats
