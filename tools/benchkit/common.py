"""What every bench section shares: the run's sizes, timing, peak memory, the model, the frames, one question.

Timing: ``Clock.now()`` synchronises the device first, so a figure is the work's, not its launch's. Answers have a
fixed length (end-of-turn ignored) so runs compare. Figures that depend on the machine are labelled with it
(``machine``). Frames are synthesised with numpy (``livewatch.engine.synthetic``, the warm-up's and the tests'
maker), so a run needs only torch, transformers and torchvision.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from livewatch.engine.answer import Answer
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import LoadedModel, load_model, wrap_model
from livewatch.engine.scheduling.loop import EngineLoop, answer_now, answer_of
from livewatch.engine.prompting.preprocess import patchify
from livewatch.engine.synthetic import FrameBank
from livewatch.frames import FramePair

QUESTION = "What happened in the last minute, and is anyone at the door now?"
T_END = 1_780_000_000.0


@dataclass(frozen=True)
class Plan:
    proto_frames: int
    proto_size: tuple[int, int]
    answer_tokens: int
    star_pairs: int
    window_pairs: int
    frame_size: tuple[int, int]
    scaling_frames: tuple[int, ...]
    scaling_cameras: tuple[int, ...]
    ingest_seconds: float
    repeats: int
    capacity_cameras: tuple[int, ...] = (32, 64, 96, 128)  # the capacity section's camera counts
    capacity_slack: int = 3  # window slack (pairs) of its runs, as the default config.toml
    capacity_no_slack: tuple[int, ...] = (64,)  # camera counts run again without slack, for its effect
    capacity_seconds: float = 12.0  # real-time feeding per camera count
    capacity_ask_every_s: float = 0.5  # a question this often on average during the feeding
    capacity_prototype: tuple[int, ...] = (8, 16)  # camera counts of the prototype's method
    watch_counts: tuple[int, ...] = (1, 16, 64, 256)  # watches evaluated at once (watches section)
    watch_cameras: tuple[int, ...] = (16, 32, 64, 96)  # watched cameras at 1 fps, 2 watches each
    history_seconds: float = 3600.0  # the history section's range (an hour at 1 fps)


FULL = Plan(48, (1092, 1932), 256, 10, 10, (1080, 1920), (20, 40, 80, 160), (1, 4, 16), 10.0, 5)
TINY = Plan(8, (336, 588), 32, 3, 3, (1080, 1920), (8, 16), (1, 2), 2.0, 2, (1, 2), 1, (2,), 4.0, 1.0, (1,), (1, 4),
            (1, 2), 64.0)


# -- timing and memory ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return None


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


# -- frames -----------------------------------------------------------------------------------------------------


def context_pairs(bank: FrameBank, star: int, window: int, first_id: int = 0) -> list[FramePair]:
    """``star`` pairs spread over the last 10 minutes, then ``window`` pairs in the last seconds (1 fps)."""
    pairs = []
    for i in range(star):
        pairs.append(bank.pair(first_id + i, T_END - 600 + i * (540 / max(star, 1))))
    for i in range(window):
        pairs.append(bank.pair(first_id + star + i, T_END - 2 * (window - i)))
    return pairs


# -- model ------------------------------------------------------------------------------------------------------


def build_model(args: argparse.Namespace) -> LoadedModel:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "bfloat16": torch.bfloat16,
             "float32": torch.float32, "float16": torch.float16}[args.dtype]
    if args.model:
        return load_model(args.model, str(device), str(dtype).removeprefix("torch."), args.attn)
    import make_tiny_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    processor, ids = make_tiny_model.build_processor()
    config = make_tiny_model.model_config(ids, args.arch)
    config._attn_implementation = args.attn
    config.text_config._attn_implementation = args.attn
    config.vision_config._attn_implementation = args.attn
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = [ids["<|im_end|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return wrap_model(f"random-weights {args.arch}", model, processor, 3136, args.max_pixels, is_tiny_random=True)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def machine(lm: LoadedModel) -> dict[str, Any]:
    import transformers

    dev = lm.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(dev), "device_name": name, "dtype": str(lm.dtype).removeprefix("torch."),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu": f"{os.cpu_count()} cores {platform.machine()}", "python": platform.python_version(),
    }


@torch.inference_mode()
def warm_up(lm: LoadedModel, bank: FrameBank) -> None:
    """Module loading, kernel selection and allocator growth stay out of every timed figure."""
    core = EngineCore(lm, timezone="UTC")
    core.set_context("warm", context_pairs(bank, 1, 2), 1)
    core.ask("warm", QUESTION, SamplingParams(max_new_tokens=4, ignore_eos=True))
    rows, grid = patchify(np.stack([bank.images[0][:224, :392], bank.images[1][:224, :392]]), lm.spec)
    lm.visual(rows.to(lm.device, lm.dtype), grid_thw=torch.tensor([grid], device=lm.device))
    del core
    free(lm.device)


# -- asking -----------------------------------------------------------------------------------------------------


def ask(core: EngineCore, camera: str, tokens: int) -> dict[str, Any]:
    """The metrics of one fixed-length answer through the eager, unbatched path (EngineCore.ask)."""
    return core.ask(camera, QUESTION, SamplingParams(max_new_tokens=tokens, ignore_eos=True)).metrics


def fast_answer(core: EngineCore, dec: BatchDecoder, camera: str, tokens: int, t0: float | None = None,
                question: str = QUESTION) -> Answer:
    """One question through the daemon's own engine step (EngineLoop), alone."""
    params = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
    return answer_of(answer_now(EngineLoop(core, dec), camera, question, params, received_at=t0))
