"""The engine's plain request and result types, free of torch: the front of a cluster, the server and the watch
manager use them without loading the model's stack (checked by tests/test_layout.py)."""

from __future__ import annotations

from dataclasses import dataclass


class TemporaryContext(str):
    """The name of a context that is not a camera's live one (a history question's, a find chunk's): it reads and
    fills the camera's shared history embeddings (engine/prompting/vision.py) and never touches its live prefix. Used as a
    plain string key by the engine; its text ("door (history 3)") has a space, which no camera name has."""

    camera: str

    def __new__(cls, camera: str, purpose: str, number: int) -> TemporaryContext:
        context = super().__new__(cls, f"{camera} ({purpose} {number})")
        context.camera = camera
        return context


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always produce max_new_tokens
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings (not included in its text)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("temperature >= 0, 0 < top_p <= 1 and top_k >= 0 are required")


@dataclass(frozen=True)
class WatchResult:
    """One watch evaluated on one prefix version of its camera."""

    camera: str
    watch: str
    probability: float  # P(yes)
    frame_id: int  # the newest pair in the context evaluated (the evidence frame)
    frame_time: float  # wall-clock capture time of its last frame
    version: int  # the camera's context version evaluated
    eval_ms: float  # the whole batch's evaluation time (shared by the watches of that step)
    condition: str = ""  # the condition evaluated (a watch replaced meanwhile must not take this result)
