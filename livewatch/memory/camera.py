"""One camera's memory: pairing, scoring, star memory, stream window, persistence, the engine's context.

Frames arrive one by one (``add_frame``); every two make a pair. Each frame is first capped to the model's pixel
limit (the model never sees more) and round-tripped through JPEG, so the pixels held in RAM are exactly the
pixels a restart restores from disk. A new pair is scored by the camera's ``ImportanceModel`` (a background
model that sees every frame in order; ``memory/importance.py``), offered to the star memory, pushed into the
stream window (when it is full the oldest pairs leave, and leave memory unless they are stars), and the byte
bound evicts the oldest window pairs first. Every change of the set star U window bumps ``version``.

The window keeps ``window_pairs`` pairs and may grow ``window_slack`` more; when it passes that, it drops back
to ``window_pairs`` at once. A pair leaving the front moves every later pair's place in the engine's prefix, so
each departure costs a re-prefill of the whole window, while an arrival alone costs one pair's tokens (an
extension): with slack, k + 1 arrivals cost one re-prefill instead of k + 1 (README Performance has the figures).

A restart seeds the background model from the restored window's frames (oldest first) and measures every
restored pair's signature against it. A restart that restores a window longer than its capacity (an index
rebuilt from the frame files, a smaller configured window) trims it the same way: the oldest pairs leave in
time order, each offered to the star memory first.

Persistence is best effort and never blocks the memory: a failed write (disk full, read-only, I/O error) is
logged and counted, the pair stays in RAM marked unsaved, and the next commit retries every unsaved pair still in
memory, so writes resume by themselves when space returns.

Not thread-safe: the daemon calls one camera's memory from one task at a time.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from livewatch.errors import StorageError
from livewatch.frames import Frame, FramePair, resize
from livewatch.log import get_logger
from livewatch.memory.change import ChangeParams
from livewatch.memory.history import History, select_spread
from livewatch.memory.importance import Importance, ImportanceModel, PairSignature, pair_signature
from livewatch.memory.star import StarEntry, StarMemory
from livewatch.memory.jpegfile import PairRecord, decode_jpeg, encode_jpeg
from livewatch.memory.store import FrameStore

log = get_logger("livewatch.memory")


@dataclass(frozen=True)
class MemoryParams:
    star_pairs: int = 10
    window_pairs: int = 10
    window_slack: int = 0  # the window may grow this many pairs past window_pairs; then it drops back at once
    history_s: float = 0.0  # pairs that leave memory stay on disk this long (0: deleted at once)
    history_max_bytes: int = 0  # and within this many bytes (0: no history)
    threshold: float = 0.6
    star_half_life_s: float = 600.0
    jpeg_quality: int = 90
    max_bytes: int = 64 * 1024 * 1024
    frame_size: Any = None  # Callable[[int, int], tuple[int, int]]: capped (h, w) of a frame; None keeps the size
    min_change_area: float = ChangeParams.min_blob
    lightning_area: float = ChangeParams.lightning_area
    stationary_s: float = ChangeParams.stationary_s

    def change_params(self) -> ChangeParams:
        return ChangeParams(
            min_blob=self.min_change_area, lightning_area=self.lightning_area, stationary_s=self.stationary_s
        )


_NO_SIGNATURE = PairSignature(cells=np.zeros((1, 1, 3), np.float32), changed=np.zeros((1, 1), np.float32))


@dataclass
class _Stored:
    pair: FramePair
    record: PairRecord
    signature: PairSignature
    saved: bool


class CameraMemory:
    def __init__(self, name: str, params: MemoryParams, store: FrameStore | None = None) -> None:
        self.name = name
        self.params = params
        self.store = store
        self.stars = StarMemory(params.star_pairs, params.threshold, params.star_half_life_s)
        self.importance = ImportanceModel(params.change_params())
        self.last_importance: Importance | None = None
        self.stars_admitted: Counter[str] = Counter()  # by StarDecision.reason
        self.stars_rejected: Counter[str] = Counter()
        self.window: deque[int] = deque()
        self._slots: dict[int, _Stored] = {}
        self._pending: Frame | None = None
        self._pending_blob: bytes = b""
        self._last_time = float("-inf")
        self._next_id = 0
        self._removed: list[PairRecord] = []  # left memory, rows still to delete
        self.history = History(params.history_s, params.history_max_bytes)
        self._archived_now: list[PairRecord] = []  # left memory into the history: role updates still to commit
        self.version = 0
        self.total_frames_added = 0
        self.frames_out_of_order = 0
        self.write_errors = 0
        self.last_write_error: str | None = None

    # -- restart ------------------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Load the last committed state of this camera from the store.

        A restored window longer than ``window_pairs`` (a rebuilt index puts every pair in the window; or the
        configured window shrank) is trimmed as it would have been live: the oldest pairs leave in time order,
        each offered to the star memory first, and the pairs kept by neither are deleted from the store. When
        the store cannot be read, the camera runs from RAM (its store is dropped, so no write can reuse an id
        of a stored pair).
        """
        if self.store is None:
            return
        try:
            state = self.store.load(self.name)
        except StorageError as exc:
            log.error("memory.restore_failed", camera=self.name, error=str(exc))
            self.store = None
            return
        for rec, images in state.pairs:
            first = Frame(rec.seq[0], rec.wall[0], rec.mono[0], images[0])
            second = first if rec.single else Frame(rec.seq[1], rec.wall[1], rec.mono[1], images[1])
            pair = FramePair(rec.id, first, second, rec.importance)
            self._slots[rec.id] = _Stored(pair, rec, _NO_SIGNATURE, saved=True)
            if rec.in_window:
                self.window.append(rec.id)
            self._last_time = max(self._last_time, pair.end_time)
        # the background model restarts from the restored window (what the camera showed last), and every
        # restored pair is measured against it
        for pid in self.window:
            pair = self._slots[pid].pair
            self.importance.learn(pair.first.image, pair.first.wall_time)
            if pair.second is not pair.first:
                self.importance.learn(pair.second.image, pair.second.wall_time)
        stars = []
        for slot in self._slots.values():
            slot.signature = pair_signature(slot.pair.first.image, slot.pair.second.image, self.importance)
            if slot.record.is_star:
                stars.append(StarEntry(slot.record.id, slot.pair.time, slot.record.importance, slot.signature,
                                       why=slot.record.why))
        self.stars.restore(stars)
        for rec, nbytes in state.archived:
            self.history.add(rec, nbytes)
        self._removed.extend(self.history.trim())  # a shorter history configured, or time passed while stopped
        self._next_id = state.next_id
        self.total_frames_added = state.total_frames_added
        restored = len(self._slots)
        # the store returns pairs ordered by time, so the window is too
        trimmed = len(self.window) - self.params.window_pairs
        while len(self.window) > self.params.window_pairs:
            self._leave_window_as_star_candidate(self.window.popleft())
        if state.pairs:
            self.version += 1
        if trimmed > 0 or self._removed:
            self._persist()
        log.info(
            "memory.restored", camera=self.name, pairs=len(self._slots), window=len(self.window),
            stars=len(self.stars), orphans_removed=state.removed_orphans, rows_dropped=state.dropped_rows,
            window_trimmed=max(trimmed, 0), forgotten=restored - len(self._slots),
        )

    def _leave_window_as_star_candidate(self, pid: int) -> None:
        """A window pair leaves; unless already a star it is first offered to the star memory, as ``_admit`` does."""
        if not self._slots[pid].record.is_star:
            self._offer_star(pid)
        self._leave_window(pid)

    def _offer_star(self, pid: int, episode: int = -1) -> None:
        """Offer a pair to the star memory; a star it displaces leaves memory unless the window holds it."""
        slot = self._slots[pid]
        decision = self.stars.offer(pid, slot.pair.time, slot.record.importance, slot.signature, episode)
        if not decision.admitted:  # the star memory's rule 5 decides whether it is the scene's reference
            reference = self.stars.offer_reference(pid, slot.pair.time, slot.signature)
            decision = reference if reference.admitted else decision
        slot.record.is_star = decision.admitted
        slot.record.why = decision.reason if decision.admitted else ""
        if decision.admitted:
            self.stars_admitted[decision.reason] += 1
            log.info(
                "memory.star_admitted", camera=self.name, pair=pid, time=round(slot.pair.time, 3),
                importance=round(slot.record.importance, 4), reason=decision.reason, evicted=decision.evicted,
            )
        else:
            self.stars_rejected[decision.reason] += 1
        if decision.evicted is not None:
            self._slots[decision.evicted].record.is_star = False
            self._slots[decision.evicted].record.why = ""
            self._forget_if_unused(decision.evicted)

    # -- intake -------------------------------------------------------------------------------------------------

    def _prepare(self, frame: Frame) -> tuple[Frame, bytes]:
        image = frame.image
        if self.params.frame_size is not None:
            image = resize(image, self.params.frame_size(*image.shape[:2]))
        blob = encode_jpeg(image, self.params.jpeg_quality)
        stored = decode_jpeg(blob)
        assert stored is not None
        return Frame(frame.seq, frame.wall_time, frame.mono_time, stored), blob

    def add_frame(self, frame: Frame) -> bool:
        """Take one sampled frame; returns True when the context (star U window) changed."""
        if frame.wall_time < self._last_time:
            self.frames_out_of_order += 1
            return False
        self._last_time = frame.wall_time
        self.total_frames_added += 1
        prepared, blob = self._prepare(frame)
        if self._pending is None:
            self._pending, self._pending_blob = prepared, blob
            return False
        first, first_blob = self._pending, self._pending_blob
        self._pending, self._pending_blob = None, b""
        self._admit(first, prepared, (first_blob, blob))
        return True

    def flush_pending(self) -> bool:
        """Pair a lone waiting frame with itself (the stream stalled or is stopping)."""
        if self._pending is None:
            return False
        frame, blob = self._pending, self._pending_blob
        self._pending, self._pending_blob = None, b""
        self._admit(frame, frame, (blob,))
        return True

    def _admit(self, first: Frame, second: Frame, blobs: tuple[bytes, ...]) -> None:
        pid = self._next_id
        self._next_id += 1
        scored = self.importance.score_pair(
            first.image, first.wall_time, None if second is first else second.image, second.wall_time,
            self.stars.signatures(),
        )
        self.last_importance = scored
        score, sig = scored.score, scored.signature
        pair = FramePair(pid, first, second, score)
        record = PairRecord(
            id=pid,
            seq=(first.seq, second.seq),
            wall=(first.wall_time, second.wall_time),
            mono=(first.mono_time, second.mono_time),
            single=second is first,
            importance=score,
            in_window=True,
            is_star=False,
            jpegs=blobs,
        )
        self._slots[pid] = _Stored(pair, record, sig, saved=False)
        self._offer_star(pid, scored.episode)
        self.window.append(pid)
        if len(self.window) > self.params.window_pairs + self.params.window_slack:
            while len(self.window) > self.params.window_pairs:  # with slack, several leave at once
                self._leave_window(self.window.popleft())
        self._enforce_bytes()
        self.version += 1
        self._persist()

    def _leave_window(self, pid: int) -> None:
        self._slots[pid].record.in_window = False
        self._forget_if_unused(pid)

    def _forget_if_unused(self, pid: int) -> None:
        """A pair in neither the window nor the star memory leaves memory: into the history when it is on and the
        pair's files are on disk, else deleted."""
        slot = self._slots[pid]
        if not slot.record.in_window and not slot.record.is_star:
            del self._slots[pid]
            if slot.saved and self.history.enabled:
                self._archived_now.append(self.history.add(slot.record, slot.record.nbytes))
                self._removed.extend(self.history.trim())
            elif slot.saved:
                self._removed.append(slot.record)

    def _enforce_bytes(self) -> None:
        while self.bytes_in_memory() > self.params.max_bytes and len(self._slots) > 1:
            if len(self.window) > 1:
                self._leave_window(self.window.popleft())
            else:  # only stars (and at most one window pair) left: the oldest star goes
                oldest = self.stars.pop_oldest().pair_id
                self._slots[oldest].record.is_star = False
                self._slots[oldest].record.why = ""
                self._forget_if_unused(oldest)

    def bytes_in_memory(self) -> int:
        return sum(s.record.nbytes for s in self._slots.values())

    # -- persistence --------------------------------------------------------------------------------------------

    def _persist(self) -> None:
        if self.store is None:
            return
        inserts = []
        for slot in self._slots.values():
            if slot.saved:
                continue
            try:
                self.store.write_files(self.name, slot.record)
            except StorageError as exc:
                self._write_failed(exc)
                continue
            inserts.append(slot)
        roles = [s.record for s in self._slots.values() if s.saved] + self._archived_now
        try:
            self.store.commit(
                self.name, [s.record for s in inserts], roles, self._removed, self._next_id, self.total_frames_added
            )
        except StorageError as exc:
            self._write_failed(exc)
            self.store.unlink(self.name, [s.record for s in inserts])
            return
        for slot in inserts:
            slot.saved = True
        self._removed = []
        self._archived_now = []
        if self.last_write_error is not None and not any(not s.saved for s in self._slots.values()):
            log.info("memory.writes_resumed", camera=self.name)
            self.last_write_error = None

    def _write_failed(self, exc: StorageError) -> None:
        """Count and log (once until writes resume); with a history, give up its oldest quarter at once: a full
        disk becomes a shorter history, and the camera's new frames find room."""
        if self.history and self.store is not None:
            shed = self.history.shed(0.25)
            self.store.unlink(self.name, shed)  # the space now; the rows go at the next commit (or the next load)
            self._removed.extend(shed)
            log.warning("memory.history_shed", camera=self.name, pairs=len(shed), left=len(self.history))
        self.write_errors += 1
        if self.last_write_error is None:
            log.error("memory.write_failed", camera=self.name, error=str(exc))
        self.last_write_error = str(exc)

    def delete_all(self) -> None:
        """The camera was removed: delete its frames and index rows."""
        self._slots.clear()
        self.window.clear()
        self.stars.entries.clear()
        self.history = History(self.params.history_s, self.params.history_max_bytes)
        if self.store is not None:
            self.store.remove_camera(self.name)

    # -- reading ------------------------------------------------------------------------------------------------

    def context(self) -> tuple[list[FramePair], int]:
        """Star U window, ordered by time, with the version that changes exactly when the set changes."""
        pairs = sorted((replace(s.pair, star=s.record.is_star, why=s.record.why) for s in self._slots.values()),
                       key=lambda p: (p.time, p.id))
        return pairs, self.version

    def range_items(self, since: float, until: float) -> list[FramePair | PairRecord]:
        """Every pair of [since, until] in memory (a FramePair) or history (its record: not read yet), by time."""
        live: list[tuple[float, int, FramePair | PairRecord]] = [
            (p.time, p.id, p) for p in (s.pair for s in self._slots.values()) if p.end_time >= since and p.time <= until]
        if self.store is not None:
            live += [(e.time, e.record.id, e.record) for e in self.history.between(since, until)]
        return [item for _, _, item in sorted(live, key=lambda f: (f[0], f[1]))]

    def load_items(self, items: list[FramePair | PairRecord]) -> list[FramePair]:
        """The pairs of ``range_items``, history pairs read from the store (one whose files are gone is skipped)."""
        pairs = []
        for item in items:
            if isinstance(item, FramePair):
                pairs.append(item)
                continue
            images = self.store.read_pair(self.name, item) if self.store is not None else None
            if images is None:
                continue
            first = Frame(item.seq[0], item.wall[0], item.mono[0], images[0])
            second = first if item.single else Frame(item.seq[1], item.wall[1], item.mono[1], images[1])
            pairs.append(FramePair(item.id, first, second, item.importance))
        return pairs

    def range_pairs(self, since: float, until: float, max_pairs: int) -> list[FramePair]:
        """The pairs of [since, until] for a question about that time: all of them if they fit ``max_pairs``, else
        the most important half and the rest spread evenly over the range; in time order."""
        found = select_spread(self.range_items(since, until), lambda item: item.importance, max_pairs)
        return self.load_items(found)

    def stats(self) -> dict[str, Any]:
        def frames(ids) -> int:
            return sum(1 if self._slots[i].record.single else 2 for i in ids)

        unique = frames(self._slots)
        unsaved = sum(1 for s in self._slots.values() if not s.saved)
        return {
            "total_frames_added": self.total_frames_added,
            "star_memory_size": frames(self.stars.ids()),
            "stream_memory_size": frames(self.window),
            "unique_frames": unique,
            "compression_ratio": round(self.total_frames_added / unique, 2) if unique else 0.0,
            "disk_cache_enabled": self.store is not None and self.last_write_error is None,
            "bytes_in_memory": self.bytes_in_memory(),
            "bytes_on_disk": sum(s.record.nbytes for s in self._slots.values() if s.saved),
            "write_errors": self.write_errors,
            "unsaved_pairs": unsaved,
            "frames_out_of_order": self.frames_out_of_order,
            "version": self.version,
            "last_importance": self.last_importance.parts() if self.last_importance is not None else None,
            "stars_admitted": dict(self.stars_admitted),
            "stars_rejected": dict(self.stars_rejected),
            "star_times": [round(e.time, 3) for e in self.stars.entries],
            **self.history.stats(),
        }
