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

from livewatch.engine.prompting.detokenize import IncrementalDecoder
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel
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
    """One answer's tokens as they are picked: stop rules, streaming text, first-token time.

    Stop strings (``params.stop``): streamed text is held back while its end could still be the start of one, so
    a client never sees part of a stop string; the answer ends before the first one found.
    """

    def __init__(self, lm: LoadedModel, params: SamplingParams, on_text: Callable[[str], None] | None) -> None:
        self._stops = lm.stop_token_ids
        self._params = params
        self._on_text = on_text
        self._decoder = IncrementalDecoder(lm.tokenizer)
        self._pieces: list[str] = []
        self._stop = StopFilter(params.stop)
        self.ids: list[int] = []
        self.finish_reason = "length"
        self.t_first: float | None = None

    def accept(self, token: int) -> bool:
        """Take a picked token; False when the answer is complete (end-of-turn token, stop string or length)."""
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token in self._stops and not self._params.ignore_eos:
            self.finish_reason = "stop"
            return False
        self.ids.append(token)
        self._emit(self._stop.push(self._decoder.push(token)))
        if self._stop.stopped:
            self.finish_reason = "stop"
            return False
        return len(self.ids) < self._params.max_new_tokens

    def close(self) -> None:
        self._emit(self._stop.push(self._decoder.flush()))
        self._emit(self._stop.flush())

    def _emit(self, delta: str) -> None:
        if delta:
            self._pieces.append(delta)
            if self._on_text is not None:
                self._on_text(delta)

    @property
    def text(self) -> str:
        return "".join(self._pieces)


class StopFilter:
    """Streamed text with stop strings: ``push`` gives what may be shown now, holding back any end that could
    begin a stop string; after a stop string (``stopped``) nothing more is shown."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.stopped = False
        self._held = ""

    def push(self, delta: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else delta
        text = self._held + delta
        cut = split_at_stop(text, self.stops)
        if cut is not None:
            self.stopped, self._held = True, ""
            return text[:cut]
        keep = stop_prefix_length(text, self.stops)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The answer ended without a stop string: what was held back."""
        held, self._held = self._held, ""
        return held


def split_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where ``text`` ends before the stop string that completes first, or None when it holds none. Reading the
    text one character at a time would stop at the same place, so the cut does not depend on how the detokenizer
    split the text into pieces (in "aba" with stops "b" and "aba", "b" completes first: the text is "a")."""
    ends = [i + len(s) for s in stops if (i := text.find(s)) >= 0]
    if not ends:
        return None
    end = min(ends)
    return end - max(len(s) for s in stops if text.endswith(s, 0, end))


def stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of ``text`` that begins one of ``stops`` (what must be held back)."""
    for n in range(min(len(text), max(map(len, stops)) - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stops):
            return n
    return 0


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
