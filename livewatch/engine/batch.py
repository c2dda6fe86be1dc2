"""Questions in flight decoded together: one decode step advances every active answer (by one token, or by
``tokens_per_sync`` when every row is greedy and the device feeds its own picks back between host reads).

Each admitted question gets a slot of the SlotCache: its camera's prefix is copied in (skipped when the slot
already holds that very prefix), the question's tokens are prefilled after it, then the answer grows token by
token. Rows of different cameras and lengths share each decode step (a per-row mask keeps them apart); an
answer that finishes or is cancelled frees its slot at once without stalling the others. Questions that do not
fit a slot (prefix + question + answer longer than a slot) run on the engine's unbatched path instead.

Not thread-safe: the engine worker thread owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from livewatch.engine.answer import Answer, AnswerStream, Prepared, make_generator
from livewatch.engine.core import EngineCore
from livewatch.engine.model.fastpath import SlotCache, StepRunner
from livewatch.engine.model.generate import model_failure, pick_token
from livewatch.engine.results import SamplingParams
from livewatch.errors import CancelledRequest, LivewatchError


@dataclass
class Row:
    """One answer being decoded."""

    key: Any  # the caller's handle for this request (returned with its outcome)
    prepared: Prepared
    params: SamplingParams
    stream: AnswerStream
    cancelled: Callable[[], bool]
    generator: Any
    slot: int = -1
    position: int = 0  # M-RoPE position of the next token fed
    write: int = 0  # cache index of the next token fed
    next_token: int = 0
    done: bool = False


@dataclass
class _DecodeSlot:
    loaded: tuple[str, int] | None = None  # (camera, kv_generation) of the prefix it holds
    row: Row | None = None


@dataclass
class Outcome:
    key: Any
    answer: Answer | None = None
    error: LivewatchError | None = None


@dataclass
class BatchDecoder:
    core: EngineCore
    slots: int
    max_len: int
    use_graphs: bool
    fused_kernels: bool = True  # Triton kernels in the step where the device runs them (CUDA)
    tokens_per_sync: int = 4  # greedy decode steps run back to back on the device between two host reads
    runner: StepRunner = field(init=False)
    _slots: list[_DecodeSlot] = field(init=False)
    _fed: tuple[int, frozenset[int]] | None = field(init=False, default=None)  # (bucket, slots) the device holds
    steps: int = 0
    rows_stepped: int = 0

    def __post_init__(self) -> None:
        cache = SlotCache(self.core.lm, self.slots, self.max_len)
        self.runner = StepRunner(self.core.lm, cache, self.use_graphs, fused_kernels=self.fused_kernels)
        self._slots = [_DecodeSlot() for _ in range(self.slots)]

    def capture(self) -> float:
        """Capture the decode path's graphs (seconds taken); on failure the runner is left eager, and it raises."""
        try:
            return self.runner.capture()
        except Exception:
            self.runner.drop_graphs()
            raise

    def reset_counters(self) -> None:
        self.steps = self.rows_stepped = 0

    @property
    def active(self) -> list[Row]:
        return [s.row for s in self._slots if s.row is not None]

    def free_slots(self) -> int:
        return sum(1 for s in self._slots if s.row is None)

    # -- admission ----------------------------------------------------------------------------------------------

    def admit(
        self, key: Any, prepared: Prepared, params: SamplingParams,
        on_text: Callable[[str], None] | None, cancelled: Callable[[], bool],
    ) -> Outcome | None:
        """Load the prefix, prefill the question, take its first token. Returns an Outcome if it already ended."""
        slot = self._pick_slot(prepared)
        core = self.core
        row = Row(key, prepared, params, AnswerStream(core.lm, params, on_text), cancelled,
                  make_generator(params, core.lm.device), slot=slot)
        holder = self._slots[slot]
        with core.guard(prepared.camera, "answering"):
            wanted = (prepared.camera, prepared.kv_generation)
            if holder.loaded != wanted:
                holder.loaded = None
                self.runner.cache.load(slot, *core.stacked_prefix(prepared.camera))
                holder.loaded = wanted
            logits, greedy = self.runner.prefill(
                slot, prepared.suffix, prepared.next_position, prepared.prefix_tokens
            )
            token = greedy if params.temperature == 0 else pick_token(logits, params, row.generator)
        holder.row = row
        self._fed = None
        row.position = prepared.next_position + len(prepared.suffix)
        row.write = prepared.prefix_tokens + len(prepared.suffix)
        return self._take(row, token)

    def _pick_slot(self, prepared: Prepared) -> int:
        wanted = (prepared.camera, prepared.kv_generation)
        free = [i for i, s in enumerate(self._slots) if s.row is None]
        if not free:
            raise RuntimeError("admit() without a free slot")
        same = [i for i in free if self._slots[i].loaded == wanted]
        return same[0] if same else free[0]

    # -- decoding -----------------------------------------------------------------------------------------------

    def step(self) -> list[Outcome]:
        """Drop cancelled rows, advance the others (by up to ``tokens_per_sync`` tokens each when every row is
        greedy, else by one); returns the answers that ended."""
        ended: list[Outcome] = []
        for row in self.active:
            if row.cancelled():
                ended.append(self._end(row, error=CancelledRequest("the request was cancelled")))
        rows = self.active
        if not rows:
            return ended
        sampled = [r for r in rows if r.params.temperature > 0]
        steps = 1 if sampled else self.tokens_per_sync
        try:
            bucket = self.runner.bucket_for(max(r.slot for r in rows))
            fed = (bucket, frozenset(r.slot for r in rows))
            if fed != self._fed:  # a row joined or left: load every row's next input; else the device feeds itself
                self.runner.set_rows(bucket, {r.slot: (r.next_token, r.position, r.write) for r in rows})
                self._fed = fed
            logits, greedy = self.runner.decode(bucket, steps)
            picked = {r.slot: pick_token(logits[r.slot], r.params, r.generator) for r in sampled}
            if picked:
                self.runner.set_tokens(bucket, picked)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            return ended + self._fail_all(rows, exc)
        self.steps += steps
        self.rows_stepped += steps * len(rows)
        for i in range(steps):
            for row in rows:
                if row.done:
                    continue
                row.position += 1
                row.write += 1
                outcome = self._take(row, picked.get(row.slot, greedy[i][row.slot]))
                if outcome is not None:
                    ended.append(outcome)
        return ended

    def _take(self, row: Row, token: int) -> Outcome | None:
        if row.stream.accept(token):
            row.next_token = token
            return None
        return self._end(row)

    def _end(self, row: Row, error: LivewatchError | None = None) -> Outcome:
        self._slots[row.slot].row = None
        row.done = True
        self._fed = None
        if error is not None:
            return Outcome(row.key, error=error)
        return Outcome(row.key, answer=self.core.finish(row.prepared, row.stream))

    def _fail_all(self, rows: list[Row], exc: BaseException) -> list[Outcome]:
        error = model_failure(exc, "decoding")
        outcomes = []
        for row in rows:
            self._slots[row.slot].loaded = None
            if not row.done:
                outcomes.append(self._end(row, error=error))
        if error.out_of_memory and self.core.lm.device.type == "cuda":
            torch.cuda.empty_cache()
        return outcomes

    def held_prefixes(self) -> list[tuple[str, int] | None]:
        """Per slot, the (camera, kv_generation) of the prefix it holds (None: none)."""
        return [slot.loaded for slot in self._slots]

    def forget_prefixes(self) -> None:
        """Forget which prefix each free slot holds (the next question of any camera copies its own in)."""
        for slot in self._slots:
            if slot.row is None:
                slot.loaded = None

    def cancel_all(self, error: LivewatchError) -> list[Outcome]:
        return [self._end(row, error=error) for row in self.active]

    def stats(self) -> dict[str, Any]:
        return {
            **self.runner.describe(),
            "active_answers": len(self.active),
            "decode_steps": self.steps,
            "mean_batch": round(self.rows_stepped / self.steps, 2) if self.steps else 0.0,
        }
