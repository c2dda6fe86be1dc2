"""The prompt around the video, rendered through the model's own chat template.

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|vision_start|>   <- head (in the shared prefix)
    [video tokens, pair by pair]                                                  <- in the shared prefix
    <|vision_end|>{frame times}\n{question}<|im_end|>\n<|im_start|>assistant\n   <- suffix (one question's)

The system text names the camera and the wall-clock time of the first frame in context; the suffix states the
first and last frame times. The last frame time lives in the suffix so that an append-only batch can extend the
shared prefix in place (the head stays byte-identical while the oldest pair stays).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

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


def question_text(question: str, first: float, last: float, n_frames: int, tz: tzinfo | None) -> str:
    return (
        f"The video holds {n_frames} frames taken from {iso_time(first, tz)} to {iso_time(last, tz)}.\n"
        f"{question}"
    )


def watch_question(condition: str) -> str:
    """The fixed yes/no question of a watch (its answer is read from the first answer position's logits). It is
    the whole suffix after the video: a watch is about the newest frames, so it skips the frame-times sentence
    of questions (about 70 of the suffix's 130 tokens: the cost of a watch is its suffix's length)."""
    return (
        f'Look at the most recent frames. Is the following true right now: "{condition}"? '
        f"Answer with one word, yes or no."
    )


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
