"""The engine core: per-camera contexts, the shared prefix KV cache, and answering questions.

A plain class with synchronous methods that tests call in-process; ``worker.EngineWorker`` owns the thread that
calls it. Nothing here is thread-safe: exactly one thread may use an EngineCore.

For each camera the core keeps the latest context the memory published (ordered pairs and a version), the
vision embeddings of those pairs, and a prefix KV cache built for one version. ``encode_many`` brings the
prefixes of several cameras up to date together with the least work (layout.plan_update decides what each
keeps; encoder.py runs one vision call and one prefill forward for all); ``encode`` is the one-camera case.
``ask`` answers one question on top of the prefix without modifying it: the question's and the answer's entries
live in a cache of their own and are dropped at the end. Each camera's encode lag (since when its prefix has not
held its newest context) is kept here, from the time the memory published the context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from livewatch.engine.answer import Answer, AnswerStream, Prepared, finish_answer, make_generator
from livewatch.engine.model.generate import (
    KV, cache_from_kv, forward, kv_length, kv_nbytes, model_failure, pick_token, position_tensor,
    stack_prefix,
)
from livewatch.engine.model.encoder import EncodeJob, Encoder, EncodeTimes
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.evidence import EvidenceRanker, evidence_list
from livewatch.engine.prompting.layout import PrefixLayout, UpdateKind, pair_layout, plan_update
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.prompting.positions import text_positions
from livewatch.engine.prompting.prompt import (ClientTextTokenizer, PromptTemplate, question_parts, resolve_tz, system_text,
                                     watch_question_parts)
from livewatch.engine.prompting.vision import VisionCache, shared_key
from livewatch.engine.model.watcheval import WatchQuery
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
    cameras: int = 1  # cameras encoded together in this batch (the times are the batch's)
    lag_s: float = 0.0  # from the first context this encode caught up with being published to its end


@dataclass
class EncodeBatch:
    """What ``encode_many`` did: a report per camera encoded, the failures, the cameras left for later."""

    reports: list[tuple[str, EncodeReport]] = field(default_factory=list)
    failed: list[tuple[str, EngineError]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


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
    stale_since: float | None = None  # time.monotonic() when the prefix stopped holding the newest context
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
        encode_graphs: bool = True,
        fused_kernels: bool = False,
        evidence_ranking: bool = True,
    ) -> None:
        self.lm = lm
        self.max_gap_s = max_gap_s
        self.tz = resolve_tz(timezone)
        self.max_new_tokens_limit = max_new_tokens_limit
        self.encoder = Encoder(lm, use_graphs=encode_graphs and lm.device.type == "cuda", vision_batch=vision_batch,
                               fused=fused_kernels and lm.device.type == "cuda")
        self.evidence_ranking = evidence_ranking  # rank each answer's frames by attention (one extra prefill)
        self.ranker = EvidenceRanker(lm)
        self.template = PromptTemplate.from_processor(lm.processor, "<|video_pad|>")
        self.client_text = ClientTextTokenizer(lm.tokenizer)
        self._cameras: dict[str, _CameraState] = {}
        self._generation = 0

    # -- contexts -----------------------------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        return list(self._cameras)

    def set_context(self, camera: str, pairs: Sequence[FramePair], version: int,
                    published_at: float | None = None) -> None:
        """Record the context the memory published for ``camera`` (at ``published_at``, time.monotonic(); now if
        not given); no model work happens here."""
        ordered = tuple(sorted({p.id: p for p in pairs}.values(), key=lambda p: (p.time, p.id)))
        state = self._cameras.get(camera)
        if state is None:
            state = _CameraState(camera, VisionCache())
            self._cameras[camera] = state
        if state.stale_since is None and version != state.encoded_version:
            state.stale_since = published_at if published_at is not None else time.monotonic()
        state.pairs = ordered
        state.version = version

    def stale_times(self) -> dict[str, float]:
        """The cameras whose prefix does not hold their newest context, with since when (time.monotonic())."""
        return {name: st.stale_since for name, st in self._cameras.items() if st.stale_since is not None}

    def encode_lag_s(self, camera: str) -> float:
        """How long the camera's prefix has not held its newest context (0 when it does)."""
        since = self._state(camera).stale_since
        return 0.0 if since is None else max(time.monotonic() - since, 0.0)

    def drop_camera(self, camera: str) -> None:
        self._cameras.pop(camera, None)
        if shared_key(camera) is None:  # a camera removed: its history pairs' embeddings go with it
            self.encoder.history.forget(camera)

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
        if state.encoded_version is not None and state.stale_since is None:
            state.stale_since = time.monotonic()
        state.encoded_version = None
        if self.lm.device.type == "cuda":
            torch.cuda.empty_cache()

    def layout_for(self, camera: str, pairs: Sequence[FramePair]) -> PrefixLayout:
        """The prefix layout of ``pairs`` (time-ordered) for ``camera``."""
        head_text = self.template.head(system_text(camera, pairs[0].time, self.tz))
        head = tuple(self.lm.tokenizer(head_text, add_special_tokens=False)["input_ids"])
        return pair_layout(head, pairs, self.lm.spec, self.lm.tokens_per_second, self.max_gap_s)

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
        batch = self.encode_many([camera])
        if batch.failed:
            raise batch.failed[0][1]
        return batch.reports[0][1]

    @contextmanager
    def guard(self, camera: str, doing: str) -> Iterator[None]:
        """Model failures inside the block fail this job only (EngineError) and free the camera's caches."""
        try:
            yield
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            self.free_caches(camera)
            raise model_failure(exc, f"{doing} on camera {camera!r}") from exc

    def encode_many(self, cameras: Sequence[str], token_budget: int | None = None) -> EncodeBatch:
        """Bring the prefixes of ``cameras`` up to date together (one vision call, one prefill forward).

        Cameras are taken in order while their new tokens fit ``token_budget`` (the first always); the rest are
        returned as ``deferred``. A model failure fails the cameras of this batch only (``failed``) and frees
        their caches; cameras without a context or already up to date are skipped."""
        batch = EncodeBatch()
        jobs: list[EncodeJob] = []
        states: list[_CameraState] = []
        tokens = 0
        for name in cameras:
            state = self._cameras.get(name)
            if state is None or not state.pairs or state.cache_valid:
                continue
            job = self._job(state)
            if jobs and token_budget is not None and tokens + job.tokens > token_budget:
                batch.deferred.append(name)
                continue
            jobs.append(job)
            states.append(state)
            tokens += job.tokens
        if not jobs:
            return batch
        t0 = time.perf_counter()
        try:
            work = [job for job in jobs if job.plan.kind is not UpdateKind.REUSE]
            prefixes, times = self.encoder.run(work) if work else ([], EncodeTimes(0.0, 0.0, 0))
            by_job = dict(zip(map(id, work), prefixes))
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            for state in states:
                self.free_caches(state.name)
            error = model_failure(exc, f"encoding {len(states)} camera(s)")
            batch.failed.extend((state.name, error) for state in states)
            return batch
        encode_ms = (time.perf_counter() - t0) * 1e3
        done_at = time.monotonic()
        for state, job in zip(states, jobs):
            lag = done_at - state.stale_since if state.stale_since is not None else 0.0
            self._install(state, job, by_job.get(id(job)))
            report = EncodeReport(
                kind=job.plan.kind, encode_ms=encode_ms, vision_ms=times.vision_ms, prefill_ms=times.prefill_ms,
                pairs_encoded=job.encoded, prefill_tokens=job.tokens, cameras=len(jobs), lag_s=lag,
            )
            state.last_encode = report
            batch.reports.append((state.name, report))
        return batch

    def _job(self, state: _CameraState) -> EncodeJob:
        layout = self.layout_for(state.name, state.pairs)
        plan = plan_update(state.layout if state.stacked is not None else None, layout)
        past = None
        if plan.first_new_slot >= 0 and state.stacked is not None and plan.keep_tokens:
            k, v = state.stacked
            past = (k[:, :, : plan.keep_tokens], v[:, :, : plan.keep_tokens])
        return EncodeJob(state.name, state.pairs, layout, plan, state.vision, past)

    def _install(self, state: _CameraState, job: EncodeJob, prefix: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        if prefix is not None:
            state.stacked = prefix
            k_all, v_all = prefix  # the per-layer tensors (transformers' cache layout) are views of the stacked ones
            state.kv = [(k_all[i].unsqueeze(0), v_all[i].unsqueeze(0)) for i in range(k_all.shape[0])]
            self._generation += 1
            state.kv_generation = self._generation
        state.layout = job.layout
        state.encoded_version = state.version
        state.stale_since = None
        state.encode_count += 1
        if job.plan.kind is UpdateKind.REBUILD:
            state.rebuilds += 1
        elif job.plan.kind is UpdateKind.EXTEND:
            state.extensions += 1
        elif job.plan.kind is UpdateKind.PARTIAL:
            state.partial_rebuilds += 1

    # -- questions ----------------------------------------------------------------------------------------------

    def question_ids(self, camera: str, question: str) -> list[int]:
        """Token ids of a question's suffix (from <|vision_end|> to the assistant turn) on the current context."""
        state = self._state(camera)
        first, last = state.pairs[0].time, state.pairs[-1].end_time
        n_frames = sum(p.n_frames for p in state.pairs)
        parts = question_parts(question, first, last, n_frames, self.tz)
        return self.client_text.ids(*self.template.tail_parts(parts))

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
            pairs=state.pairs,
            layout=state.layout,
            prefix=self.stacked_prefix(camera) if self.evidence_ranking else None,
        )

    def watch_query(self, camera: str, condition: str) -> WatchQuery:
        """A watch's yes/no question on the camera's current prefix (which must be up to date)."""
        state = self._state(camera)
        if not state.cache_valid or state.layout is None:
            raise RequestError(ErrorCode.NO_FRAMES, f"camera {camera!r} has no encoded context")
        # no frame-times sentence (~70 tokens of digits): the watch asks about the newest frames only
        suffix = self.client_text.ids(*self.template.tail_parts(watch_question_parts(condition)))
        return WatchQuery(camera, self.stacked_prefix(camera), state.layout.next_position, tuple(suffix))

    def encoded_version(self, camera: str) -> int | None:
        """The context version the camera's prefix holds, None unless it holds the newest."""
        state = self._cameras.get(camera)
        return state.version if state is not None and state.cache_valid else None

    def context_end(self, camera: str) -> tuple[int, float] | None:
        """(id, wall-clock time of its last frame) of the newest pair in the camera's context."""
        state = self._cameras.get(camera)
        if state is None or not state.pairs:
            return None
        newest = max(state.pairs, key=lambda p: p.end_time)
        return newest.id, newest.end_time

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
        """The answer, its metrics and its evidence (the pairs it saw, ranked by attention) once it ended."""
        state = self._cameras.get(prepared.camera)  # None when the camera was removed during the answer
        if state is not None:
            state.questions += 1
        shares = None
        if prepared.prefix is not None and stream.ids:
            try:
                shares = self.ranker.shares(prepared.camera, prepared.prefix, prepared.layout, prepared.suffix,
                                            stream.ids)
            except RuntimeError as exc:  # out of memory, say: the answer stands, unranked
                model_failure(exc, "ranking an answer's evidence")
        return finish_answer(prepared, stream, prepared.pairs, prepared.layout.n_visual if prepared.layout else 0,
                             evidence_list(prepared.camera, prepared.pairs, shares))

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
            "encode_lag_s": round(self.encode_lag_s(camera), 3),
            "prefix_tokens": kv_length(state.kv),
            "prefix_rebuilds": state.rebuilds,
            "prefix_partial_rebuilds": state.partial_rebuilds,
            "prefix_extensions": state.extensions,
            "kv_bytes": kv_nbytes(state.kv),
            "vision_cache_bytes": state.vision.nbytes(),
            "questions": state.questions,
        }

    def prefix_kv(self, camera: str) -> KV | None:  # read-only; for tests and benchmarks
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
            "encoder": self.encoder.describe(),
            "cameras": {name: self.camera_stats(name) for name in self._cameras},
        }
