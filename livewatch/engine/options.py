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
