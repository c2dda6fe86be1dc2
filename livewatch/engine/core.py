"""The engine core: per-camera contexts, the shared prefix KV cache, and answering questions.

A plain class with synchronous methods that tests call in-process; ``worker.EngineWorker`` owns the thread that
calls it. Nothing here is thread-safe: exactly one thread may use an EngineCore.

For each camera the core keeps the latest context the memory published (ordered pairs and a version), the
vision embeddings of those pairs, and a prefix KV cache built for one version. ``encode`` brings the prefix up to
date with the least work (see layout.plan_update); ``ask`` answers one question on top of the prefix without
modifying it: the question's and the answer's entries live in a cache of their own and are dropped at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from livewatch.engine.answer import Answer, AnswerStream, Prepared, finish_answer, make_generator
from livewatch.engine.generate import (
    KV,
    SamplingParams,
    cache_from_kv,
    model_failure,
    stack_prefix,
    crop_kv,
    forward,
    kv_from_cache,
    kv_length,
    kv_nbytes,
    pick_token,
    position_tensor,
)
from livewatch.engine.layout import PairSlot, PrefixLayout, UpdateKind, plan_update
from livewatch.engine.loading import LoadedModel
from livewatch.engine.positions import temporal_positions, text_positions
from livewatch.engine.preprocess import target_size
from livewatch.engine.prompt import PromptTemplate, question_text, resolve_tz, system_text
from livewatch.engine.vision import VisionCache
from livewatch.errors import CancelledRequest, EngineError, ErrorCode, RequestError
from livewatch.frames import FramePair


@dataclass(frozen=True)
class EncodeReport:
    kind: UpdateKind
    encode_ms: float
    vision_ms: float
    prefill_ms: float
    pairs_encoded: int
    prefill_tokens: int


@dataclass
class _CameraState:
    name: str
    vision: VisionCache
    pairs: tuple[FramePair, ...] = ()
    version: int = -1
    encoded_version: int | None = None
    layout: PrefixLayout | None = None
    kv: KV | None = None
    encode_count: int = 0
    rebuilds: int = 0
    extensions: int = 0
    partial_rebuilds: int = 0
    questions: int = 0
    kv_generation: int = 0  # changes whenever ``kv`` does (slot caches key their copies on it)
    stacked: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    last_encode: EncodeReport | None = field(default=None, repr=False)

    @property
    def cache_valid(self) -> bool:
        return self.kv is not None and self.encoded_version == self.version


class EngineCore:
    def __init__(
        self,
        lm: LoadedModel,
        *,
        max_gap_s: float = 60.0,
        timezone: str = "local",
        max_new_tokens_limit: int = 1024,
        vision_batch: int = 32,
    ) -> None:
        self.lm = lm
        self.max_gap_s = max_gap_s
        self.tz = resolve_tz(timezone)
        self.max_new_tokens_limit = max_new_tokens_limit
        self.vision_batch = vision_batch
        self.template = PromptTemplate.from_processor(lm.processor, "<|video_pad|>")
        self._cameras: dict[str, _CameraState] = {}
        self._generation = 0

    # -- contexts -----------------------------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        return list(self._cameras)

    def set_context(self, camera: str, pairs: Sequence[FramePair], version: int) -> None:
        """Record the context the memory published for ``camera``; no model work happens here."""
        ordered = tuple(sorted({p.id: p for p in pairs}.values(), key=lambda p: (p.time, p.id)))
        state = self._cameras.get(camera)
        if state is None:
            state = _CameraState(camera, VisionCache(self.lm.visual, self.lm.spec, self.lm.device, self.vision_batch))
            self._cameras[camera] = state
        state.pairs = ordered
        state.version = version

    def drop_camera(self, camera: str) -> None:
        self._cameras.pop(camera, None)

    def needs_encode(self, camera: str) -> bool:
        state = self._cameras.get(camera)
        return state is not None and bool(state.pairs) and not state.cache_valid

    def free_caches(self, camera: str) -> None:
        """Drop a camera's vision embeddings and prefix (after an out-of-memory error, say)."""
        state = self._cameras.get(camera)
        if state is None:
            return
        state.vision.clear()
        state.kv = None
        state.stacked = None
        state.layout = None
        state.encoded_version = None
        if self.lm.device.type == "cuda":
            torch.cuda.empty_cache()

    def layout_for(self, camera: str, pairs: Sequence[FramePair]) -> PrefixLayout:
        """The prefix layout of ``pairs`` (time-ordered) for ``camera``."""
        spec = self.lm.spec
        times = [p.time for p in pairs]
        t_pos = temporal_positions(times, self.lm.tokens_per_second, self.max_gap_s)
        slots = []
        for pair, t in zip(pairs, t_pos):
            h, w = target_size(*pair.first.size, spec)
            slots.append(PairSlot(pair.id, t, h // spec.factor, w // spec.factor))
        head_text = self.template.head(system_text(camera, times[0], self.tz))
        head = tuple(self.lm.tokenizer(head_text, add_special_tokens=False)["input_ids"])
        return PrefixLayout(head=head, slots=tuple(slots))

    # -- encoding -----------------------------------------------------------------------------------------------

    def _state(self, camera: str) -> _CameraState:
        try:
            return self._cameras[camera]
        except KeyError:
            raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"camera {camera!r} has no context") from None

    def _sync(self) -> None:
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)

    @torch.inference_mode()
    def encode(self, camera: str) -> EncodeReport:
        """Bring the camera's prefix up to date with its latest context."""
        state = self._state(camera)
        if not state.pairs:
            raise RequestError(ErrorCode.NO_FRAMES, f"camera {camera!r} has no frames yet")
        if state.cache_valid and state.last_encode is not None:
            return EncodeReport(UpdateKind.REUSE, 0.0, 0.0, 0.0, 0, 0)
        with self.guard(camera, "encoding"):
            return self._encode(state)

    @contextmanager
    def guard(self, camera: str, doing: str) -> Iterator[None]:
        """Model failures inside the block fail this job only (EngineError) and free the camera's caches."""
        try:
            yield
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            self.free_caches(camera)
            raise model_failure(exc, f"{doing} on camera {camera!r}") from exc

    def _encode(self, state: _CameraState) -> EncodeReport:
        t0 = time.perf_counter()
        pairs = state.pairs
        layout = self.layout_for(state.name, pairs)
        plan = plan_update(state.layout if state.kv is not None else None, layout)

        state.vision.retain({p.id for p in pairs})
        new_pairs = pairs[max(plan.first_new_slot, 0) :]
        encoded = state.vision.ensure(new_pairs)
        self._sync()
        t1 = time.perf_counter()

        prefill_tokens = 0
        if plan.kind is not UpdateKind.REUSE:
            lm = self.lm
            parts = []
            if plan.first_new_slot < 0:
                head = torch.tensor(layout.head, dtype=torch.long, device=lm.device)
                parts.append(lm.embed_tokens(head))
                positions = layout.positions()
                kv: KV | None = None
            else:
                positions = layout.positions(from_slot=plan.first_new_slot)
                kv = crop_kv(state.kv, plan.keep_tokens) if state.kv is not None else None
            parts.extend(state.vision.get(p.id).to(lm.dtype) for p in new_pairs)
            embeds = torch.cat(parts).unsqueeze(0)
            cache = cache_from_kv(lm.model.config.text_config, kv)
            lm.text_model(
                inputs_embeds=embeds,
                position_ids=position_tensor(positions, lm.device),
                past_key_values=cache,
                use_cache=True,
            )
            state.kv = kv_from_cache(cache)
            state.stacked = None
            self._generation += 1
            state.kv_generation = self._generation
            prefill_tokens = embeds.shape[1]
        self._sync()
        t2 = time.perf_counter()

        state.layout = layout
        state.encoded_version = state.version
        state.encode_count += 1
        if plan.kind is UpdateKind.REBUILD:
            state.rebuilds += 1
        elif plan.kind is UpdateKind.EXTEND:
            state.extensions += 1
        elif plan.kind is UpdateKind.PARTIAL:
            state.partial_rebuilds += 1
        report = EncodeReport(
            kind=plan.kind,
            encode_ms=(t2 - t0) * 1e3,
            vision_ms=(t1 - t0) * 1e3,
            prefill_ms=(t2 - t1) * 1e3,
            pairs_encoded=encoded,
            prefill_tokens=prefill_tokens,
        )
        state.last_encode = report
        return report

    # -- questions ----------------------------------------------------------------------------------------------

    def question_ids(self, camera: str, question: str) -> list[int]:
        """Token ids of a question's suffix (from <|vision_end|> to the assistant turn) on the current context."""
        state = self._state(camera)
        first, last = state.pairs[0].time, state.pairs[-1].end_time
        n_frames = sum(p.n_frames for p in state.pairs)
        text = self.template.tail(question_text(question, first, last, n_frames, self.tz))
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def prepare(
        self, camera: str, question: str, max_new_tokens: int, received_at: float | None = None
    ) -> Prepared:
        """Check the request, bring the camera's prefix up to date (lazy mode's encode) and tokenize the question."""
        t_start = received_at if received_at is not None else time.perf_counter()
        if max_new_tokens > self.max_new_tokens_limit:
            raise RequestError(ErrorCode.BAD_REQUEST, f"max_tokens {max_new_tokens} exceeds the limit {self.max_new_tokens_limit}"
            )
        state = self._state(camera)
        if not state.pairs:
            raise RequestError(ErrorCode.NO_FRAMES, f"camera {camera!r} has no frames yet")
        reused = state.cache_valid
        report = self.encode(camera)
        assert state.layout is not None and state.kv is not None
        return Prepared(
            camera=camera,
            suffix=self.question_ids(camera, question),
            next_position=state.layout.next_position,
            prefix_tokens=kv_length(state.kv),
            kv_generation=state.kv_generation,
            reused=reused,
            encode_ms=0.0 if reused else report.encode_ms,
            t_start=t_start,
        )

    def stacked_prefix(self, camera: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix as two [layers, kv_heads, P, head_dim] tensors (built once per encode)."""
        state = self._state(camera)
        assert state.kv is not None
        if state.stacked is None:
            state.stacked = stack_prefix(state.kv)
            # the per-layer tensors become views of the stacked ones: one copy of the prefix in memory, not two
            k_all, v_all = state.stacked
            state.kv = [(k_all[i].unsqueeze(0), v_all[i].unsqueeze(0)) for i in range(k_all.shape[0])]
        return state.stacked

    @torch.inference_mode()
    def ask(
        self,
        camera: str,
        question: str,
        params: SamplingParams = SamplingParams(),
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        received_at: float | None = None,
    ) -> Answer:
        """Answer one question about ``camera``'s context, streaming text deltas to ``on_text``.

        The unbatched, eager path: the reference the batched fast path is checked against, and the fallback for
        questions that do not fit a decode slot. ``received_at`` (time.perf_counter()) is when the request
        arrived, so queueing counts in ttft_ms. Raises CancelledRequest when ``cancelled()`` turns true (checked
        between tokens).
        """
        prepared = self.prepare(camera, question, params.max_new_tokens, received_at)
        return self.run_prepared(prepared, params, on_text, cancelled)

    @torch.inference_mode()
    def run_prepared(
        self,
        prepared: Prepared,
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Answer:
        """The unbatched decode of a prepared question."""
        with self.guard(prepared.camera, "answering"):
            return self._answer(self._state(prepared.camera), prepared, params, on_text, cancelled)

    def _answer(
        self,
        state: _CameraState,
        prepared: Prepared,
        params: SamplingParams,
        on_text: Callable[[str], None] | None,
        cancelled: Callable[[], bool],
    ) -> Answer:
        lm = self.lm
        suffix = prepared.suffix
        pos = prepared.next_position
        cache = cache_from_kv(lm.model.config.text_config, state.kv)
        generator = make_generator(params, lm.device)
        embeds = lm.embed_tokens(torch.tensor(suffix, dtype=torch.long, device=lm.device)).unsqueeze(0)
        logits = forward(lm, embeds, position_tensor(text_positions(pos, len(suffix)), lm.device), cache)
        pos += len(suffix)
        stream = AnswerStream(lm, params, on_text)
        while True:
            if cancelled():
                raise CancelledRequest("the request was cancelled")
            token = pick_token(logits, params, generator)
            if not stream.accept(token):
                break
            emb = lm.embed_tokens(torch.tensor([token], dtype=torch.long, device=lm.device)).unsqueeze(0)
            logits = forward(lm, emb, position_tensor(text_positions(pos, 1), lm.device), cache)
            pos += 1
        del cache
        return self.finish(prepared, stream)

    def finish(self, prepared: Prepared, stream: AnswerStream) -> Answer:
        """The answer and its metrics once ``stream`` ended."""
        state = self._cameras.get(prepared.camera)  # None when the camera was removed during the answer
        if state is not None:
            state.questions += 1
        pairs = state.pairs if state is not None else ()
        layout = state.layout if state is not None else None
        return finish_answer(prepared, stream, pairs, layout.n_visual if layout else 0)

    # -- figures ------------------------------------------------------------------------------------------------

    def camera_stats(self, camera: str) -> dict[str, Any]:
        state = self._state(camera)
        return {
            "encode_count": state.encode_count,
            "cache_valid": state.cache_valid,
            "context_version": state.version,
            "encoded_version": state.encoded_version,
            "pairs_in_context": len(state.pairs),
            "cached_pairs": len(state.vision),
            "vision_pairs_encoded": state.vision.pairs_encoded,
            "vision_calls": state.vision.tower_calls,
            "prefix_tokens": kv_length(state.kv),
            "prefix_rebuilds": state.rebuilds,
            "prefix_partial_rebuilds": state.partial_rebuilds,
            "prefix_extensions": state.extensions,
            "kv_bytes": kv_nbytes(state.kv),
            "vision_cache_bytes": state.vision.nbytes(),
            "questions": state.questions,
        }

    def prefix_kv(self, camera: str) -> KV | None:
        """The camera's shared prefix tensors (read-only; for tests and benchmarks)."""
        return self._state(camera).kv

    def stats(self) -> dict[str, Any]:
        gpu = {}
        if self.lm.device.type == "cuda":
            gpu = {
                "gpu_memory_allocated": torch.cuda.memory_allocated(self.lm.device),
                "gpu_memory_reserved": torch.cuda.memory_reserved(self.lm.device),
            }
        return {
            **gpu,
            "model": self.lm.model_id,
            "device": str(self.lm.device),
            "dtype": str(self.lm.dtype).removeprefix("torch."),
            "tiny_random_weights": self.lm.is_tiny_random,
            "cameras": {name: self.camera_stats(name) for name in self._cameras},
        }
