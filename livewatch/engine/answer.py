"""One answer as it is decoded, shared by both decode paths (the unbatched reference and the batched fast path):
the question ready to run (``Prepared``), the stream of picked tokens with its stop rules and streamed text
(``AnswerStream``), the per-request sampler generator, and the finished ``Answer`` with its metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from livewatch.engine.detokenize import IncrementalDecoder
from livewatch.engine.generate import SamplingParams
from livewatch.engine.loading import LoadedModel
from livewatch.frames import FramePair


@dataclass(frozen=True)
class Prepared:
    """A question ready to run on a camera's up-to-date prefix."""

    camera: str
    suffix: list[int]  # the question's token ids, from <|vision_end|> to the assistant turn
    next_position: int  # M-RoPE position of the first suffix token
    prefix_tokens: int
    kv_generation: int
    reused: bool  # the prefix was ready when the question came
    encode_ms: float
    t_start: float
    # what the answer sees, kept for its evidence even if the camera's prefix moves on meanwhile
    pairs: tuple[FramePair, ...] = ()
    layout: Any = None  # PrefixLayout
    prefix: Any = field(default=None, repr=False)  # the stacked (k, v) prefix


@dataclass(frozen=True)
class Answer:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" (end-of-turn token) or "length"
    metrics: dict[str, Any]
    evidence: list[dict[str, Any]] = field(default_factory=list)  # the frames in context, relied-on first


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.temperature == 0:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(params.seed if params.seed is not None else int(time.time_ns() & 0xFFFFFFFF))
    return generator


class AnswerStream:
    """One answer's tokens as they are picked: stop rules, streaming text, first-token time."""

    def __init__(self, lm: LoadedModel, params: SamplingParams, on_text: Callable[[str], None] | None) -> None:
        self._stops = lm.stop_token_ids
        self._params = params
        self._on_text = on_text
        self._decoder = IncrementalDecoder(lm.tokenizer)
        self._pieces: list[str] = []
        self.ids: list[int] = []
        self.finish_reason = "length"
        self.t_first: float | None = None

    def accept(self, token: int) -> bool:
        """Take a picked token; False when the answer is complete (end-of-turn token or length)."""
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token in self._stops and not self._params.ignore_eos:
            self.finish_reason = "stop"
            return False
        self.ids.append(token)
        self._emit(self._decoder.push(token))
        return len(self.ids) < self._params.max_new_tokens

    def close(self) -> None:
        self._emit(self._decoder.flush())

    def _emit(self, delta: str) -> None:
        if delta:
            self._pieces.append(delta)
            if self._on_text is not None:
                self._on_text(delta)

    @property
    def text(self) -> str:
        return "".join(self._pieces)


def finish_answer(prepared: Prepared, stream: AnswerStream, pairs: Sequence[FramePair], visual_tokens: int,
                  evidence: list[dict[str, Any]] | None = None) -> Answer:
    """Close ``stream`` and build the answer with its metrics (README "WebSocket protocol" lists them)."""
    stream.close()
    t_end = time.perf_counter()
    ids = stream.ids
    t_first = stream.t_first or t_end
    decode_s = t_end - t_first
    metrics = {
        "ttft_ms": round((t_first - prepared.t_start) * 1e3, 3),
        "encode_ms": round(prepared.encode_ms, 3),
        "total_ms": round((t_end - prepared.t_start) * 1e3, 3),
        "output_tokens": len(ids),
        "decode_tokens_per_s": round((len(ids) - 1) / decode_s, 2) if len(ids) > 1 and decode_s > 0 else 0.0,
        "visual_tokens": visual_tokens,
        "context_tokens": prepared.prefix_tokens + len(prepared.suffix),
        "question_tokens": len(prepared.suffix),
        "frames_in_context": sum(p.n_frames for p in pairs),
        "video_span_s": round(pairs[-1].end_time - pairs[0].time, 3) if pairs else 0.0,
        "cache_reused": prepared.reused,
        "finish_reason": stream.finish_reason,
    }
    return Answer(text=stream.text, token_ids=tuple(ids), finish_reason=stream.finish_reason, metrics=metrics,
                  evidence=evidence or [])
