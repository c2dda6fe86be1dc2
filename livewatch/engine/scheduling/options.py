"""How the engine thread runs: the options the configuration hands the worker (``Settings.engine_options``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EngineOptions:
    encode_mode: Literal["lazy", "eager"] = "lazy"  # eager: encode as each frame batch lands
    max_queued: int = 32  # questions waiting for a decode slot; more get RequestError(BUSY)
    slots: int = 8  # answers decoded together
    max_len: int = 4096  # tokens per decode slot: prefix + question + answer
    cuda_graphs: bool = True  # capture the decode path on a GPU
    fused_kernels: bool = True  # Triton kernels in the GPU decode step (checked at start-up)
    warm_up: bool = True  # a synthetic camera through every path before the daemon reports ready
    encode_batch: int = 16  # cameras' prefix updates run together in one encode step (eager mode)
    encode_gather_s: float = 0.25  # eager encodes wait this long for other cameras' to run in the same step
    encode_step_tokens: int = 4096  # new prefix tokens one encode step computes at most (questions wait behind it)
    watch_batch: int = 32  # watch evaluations one step runs at most (questions wait behind it)
    lag_warning_s: float = 10.0  # log engine.encode_lagging when a camera's prefix is this far behind its frames
