"""The prompt around the video, rendered through the model's own chat template.

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|vision_start|>   <- head (in the shared prefix)
    [video tokens, pair by pair]                                                  <- in the shared prefix
    <|vision_end|>{frame times}\n{question}<|im_end|>\n<|im_start|>assistant\n   <- suffix (one question's)

The system text names the camera and the wall-clock time of the first frame in context; the suffix states the
first and last frame times. The last frame time lives in the suffix so that an append-only batch can extend the
shared prefix in place (the head stays byte-identical while the oldest pair stays).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from livewatch.errors import ErrorCode, RequestError

_SENTINEL = "\x00LIVEWATCH_QUESTION\x00"


def resolve_tz(name: str) -> tzinfo | None:
    """None means the machine's local zone."""
    return None if name == "local" else ZoneInfo(name)


def iso_time(t: float, tz: tzinfo | None) -> str:
    dt = datetime.fromtimestamp(t, tz) if tz is not None else datetime.fromtimestamp(t).astimezone()
    return dt.isoformat(timespec="seconds")


def system_text(camera: str, first: float, tz: tzinfo | None) -> str:
    return (
        f'You are livewatch, an assistant watching the live camera "{camera}". The video shows frames sampled '
        f"from it in time order, from {iso_time(first, tz)} onwards; its time axis follows the real times at "
        f"which the frames were taken. Answer questions about what the camera shows."
    )


def question_parts(question: str, first: float, last: float, n_frames: int,
                   tz: tzinfo | None) -> tuple[str, str, str]:
    """A question's user text as (ours before, the client's, ours after)."""
    return (f"The video holds {n_frames} frames taken from {iso_time(first, tz)} to {iso_time(last, tz)}.\n",
            question, "")


def question_text(question: str, first: float, last: float, n_frames: int, tz: tzinfo | None) -> str:
    return "".join(question_parts(question, first, last, n_frames, tz))


def watch_question_parts(condition: str) -> tuple[str, str, str]:
    """The fixed yes/no question of a watch (its answer is read from the first answer position's logits), as
    (ours before, the client's condition, ours after). It is the whole suffix after the video: a watch is about
    the newest frames, so it skips the frame-times sentence of questions (about 70 of the suffix's 130 tokens:
    the cost of a watch is its suffix's length)."""
    return ('Look at the most recent frames. Is the following true right now: "', condition,
            '"? Answer with one word, yes or no.')


def watch_question(condition: str) -> str:
    return "".join(watch_question_parts(condition))


class ClientTextTokenizer:
    """Token ids of a prompt piece that holds a client's text, such that the client's text never yields one of the
    tokenizer's added tokens (``<|im_end|>``, ``<|video_pad|>``, and also Qwen's non-special ``<tool_call>`` and
    ``<|fim_*|>``, which ``split_special_tokens`` would still match): typed into a question, a watch condition, a
    find query or an OpenAI message, they would end the user's turn or forge a system turn or a video slot.

    Text without any added token's string is tokenized whole, exactly as before (the common case; the engine's
    reference tests compare against a whole-prompt tokenization). Otherwise our parts and the client's are
    tokenized apart and every added token's string in the client's part is split after its first character, so
    it is read as the plain characters it is. Either way the count of added tokens must be our parts' own, or the
    request is refused. Look-alikes (fullwidth brackets) are plain text to the tokenizer already."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        added = tokenizer.get_added_vocab()
        self.added_ids = frozenset(added.values())
        self._pattern = (re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)))
                         if added else None)

    def ids(self, ours_before: str, client: str, ours_after: str) -> list[int]:
        if self._pattern is None:
            return self._encode(ours_before + client + ours_after)
        if self._pattern.search(client) is None:
            ids = self._encode(ours_before + client + ours_after)
        else:
            ids = self._encode(ours_before) + self._plain(client) + self._encode(ours_after)
        expected = len(self._pattern.findall(ours_before)) + len(self._pattern.findall(ours_after))
        if sum(1 for i in ids if i in self.added_ids) != expected:
            raise RequestError(ErrorCode.BAD_REQUEST, "the text cannot be read as plain text")
        return ids

    def _plain(self, text: str) -> list[int]:
        assert self._pattern is not None
        out: list[int] = []
        pos = 0
        for match in self._pattern.finditer(text):
            token = match.group()
            out += self._encode(text[pos:match.start()]) + self._encode(token[:1]) + self._encode(token[1:])
            pos = match.end()
        return out + self._encode(text[pos:])

    def _encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"]) if text else []


@dataclass(frozen=True)
class PromptTemplate:
    """The chat template split around the video: ``head`` ends with <|vision_start|>, ``tail`` starts with
    <|vision_end|> and holds the question slot."""

    head_format: str
    tail_format: str

    @classmethod
    def from_processor(cls, processor, video_token: str) -> PromptTemplate:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": "\x00SYSTEM\x00"}]},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": _SENTINEL}]},
        ]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(video_token) != 1 or _SENTINEL not in text:
            raise ValueError("the model's chat template does not render one video followed by the question")
        head, tail = text.split(video_token)
        return cls(head_format=head, tail_format=tail)

    def head(self, system: str) -> str:
        return self.head_format.replace("\x00SYSTEM\x00", system)

    def tail(self, user_text: str) -> str:
        return self.tail_format.replace(_SENTINEL, user_text)

    def tail_parts(self, parts: tuple[str, str, str]) -> tuple[str, str, str]:
        """(ours before, the client's, ours after) of a user text, widened to the whole tail."""
        before, after = self.tail_format.split(_SENTINEL)
        return before + parts[0], parts[1], parts[2] + after
