#!/usr/bin/env python3
"""livewatch against the prototype's method, side by side, in one run.

    python tools/bench.py --tiny [--out DIR]                                # CPU smoke run, tiny random model
    python tools/bench.py --arch qwen2.5-vl-3b --random-weights [--out DIR] # the real 3B architecture, random weights
    python tools/bench.py --model DIR_OR_ID [--out DIR]                     # a real checkpoint

Sections (each in the JSON; the markdown table summarises):
  ceilings    the card's measured bf16 (fp32 on CPU) matmul rate and device copy bandwidth
  prototype   the prototype's method: all frames re-encoded at native 1092x1932 for the first question after a
              batch (grid 24x78x138 = 64,584 visual tokens for 48 frames), answered with HF generate
  livewatch   20 star + 20 window frames at the default pixel cap: eager (prefix ready) and lazy (first question
              after a new batch) time to first token, follow-up on the reused prefix, decode rate, a whole answer
  scaling     latency vs frames in context and vs cameras sharing the model; vision time per pair (batched and
              alone); prefix rebuild vs partial rebuild vs extension; KV bytes per camera
  ingest      CPU seconds per camera-second of a 1080p30 H.264 stream sampled at 1 fps (full decode vs livewatch's
              skipping path), importance scoring and frame-store writes per pair (needs PyAV)
  floors      each measured figure against its physical floor (decode: LLM weight bytes / bandwidth; prefill and
              vision: FLOPs / matmul rate)
Answers have a fixed length (end-of-turn ignored) so runs compare. Figures that depend on the machine are labelled
with it. Runs where only torch, transformers and torchvision are installed: frames are synthesised with numpy;
PyAV (ingest) is optional.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from livewatch.engine.batch import BatchDecoder  # noqa: E402
from livewatch.engine.core import Answer, EngineCore  # noqa: E402
from livewatch.engine.generate import SamplingParams  # noqa: E402
from livewatch.engine.loading import LoadedModel, load_model, wrap_model  # noqa: E402
from livewatch.engine.preprocess import patchify, target_size  # noqa: E402
from livewatch.engine.vision import VisionCache  # noqa: E402
from livewatch.frames import Frame, FramePair  # noqa: E402

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


FULL = Plan(48, (1092, 1932), 256, 10, 10, (1080, 1920), (20, 40, 80, 160), (1, 4, 16), 10.0, 5)
TINY = Plan(8, (336, 588), 32, 3, 3, (1080, 1920), (8, 16), (1, 2), 2.0, 2)


# -- utilities --------------------------------------------------------------------------------------------------


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


def synth_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A 'scene' with structure and noise: gradients, a moving block, sensor noise (not zeros, not pure noise)."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    xx = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 3), dtype=np.float32)
    img[..., 0] = xx * 0.8 + (seed * 13) % 60
    img[..., 1] = yy * 0.7 + (seed * 7) % 50
    img[..., 2] = (xx + yy) * 0.3
    s = h // 5
    y0, x0 = (seed * 37) % (h - s), (seed * 91) % (w - s)
    img[y0 : y0 + s, x0 : x0 + s] = 240
    img += rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


class FrameBank:
    """A few distinct synthetic frames reused by many pairs (keeps host memory small for 160-frame contexts)."""

    def __init__(self, size: tuple[int, int], n: int = 16) -> None:
        self.images = [synth_image(i, size) for i in range(n)]

    def pair(self, pid: int, t: float) -> FramePair:
        a = self.images[(2 * pid) % len(self.images)]
        b = self.images[(2 * pid + 1) % len(self.images)]
        return FramePair(pid, Frame(2 * pid, t, t, a), Frame(2 * pid + 1, t + 1.0, t + 1.0, b))


def context_pairs(bank: FrameBank, star: int, window: int, first_id: int = 0) -> list[FramePair]:
    """``star`` pairs spread over the last 10 minutes, then ``window`` pairs in the last seconds (1 fps)."""
    pairs = []
    for i in range(star):
        pairs.append(bank.pair(first_id + i, T_END - 600 + i * (540 / max(star, 1))))
    for i in range(window):
        pairs.append(bank.pair(first_id + star + i, T_END - 2 * (window - i)))
    return pairs


# -- model --------------------------------------------------------------------------------------------------------


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


# -- sections -----------------------------------------------------------------------------------------------------


def ceilings(device: torch.device, tiny: bool) -> dict[str, Any]:
    clock = Clock(device)
    n = 1024 if tiny or device.type == "cpu" else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5 if tiny else 20):
        t0 = clock.now()
        a @ b
        times.append(clock.now() - t0)
    flops = 2 * n**3 / statistics.median(times)
    size = (64 if tiny or device.type == "cpu" else 2048) * 2**20
    src = torch.empty(size, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(5 if tiny else 20):
        t0 = clock.now()
        dst.copy_(src)
        times.append(clock.now() - t0)
    bandwidth = 2 * size / statistics.median(times)  # bytes read + bytes written
    del a, b, src, dst
    free(device)
    return {"matmul_tflops": round(flops / 1e12, 2), "matmul_dtype": str(dtype).removeprefix("torch."),
            "copy_gbps": round(bandwidth / 1e9, 1)}


@torch.inference_mode()
def prototype(lm: LoadedModel, core: EngineCore, plan: Plan) -> dict[str, Any]:
    """All frames re-encoded at native size for the first question after a batch, then HF generate."""
    clock = Clock(lm.device)
    model = lm.model
    frames = np.stack([synth_image(100 + i, plan.proto_size) for i in range(plan.proto_frames)])
    rows, grid = patchify(frames, lm.spec)
    n_visual = grid[0] * grid[1] * grid[2] // 4
    head = lm.tokenizer(core.template.head("You are a helpful assistant."), add_special_tokens=False)["input_ids"]
    tail = lm.tokenizer(core.template.tail(QUESTION), add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([head + [lm.video_token_id] * n_visual + tail], device=lm.device)
    pixels = rows.to(lm.device, lm.dtype)
    grid_t = torch.tensor([grid], device=lm.device)
    spg = torch.tensor([2.0], device=lm.device)  # 1 fps sampling: 2 s per temporal grid
    del frames, rows
    peak_reset(lm.device)

    t0 = clock.now()
    model.model.visual(pixels, grid_thw=grid_t)
    vision_s = clock.now() - t0
    t0 = clock.now()
    model(input_ids=input_ids, pixel_values_videos=pixels, video_grid_thw=grid_t, second_per_grid_ts=spg,
          use_cache=True, logits_to_keep=1)
    ttft_s = clock.now() - t0
    free(lm.device)
    n = plan.answer_tokens
    t0 = clock.now()
    out = model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values_videos=pixels,
        video_grid_thw=grid_t, second_per_grid_ts=spg, max_new_tokens=n, min_new_tokens=n, do_sample=False,
    )
    total_s = clock.now() - t0
    produced = int(out.shape[1] - input_ids.shape[1])
    decode_s = max(total_s - ttft_s, 1e-9)
    result = {
        "frames": plan.proto_frames,
        "frame_size": f"{plan.proto_size[1]}x{plan.proto_size[0]}",
        "grid_thw": list(grid),
        "visual_tokens": n_visual,
        "context_tokens": int(input_ids.shape[1]),
        "vision_ms": round(vision_s * 1e3, 1),
        "ttft_ms": round(ttft_s * 1e3, 1),
        "answer_tokens": produced,
        "answer_total_ms": round(total_s * 1e3, 1),
        "decode_tokens_per_s": round((produced - 1) / decode_s, 2),
        "peak_gib": peak_gib(lm.device),
    }
    del out, input_ids, pixels
    free(lm.device)
    return result


def _ask(core: EngineCore, camera: str, tokens: int) -> dict[str, Any]:
    return core.ask(camera, QUESTION, SamplingParams(max_new_tokens=tokens, ignore_eos=True)).metrics


def _scenario(core: EngineCore, plan: Plan, bank: FrameBank, ask) -> dict[str, Any]:
    """The question scenario both decode paths run: the prefix built as the batch lands (eager mode), a question
    on the ready prefix, follow-ups, a whole answer, then new batches each followed by a question (lazy mode:
    one pair lands, the oldest window pair leaves, as at 1 fps in steady state). ``ask(tokens)`` returns the
    metrics of one question on camera "cam"."""
    stars = context_pairs(bank, plan.star_pairs, 0)
    window = context_pairs(bank, 0, plan.window_pairs, first_id=plan.star_pairs)
    core.set_context("cam", stars + window, 1)
    build = core.encode("cam")
    ready = ask(1)
    followups = [ask(1)["ttft_ms"] for _ in range(plan.repeats)]
    answer = ask(plan.answer_tokens)
    lazy = []
    next_id = plan.star_pairs + plan.window_pairs
    for version in range(2, 2 + plan.repeats):
        window = window[1:] + [bank.pair(next_id, window[-1].time + 2.0)]
        next_id += 1
        core.set_context("cam", stars + window, version)
        lazy.append(ask(1))
    return {
        "frames_in_context": answer["frames_in_context"],
        "visual_tokens": answer["visual_tokens"],
        "context_tokens": answer["context_tokens"],
        "prefix_build_ms": round(build.encode_ms, 1),
        "prefix_build_vision_ms": round(build.vision_ms, 1),
        "prefix_build_prefill_ms": round(build.prefill_ms, 1),
        "eager_ttft_ms": ready["ttft_ms"],
        "followup_ttft_ms": median(followups),
        "lazy_first_question_ttft_ms": median([m["ttft_ms"] for m in lazy]),
        "lazy_encode_ms": median([m["encode_ms"] for m in lazy]),
        "answer_tokens": answer["output_tokens"],
        "answer_total_ms": answer["total_ms"],
        "decode_tokens_per_s": answer["decode_tokens_per_s"],
        "kv_bytes": core.camera_stats("cam")["kv_bytes"],
    }


@torch.inference_mode()
def livewatch_section(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """The eager, unbatched path (EngineCore.ask)."""
    peak_reset(lm.device)
    core = EngineCore(lm, timezone="UTC")
    result = _scenario(core, plan, bank, lambda tokens: _ask(core, "cam", tokens))
    result["peak_gib"] = peak_gib(lm.device)
    del core
    free(lm.device)
    return result


@torch.inference_mode()
def scaling(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    clock = Clock(lm.device)
    out: dict[str, Any] = {"frames": [], "cameras": []}
    for n_frames in plan.scaling_frames:
        pairs = n_frames // 2
        core = EngineCore(lm, timezone="UTC", max_gap_s=600)
        core.set_context("cam", context_pairs(bank, pairs // 2, pairs - pairs // 2), 1)
        build = core.encode("cam")
        ttfts = [_ask(core, "cam", 1)["ttft_ms"] for _ in range(plan.repeats)]
        answer = _ask(core, "cam", min(64, plan.answer_tokens))
        out["frames"].append({
            "frames": n_frames, "visual_tokens": answer["visual_tokens"], "prefix_build_ms": round(build.encode_ms, 1),
            "followup_ttft_ms": median(ttfts), "decode_tokens_per_s": answer["decode_tokens_per_s"],
            "kv_bytes": core.camera_stats("cam")["kv_bytes"],
        })
        del core
        free(lm.device)

    # vision per pair: one call for a batch of pairs, and one call per pair
    batch = context_pairs(bank, 0, 20 if plan is FULL else 4, first_id=1000)
    vc = VisionCache(lm.visual, lm.spec, lm.device, max_batch=64)
    vc.ensure(batch[:2])
    vc.clear()
    t0 = clock.now()
    vc.ensure(batch)
    batched = (clock.now() - t0) / len(batch)
    vc.clear()
    singles = []
    for pair in batch[:5]:
        t0 = clock.now()
        vc.ensure([pair])
        singles.append(clock.now() - t0)
    out["vision_ms_per_pair_batched"] = round(batched * 1e3, 2)
    out["vision_ms_per_pair_alone"] = round(statistics.median(singles) * 1e3, 2)
    out["vision_batch_pairs"] = len(batch)
    del vc

    # prefix maintenance, prefill only (vision embeddings cached)
    core = EngineCore(lm, timezone="UTC")
    stars = context_pairs(bank, plan.star_pairs, 0)
    window = context_pairs(bank, 0, plan.window_pairs, first_id=plan.star_pairs)
    core.set_context("cam", stars + window[:-1], 1)
    core.encode("cam")
    t0 = clock.now()
    core.set_context("cam", stars + window, 2)
    extend = core.encode("cam")
    t_extend = clock.now() - t0
    core.set_context("cam", stars + window[1:] + [bank.pair(500, window[-1].time + 2)], 3)
    t0 = clock.now()
    partial = core.encode("cam")
    t_partial = clock.now() - t0
    state = core._cameras["cam"]
    state.kv, state.layout, state.encoded_version = None, None, None
    t0 = clock.now()
    rebuild = core.encode("cam")
    t_rebuild = clock.now() - t0
    out["prefix_extension_ms"] = round(t_extend * 1e3, 1)
    out["prefix_partial_rebuild_ms"] = round(t_partial * 1e3, 1)
    out["prefix_full_rebuild_ms"] = round(t_rebuild * 1e3, 1)
    out["prefix_update_kinds"] = [extend.kind.value, partial.kind.value, rebuild.kind.value]
    del core
    free(lm.device)

    for n_cams in plan.scaling_cameras:
        peak_reset(lm.device)
        core = EngineCore(lm, timezone="UTC")
        for c in range(n_cams):
            core.set_context(f"cam{c}", context_pairs(bank, plan.star_pairs, plan.window_pairs, first_id=10_000 * c), 1)
        t0 = clock.now()
        for c in range(n_cams):
            core.encode(f"cam{c}")
        encode_all = clock.now() - t0
        ttfts = [_ask(core, f"cam{c}", 1)["ttft_ms"] for c in range(n_cams)]
        kv = [core.camera_stats(f"cam{c}")["kv_bytes"] for c in range(n_cams)]
        out["cameras"].append({
            "cameras": n_cams, "encode_all_ms": round(encode_all * 1e3, 1), "followup_ttft_ms": median(ttfts),
            "kv_bytes_per_camera": int(statistics.mean(kv)), "peak_gib": peak_gib(lm.device),
        })
        del core
        free(lm.device)
    return out


def _fast_answer(core: EngineCore, dec: BatchDecoder, camera: str, tokens: int, t0: float | None = None,
                 question: str = QUESTION) -> Answer:
    prepared = core.prepare(camera, question, tokens, received_at=t0)
    out = dec.admit(camera, prepared, SamplingParams(max_new_tokens=tokens, ignore_eos=True), None, lambda: False)
    while out is None:
        ended = dec.step()
        out = ended[0] if ended else None
    return out.answer


@torch.inference_mode()
def agreement(core: EngineCore, dec: BatchDecoder, plan: Plan) -> tuple[dict[str, Any], Any]:
    """Greedy tokens and first-token logits of the fast path against the eager path, same prompt."""
    lm = core.lm
    n_agree = 64 if plan is FULL else 16
    fast_ids = _fast_answer(core, dec, "cam", n_agree, question="Describe the scene.").token_ids
    eager_ids = core.ask("cam", "Describe the scene.",
                         SamplingParams(max_new_tokens=n_agree, ignore_eos=True)).token_ids
    same_prefix = next((i for i, (a, b) in enumerate(zip(fast_ids, eager_ids)) if a != b), len(fast_ids))
    matches = sum(a == b for a, b in zip(fast_ids, eager_ids))
    # the first token's logits through both paths: how far apart the arithmetic is (random weights make
    # near-ties common, so token agreement alone says little about correctness)
    from livewatch.engine.generate import cache_from_kv, forward, position_tensor
    from livewatch.engine.positions import text_positions

    prepared = core.prepare("cam", "Describe the scene.", 1)
    kv = core.prefix_kv("cam")
    emb = lm.embed_tokens(torch.tensor(prepared.suffix, device=lm.device)).unsqueeze(0)
    eager_logits = forward(lm, emb, position_tensor(text_positions(prepared.next_position, len(prepared.suffix)),
                                                    lm.device), cache_from_kv(lm.model.config.text_config, kv))
    dec.runner.cache.load(0, *core.stacked_prefix("cam"))
    dec._slots[0].loaded = None
    fast_logits, _ = dec.runner.prefill(0, prepared.suffix, prepared.next_position, prepared.prefix_tokens)
    rel = float((fast_logits - eager_logits).norm() / eager_logits.norm())

    return {"tokens": n_agree, "identical_prefix": same_prefix, "matching": matches,
            "dtype": str(lm.dtype).removeprefix("torch."), "first_logits_relative_difference": round(rel, 5)}, prepared


@torch.inference_mode()
def oom_section(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """A real CUDA out-of-memory in the middle of a question: that job fails, the next one is answered."""
    from livewatch.errors import EngineError

    if lm.device.type != "cuda":
        return {"skipped": "needs a GPU"}
    core = EngineCore(lm, timezone="UTC")
    core.set_context("cam", context_pairs(bank, plan.star_pairs, plan.window_pairs), 1)
    free(lm.device)  # the allocator's cached blocks go back, so the hog below really leaves ~16 MiB
    free_bytes, _ = torch.cuda.mem_get_info(lm.device)
    hog = torch.empty(max(free_bytes - 16 * 2**20, 0), dtype=torch.uint8, device=lm.device)
    try:
        core.ask("cam", QUESTION, SamplingParams(max_new_tokens=4))
        first = {"error": None}
    except EngineError as exc:
        first = {"error": str(exc), "out_of_memory": exc.out_of_memory,
                 "caches_freed": core.camera_stats("cam")["cached_pairs"] == 0}
    del hog
    free(lm.device)
    answer = core.ask("cam", QUESTION, SamplingParams(max_new_tokens=4, ignore_eos=True))
    return {"first_question": first, "next_question_tokens": answer.metrics["output_tokens"]}


def agreement_section(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    core = EngineCore(lm, timezone="UTC")
    dec = BatchDecoder(core, slots=2, max_len=4096, use_graphs=True)
    dec.capture()
    core.set_context("cam", context_pairs(bank, plan.star_pairs, plan.window_pairs), 1)
    core.encode("cam")
    result, _ = agreement(core, dec, plan)
    del dec, core
    free(lm.device)
    return result


@torch.inference_mode()
def fastpath(lm: LoadedModel, plan: Plan, bank: FrameBank, eager_lw: dict[str, Any]) -> dict[str, Any]:
    """The daemon's decode path: batched slots, CUDA graphs on a GPU (eager on the CPU)."""
    clock = Clock(lm.device)
    peak_reset(lm.device)
    core = EngineCore(lm, timezone="UTC")
    n_clients = 16 if plan is FULL else 4
    dec = BatchDecoder(core, slots=n_clients, max_len=4096, use_graphs=True)
    capture_s = dec.capture()
    scenario = _scenario(
        core, plan, bank, lambda tokens: _fast_answer(core, dec, "cam", tokens, t0=time.perf_counter()).metrics
    )

    agree, prepared = agreement(core, dec, plan)
    # where a decode step's time goes: graph replay alone vs the whole call (host work included)
    runner = dec.runner
    runner.set_rows(1, {0: (1, prepared.next_position, prepared.prefix_tokens)})
    runner.decode(1, 1)
    reps = 20 if plan is FULL else 5
    t0 = clock.now()
    for _ in range(reps):
        runner.decode(1, 1)
    call_1 = (clock.now() - t0) / reps
    t0 = clock.now()
    for _ in range(reps):
        runner.decode(1, 8)
    call_8 = (clock.now() - t0) / reps / 8
    replay = None
    graph = runner._decode_graphs.get(1)
    if graph is not None:
        t0 = clock.now()
        for _ in range(reps):
            graph.graph.replay()
        replay = (clock.now() - t0) / reps

    # concurrent questions: 4 cameras, clients arriving at once; batched vs one by one
    cams = [f"c{i}" for i in range(4)]
    for i, cam in enumerate(cams):
        core.set_context(cam, context_pairs(bank, plan.star_pairs, plan.window_pairs, first_id=1000 * (i + 1)), 1)
        core.encode(cam)
    tokens = plan.answer_tokens // 2

    def concurrent(batched: bool) -> dict[str, Any]:
        t0 = clock.now()
        answers: list[Answer] = []
        if batched:
            params = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
            for i in range(n_clients):
                cam = cams[i % len(cams)]
                out = dec.admit(i, core.prepare(cam, f"question {i}?", tokens, received_at=t0), params, None,
                                lambda: False)
                if out is not None:
                    answers.append(out.answer)
            while dec.active:
                answers.extend(o.answer for o in dec.step())
        else:
            for i in range(n_clients):
                answers.append(_fast_answer(core, dec, cams[i % len(cams)], tokens, t0=t0, question=f"question {i}?"))
        wall = clock.now() - t0
        total_tokens = sum(a.metrics["output_tokens"] for a in answers)
        return {
            "clients": n_clients, "tokens_each": tokens, "wall_ms": round(wall * 1e3, 1),
            "aggregate_tokens_per_s": round(total_tokens / wall, 1),
            "slowest_ttft_ms": round(max(a.metrics["ttft_ms"] for a in answers), 1),
            "median_ttft_ms": median([a.metrics["ttft_ms"] for a in answers]),
            "slowest_last_token_ms": round(max(a.metrics["total_ms"] for a in answers), 1),
        }

    batched = concurrent(True)
    one_by_one = concurrent(False)
    result = {
        "decoder": dec.stats(),
        "capture_s": round(capture_s, 2),
        **scenario,
        "decode_speedup_vs_eager_path": round(scenario["decode_tokens_per_s"] / eager_lw["decode_tokens_per_s"], 2)
        if eager_lw.get("decode_tokens_per_s") else None,
        "greedy_agreement": agree,
        "step_breakdown_ms": {
            "graph_replay_only": round(replay * 1e3, 3) if replay is not None else None,
            "decode_call_1_step": round(call_1 * 1e3, 3),
            "decode_call_8_steps_per_token": round(call_8 * 1e3, 3),
        },
        "concurrent_batched": batched,
        "concurrent_one_by_one": one_by_one,
        "peak_gib": peak_gib(lm.device),
    }
    del dec, core
    free(lm.device)
    return result


def _replay_ms(fn, device: torch.device, reps: int) -> float:
    """Median milliseconds of ``fn`` captured as one CUDA graph and replayed (launch gaps as in the daemon)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return _time_replays(graph, reps)


def _time_replays(graph, reps: int, between=None) -> float:
    """Median milliseconds of one replay of ``graph`` (device events); ``between()`` runs untimed after each."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        if between is not None:
            between()
    return median(times)


def _linear_sweep(lm: LoadedModel, reps: int) -> dict[str, Any]:
    """Each projection of a one-row decode step through cuBLAS and through livewatch.engine.kernels.gemv, per
    tile configuration: the model's 36 layers' own weights in one graph (so they come from memory, not L2)."""
    import itertools

    from livewatch.engine import kernels
    from livewatch.engine.fastpath import fuse_projections

    fuse_projections(lm.text_model)
    fuse = list(lm.text_model.layers)
    shapes = {
        "qkv": ([lyr.self_attn._livewatch_qkv[0] for lyr in fuse], [lyr.self_attn._livewatch_qkv[1] for lyr in fuse],
                False),
        "o_proj": ([lyr.self_attn.o_proj.weight for lyr in fuse], None, False),
        "gate_up": ([lyr.mlp._livewatch_gate_up[0] for lyr in fuse], None, False),
        "silu_down": ([lyr.mlp.down_proj.weight for lyr in fuse], None, True),
    }
    gen = torch.Generator(device="cpu").manual_seed(0)
    result: dict[str, Any] = {}
    for name, (weights, biases, silu) in shapes.items():
        n, k = weights[0].shape
        for rows in (1,):
            x = torch.randn((rows, 2 * k if silu else k), generator=gen).to(lm.device, lm.dtype)

            def torch_step() -> None:
                for i, w in enumerate(weights):
                    inp = kernels.silu_mul(x) if silu else x
                    torch.nn.functional.linear(inp, w, biases[i] if biases else None)

            cublas = _replay_ms(torch_step, lm.device, reps)
            grid = itertools.product((4, 8), (1024, 2048), (8, 16), (3, 4))
            timings: list[tuple[float, tuple[Any, ...]]] = []
            for cfg in grid:
                def triton_step(cfg=cfg) -> None:
                    for i, w in enumerate(weights):
                        kernels.gemv(x, w, biases[i] if biases else None, silu, cfg)
                try:
                    timings.append((_replay_ms(triton_step, lm.device, reps), cfg))
                except Exception as exc:  # a tile too large for the chip's resources
                    timings.append((float("inf"), (*cfg, type(exc).__name__)))
            timings.sort(key=lambda t: t[0])
            chosen = kernels.GEMV_SILU_CONFIG if silu else kernels.GEMV_CONFIG
            default = next(ms for ms, cfg in timings if cfg == chosen)
            result[f"{name}_rows_{rows}"] = {
                "n": n, "k": k, "cublas_us_per_call": round(cublas * 1e3 / len(weights), 2),
                "gemv_us_per_call": round(default * 1e3 / len(weights), 2),
                "best": [(round(ms * 1e3 / len(weights), 2), list(cfg)) for ms, cfg in timings[:4]],
            }
            print(f"[bench] linear {name} rows={rows} {result[f'{name}_rows_{rows}']}", flush=True)
    return result


@torch.inference_mode()
def kernels_section(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """The decode step with PyTorch's kernels against livewatch's fused Triton kernels, in the same run: graph
    replay per step at batch 1 and 16, a greedy answer through each, the kernels' start-up check, and the
    decode attention alone per key-chunk size (36 layers' worth in one graph)."""
    from livewatch.engine import kernels

    if lm.device.type != "cuda":
        return {"skipped": "needs a GPU"}
    core = EngineCore(lm, timezone="UTC")
    core.set_context("cam", context_pairs(bank, plan.star_pairs, plan.window_pairs), 1)
    core.encode("cam")
    prepared = core.prepare("cam", QUESTION, 8)
    reps = 50 if plan is FULL else 5
    n_tokens = 64 if plan is FULL else 16
    out: dict[str, Any] = {"context_tokens": prepared.prefix_tokens}
    answers = {}
    for name, fused in (("torch", False), ("triton", True)):
        dec = BatchDecoder(core, slots=16, max_len=4096, use_graphs=True, fused_kernels=fused)
        t0 = time.perf_counter()
        dec.capture()
        row: dict[str, Any] = {"start_up_s": round(time.perf_counter() - t0, 2), **dec.runner.describe()}
        if fused:
            row["self_test_relative_errors"] = {k: float(f"{v:.3g}") for k, v in dec.runner.kernel_errors.items()}
        answers[name] = _fast_answer(core, dec, "cam", n_tokens, question="Describe the scene.").token_ids
        for slot in range(16):
            dec.runner.cache.load(slot, *core.stacked_prefix("cam"))
        for bucket in (1, 16):
            rows = {i: (1, prepared.next_position, prepared.prefix_tokens + 40) for i in range(bucket)}
            dec.runner.set_rows(bucket, rows)
            graph = dec.runner._decode_graphs[bucket].graph
            ms = _time_replays(graph, reps, between=lambda: dec.runner.set_rows(bucket, rows))  # same length each time
            row[f"step_ms_batch_{bucket}"] = ms
            row[f"tokens_per_s_batch_{bucket}"] = round(bucket * 1e3 / ms, 1)
        out[name] = row
        del dec
        free(lm.device)
    out["speedup_batch_1"] = round(out["torch"]["step_ms_batch_1"] / out["triton"]["step_ms_batch_1"], 2)
    out["speedup_batch_16"] = round(out["torch"]["step_ms_batch_16"] / out["triton"]["step_ms_batch_16"], 2)
    a, b = answers["torch"], answers["triton"]
    out["greedy_tokens"] = {"tokens": len(a), "matching": sum(x == y for x, y in zip(a, b)),
                            "identical_prefix": next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))}

    # the attention alone: 36 layers of one step, per chunk size
    cfg = lm.model.config.text_config
    heads, kvh = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    d = int(cfg.hidden_size) // heads
    layers = int(cfg.num_hidden_layers)
    gen = torch.Generator(device="cpu").manual_seed(0)
    k = torch.randn((16, kvh, 4096, d), generator=gen).to(lm.device, lm.dtype)
    v = torch.randn((16, kvh, 4096, d), generator=gen).to(lm.device, lm.dtype)
    chunks: dict[str, Any] = {}
    for chunk in (32, 64, 128, 256, 512):
        for bucket in (1, 4, 16):
            q = torch.randn((bucket, heads, d), generator=gen).to(lm.device, lm.dtype)
            write = torch.full((bucket,), prepared.prefix_tokens + 40, device=lm.device)
            ms = _replay_ms(lambda: [kernels.decode_attention(q, k, v, write, d**-0.5, chunk) for _ in range(layers)],
                            lm.device, reps)
            chunks[f"chunk_{chunk}_batch_{bucket}_ms_per_step"] = ms
    out["attention_only"] = chunks
    out["linear_only"] = _linear_sweep(lm, reps)
    del core
    free(lm.device)
    return out


def ingest(plan: Plan, frame_size) -> dict[str, Any]:
    try:
        import av  # noqa: F401
    except ImportError:
        return {"skipped": "PyAV is not installed here"}
    from fractions import Fraction

    import av

    from livewatch.capture.handoff import LatestHandoff
    from livewatch.capture.reader import CameraReader
    from livewatch.capture.source import SourceSpec
    from livewatch.memory.camera import CameraMemory, MemoryParams
    from livewatch.memory.importance import importance, pair_signature
    from livewatch.memory.store import FrameStore

    tmp = Path(tempfile.mkdtemp(prefix="livewatch-bench-"))
    video = tmp / "1080p30.mp4"
    n = int(plan.ingest_seconds * 30)
    base = [synth_image(i, (1080, 1920)) for i in range(8)]
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.codec_context.options = {"g": "30", "preset": "veryfast", "bf": "2"}  # a 1 s GOP, like most cameras
        stream.codec_context.time_base = Fraction(1, 30)
        for i in range(n):
            img = np.roll(base[(i // 30) % len(base)], i * 6, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def full_decode() -> tuple[float, int]:
        c0, sampled, next_t = cpu(), 0, 0.0
        with av.open(str(video)) as container:
            vstream = container.streams.video[0]
            for frame in container.decode(vstream):
                if frame.time is not None and frame.time + 1e-6 >= next_t:
                    next_t += 1.0
                    size = frame_size(frame.height, frame.width)
                    frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
                    sampled += 1
        return cpu() - c0, sampled

    def livewatch_path() -> tuple[float, int, dict[str, Any]]:
        import asyncio

        loop = asyncio.new_event_loop()
        handoff = LatestHandoff(loop, maxlen=10_000)
        spec = SourceSpec("file", str(video), None, realtime=False, loop=False, live=False, redacted=str(video))
        reader = CameraReader("bench", spec, handoff, fps=1.0, frame_size=frame_size)
        c0 = cpu()
        reader.start()
        reader._thread.join(120)
        used = cpu() - c0
        stats = reader.stats()
        loop.close()
        return used, stats["frames_sampled"], stats

    full_cpu, full_sampled = full_decode()
    skip_cpu, skip_sampled, skip_stats = livewatch_path()

    capped = [np.ascontiguousarray(synth_image(50 + i, frame_size(1080, 1920))) for i in range(20)]
    sigs = [pair_signature(capped[i], capped[i + 1]) for i in range(0, 20, 2)]
    t0 = time.perf_counter()
    for i in range(0, 20, 2):
        importance(pair_signature(capped[i], capped[i + 1]), sigs[0], sigs)
    scoring_ms = (time.perf_counter() - t0) / 10 * 1e3

    memory = CameraMemory("bench", MemoryParams(star_pairs=10, window_pairs=10), FrameStore(tmp / "state"))
    full_frames = [synth_image(70 + i, (1080, 1920)) for i in range(4)]
    size = frame_size(1080, 1920)
    t0 = time.perf_counter()
    for i in range(40):
        memory.add_frame(Frame(i, T_END + i, float(i), full_frames[i % 4]))
    store_ms = (time.perf_counter() - t0) / 20 * 1e3
    return {
        "stream": f"1920x1080 {n / plan.ingest_seconds:.0f} fps H.264, 1 s GOP, {plan.ingest_seconds:g} s",
        "full_decode_cpu_s_per_camera_s": round(full_cpu / plan.ingest_seconds, 4),
        "full_decode_sampled": full_sampled,
        "livewatch_cpu_s_per_camera_s": round(skip_cpu / plan.ingest_seconds, 4),
        "livewatch_sampled": skip_sampled,
        "livewatch_keyframes_only": skip_stats["keyframes_only"],
        "livewatch_packets_skipped": skip_stats["packets_skipped"],
        "importance_ms_per_pair": round(scoring_ms, 3),
        "store_ms_per_pair": round(store_ms, 3),
        "store_frame_size": f"{size[1]}x{size[0]}",
        "note": "store cost includes capping, JPEG encode+decode, fsync'ed file writes and one SQLite commit",
    }


def floors(lm: LoadedModel, ceil: dict[str, Any], lw: dict[str, Any], sc: dict[str, Any],
           fp: dict[str, Any] | None) -> dict[str, Any]:
    elem = torch.finfo(lm.dtype).bits // 8
    text = lm.text_model
    text_params = param_count(text)  # embeddings included: tied, they are read again as the LM head each token
    embed_params = lm.embed_tokens.weight.numel()
    matmul_params = text_params - embed_params  # per-token matmul work; the LM head adds embed_params once per token
    bw = ceil["copy_gbps"] * 1e9
    rate = ceil["matmul_tflops"] * 1e12
    decode_floor_ms = text_params * elem / bw * 1e3
    prefix_tokens = lw["context_tokens"] - 60
    prefill_floor_ms = 2 * matmul_params * prefix_tokens / rate * 1e3
    vision_params = param_count(lm.visual)
    patches = lw["visual_tokens"] / max(lw["frames_in_context"] / 2, 1) * 4
    vision_floor_ms = 2 * vision_params * patches / rate * 1e3
    measured_decode_ms = 1e3 / lw["decode_tokens_per_s"] if lw["decode_tokens_per_s"] else float("inf")
    fast = fp or {}
    fast_decode_ms = 1e3 / fast["decode_tokens_per_s"] if fast.get("decode_tokens_per_s") else float("inf")
    return {
        "llm_weight_bytes": text_params * elem,
        "decode_floor_ms_per_token": round(decode_floor_ms, 3),
        "decode_ceiling_tokens_per_s": round(1e3 / decode_floor_ms, 1),
        "decode_fraction_of_ceiling": round(decode_floor_ms / measured_decode_ms, 3),
        "fast_decode_fraction_of_ceiling": round(decode_floor_ms / fast_decode_ms, 3),
        "fast_followup_ttft_fraction": round(decode_floor_ms / fast["followup_ttft_ms"], 3)
        if fast.get("followup_ttft_ms") else None,
        "prefix_prefill_floor_ms": round(prefill_floor_ms, 2),
        "prefix_prefill_fraction": round(prefill_floor_ms / lw["prefix_build_prefill_ms"], 3)
        if lw["prefix_build_prefill_ms"] else None,
        "followup_ttft_floor_ms": round(decode_floor_ms, 3),
        "followup_ttft_fraction": round(decode_floor_ms / lw["followup_ttft_ms"], 3),
        "vision_floor_ms_per_pair": round(vision_floor_ms, 3),
        "vision_batched_fraction": round(vision_floor_ms / sc["vision_ms_per_pair_batched"], 3)
        if sc.get("vision_ms_per_pair_batched") else None,
    }


# -- report -------------------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    """a / b, as 'N.Nx'."""
    if not a or not b:
        return "-"
    return f"{a / b:.1f}x"


def markdown(r: dict[str, Any]) -> str:
    m, p, lw, sc, fl, ing = r["machine"], r["prototype"], r["livewatch"], r["scaling"], r["floors"], r["ingest"]
    fp = r["fastpath"]
    lines = [
        f"Machine: {m['device_name']} ({m['device']}), {m['dtype']}, torch {m['torch']}, transformers "
        f"{m['transformers']}; model: {r['model']}; {r['date']}",
        f"Ceilings measured in this run: matmul {r['ceilings']['matmul_tflops']} TFLOP/s "
        f"({r['ceilings']['matmul_dtype']}), copy {r['ceilings']['copy_gbps']} GB/s",
        "",
        f"livewatch's decode path: {fp['decoder']['mode']} ({fp['decoder']['slots']} slots, capture "
        f"{fp['capture_s']} s at start-up); the eager path is the unbatched reference.",
        "",
        "| | prototype method | livewatch eager path | livewatch fast path | prototype / fast path |",
        "| --- | --- | --- | --- | --- |",
        f"| frames in context | {p['frames']} at {p['frame_size']} | {lw['frames_in_context']} at the default cap | same | |",
        f"| visual tokens | {p['visual_tokens']:,} | {lw['visual_tokens']:,} | same | {ratio(p['visual_tokens'], lw['visual_tokens'])} |",
        f"| first question after a new batch, TTFT (lazy) | {p['ttft_ms']:,} ms | {lw['lazy_first_question_ttft_ms']:,} ms | {fp['lazy_first_question_ttft_ms']:,} ms | {ratio(p['ttft_ms'], fp['lazy_first_question_ttft_ms'])} |",
        f"| first question, prefix ready (eager mode), TTFT | {p['ttft_ms']:,} ms | {lw['eager_ttft_ms']:,} ms | {fp['eager_ttft_ms']:,} ms | {ratio(p['ttft_ms'], fp['eager_ttft_ms'])} |",
        f"| follow-up question, TTFT | (reused cache) | {lw['followup_ttft_ms']:,} ms | {fp['followup_ttft_ms']:,} ms | |",
        f"| encode of a new batch | {p['ttft_ms']:,} ms (vision {p['vision_ms']:,} ms) | {lw['lazy_encode_ms']:,} ms | {fp['lazy_encode_ms']:,} ms | {ratio(p['ttft_ms'], fp['lazy_encode_ms'])} |",
        f"| decode | {p['decode_tokens_per_s']} tok/s | {lw['decode_tokens_per_s']} tok/s | {fp['decode_tokens_per_s']} tok/s | {ratio(fp['decode_tokens_per_s'], p['decode_tokens_per_s'])} the rate |",
        f"| {lw['answer_tokens']}-token answer, total | {p['answer_total_ms']:,} ms | {lw['answer_total_ms']:,} ms | {fp['answer_total_ms']:,} ms | {ratio(p['answer_total_ms'], fp['answer_total_ms'])} |",
        f"| peak GPU memory | {p['peak_gib']} GiB | {lw['peak_gib']} GiB | {fp['peak_gib']} GiB | |",
        "",
        f"Fast path vs eager path, greedy, {fp['greedy_agreement']['dtype']}: {fp['greedy_agreement']['identical_prefix']} "
        f"of {fp['greedy_agreement']['tokens']} tokens identical before the first difference "
        f"({fp['greedy_agreement']['matching']} matching positions); first-token logits differ by "
        f"{fp['greedy_agreement']['first_logits_relative_difference']} (relative L2). Decode step: graph replay "
        f"{fp['step_breakdown_ms']['graph_replay_only']} ms, one step per call {fp['step_breakdown_ms']['decode_call_1_step']} ms, "
        f"{fp['step_breakdown_ms']['decode_call_8_steps_per_token']} ms per token at 8 steps per call.",
        "",
        "| concurrent questions | aggregate decode | slowest TTFT | median TTFT | slowest last token |",
        "| --- | --- | --- | --- | --- |",
        f"| {fp['concurrent_batched']['clients']} at once, batched | {fp['concurrent_batched']['aggregate_tokens_per_s']} tok/s | {fp['concurrent_batched']['slowest_ttft_ms']:,} ms | {fp['concurrent_batched']['median_ttft_ms']:,} ms | {fp['concurrent_batched']['slowest_last_token_ms']:,} ms |",
        f"| {fp['concurrent_one_by_one']['clients']} at once, one by one | {fp['concurrent_one_by_one']['aggregate_tokens_per_s']} tok/s | {fp['concurrent_one_by_one']['slowest_ttft_ms']:,} ms | {fp['concurrent_one_by_one']['median_ttft_ms']:,} ms | {fp['concurrent_one_by_one']['slowest_last_token_ms']:,} ms |",
        "",
        f"Floors: decode {fl['decode_floor_ms_per_token']} ms/token (ceiling {fl['decode_ceiling_tokens_per_s']} tok/s; "
        f"fast path at {fl['fast_decode_fraction_of_ceiling']:.0%} of it, eager path at "
        f"{fl['decode_fraction_of_ceiling']:.0%}); prefix prefill floor {fl['prefix_prefill_floor_ms']} ms "
        f"(measured {lw['prefix_build_prefill_ms']} ms, {fl['prefix_prefill_fraction'] or 0:.0%}); follow-up TTFT floor "
        f"{fl['followup_ttft_floor_ms']} ms (fast path at {fl['fast_followup_ttft_fraction'] or 0:.0%}); vision floor "
        f"{fl['vision_floor_ms_per_pair']} ms/pair (batched {sc['vision_ms_per_pair_batched']} ms/pair, "
        f"{fl['vision_batched_fraction'] or 0:.0%}; alone {sc['vision_ms_per_pair_alone']} ms).",
        f"Prefix upkeep (prefill from cached vision): extension {sc['prefix_extension_ms']} ms, partial rebuild "
        f"{sc['prefix_partial_rebuild_ms']} ms, full rebuild {sc['prefix_full_rebuild_ms']} ms; KV "
        f"{lw['kv_bytes'] / 2**20:.1f} MiB per camera.",
        "",
        "Scaling (eager path for TTFT and decode; the fast path's figures are in the first table):",
        "",
        "| frames in context | visual tokens | prefix build | follow-up TTFT | decode | KV |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in sc["frames"]:
        lines.append(
            f"| {row['frames']} | {row['visual_tokens']:,} | {row['prefix_build_ms']} ms | {row['followup_ttft_ms']} ms "
            f"| {row['decode_tokens_per_s']} tok/s | {row['kv_bytes'] / 2**20:.1f} MiB |"
        )
    lines += ["", "| cameras | encode all | follow-up TTFT | KV per camera | peak memory |", "| --- | --- | --- | --- | --- |"]
    for row in sc["cameras"]:
        lines.append(
            f"| {row['cameras']} | {row['encode_all_ms']} ms | {row['followup_ttft_ms']} ms | "
            f"{row['kv_bytes_per_camera'] / 2**20:.1f} MiB | {row['peak_gib']} GiB |"
        )
    if "skipped" in ing:
        lines += ["", f"Ingest: skipped ({ing['skipped']})."]
    else:
        lines += [
            "",
            f"Ingest ({ing['stream']}, sampled at 1 fps, CPU of {m['cpu']}): full decode "
            f"{ing['full_decode_cpu_s_per_camera_s']} CPU-s per camera-second, livewatch's path "
            f"{ing['livewatch_cpu_s_per_camera_s']} ({ratio(ing['full_decode_cpu_s_per_camera_s'], ing['livewatch_cpu_s_per_camera_s'])} less); "
            f"importance scoring {ing['importance_ms_per_pair']} ms/pair; frame store {ing['store_ms_per_pair']} ms/pair "
            f"({ing['store_frame_size']}).",
        ]
    return "\n".join(lines) + "\n"


@torch.inference_mode()
def profile_decode(lm: LoadedModel, plan: Plan, bank: FrameBank) -> None:
    """Kernel time of one decode step of the fast path's math, run eagerly, per batch size, with PyTorch's kernels
    and then with the fused ones."""
    core = EngineCore(lm, timezone="UTC")
    core.set_context("cam", context_pairs(bank, plan.star_pairs, plan.window_pairs), 1)
    prepared = core.prepare("cam", QUESTION, 8)
    for fused in (False, True):
        dec = BatchDecoder(core, slots=16, max_len=4096, use_graphs=False, fused_kernels=fused)
        dec.capture()  # no graphs: prepares (checks) the fused kernels only
        for slot in range(16):
            dec.runner.cache.load(slot, *core.stacked_prefix("cam"))
        _profile_buckets(dec, prepared, lm.device)
        del dec


def _profile_buckets(dec: BatchDecoder, prepared, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile

    for bucket in (1, 16):
        rows = {i: (1, prepared.next_position, prepared.prefix_tokens + 40) for i in range(bucket)}
        dec.runner.set_rows(bucket, rows)
        dec.runner.decode(bucket, 2)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            dec.runner.decode(bucket, 1)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(f"[profile] kernels={dec.runner.describe()['kernels']} batch {bucket}")
        print(prof.key_averages().table(sort_by=key, row_limit=24, max_name_column_width=70))


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


def machine(lm: LoadedModel) -> dict[str, Any]:
    import transformers

    dev = lm.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(dev), "device_name": name, "dtype": str(lm.dtype).removeprefix("torch."),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu": f"{os.cpu_count()} cores {platform.machine()}", "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="a checkpoint directory or HF id")
    src.add_argument("--arch", choices=["qwen2.5-vl-3b", "tiny"], help="build this architecture with random weights")
    parser.add_argument("--random-weights", action="store_true", help="with --arch: random weights (no download)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, small sizes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--max-pixels", type=int, default=100352)
    parser.add_argument("--sections", default="prototype,livewatch,fastpath,scaling,ingest",
                        help="comma-separated subset of prototype,livewatch,fastpath,scaling,ingest,kernels,agreement,oom")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench")
    parser.add_argument("--profile-decode", action="store_true",
                        help="print the GPU kernels of one eager decode step (batch 1 and 16) and exit")
    args = parser.parse_args(argv)
    if args.tiny and not args.model:
        args.arch = args.arch or "tiny"
    if not args.model and not args.arch:
        parser.error("give --model, --arch ARCH --random-weights, or --tiny")
    if args.arch and not args.model and args.arch != "tiny" and not args.random_weights:
        parser.error("--arch needs --random-weights (weights are not downloaded)")
    plan = TINY if args.tiny else FULL
    sections = set(args.sections.split(","))
    args.out.mkdir(parents=True, exist_ok=True)

    from livewatch.log import configure_logging

    configure_logging("warning", "console", stream=sys.stderr)
    t_start = time.time()
    lm = build_model(args)
    report: dict[str, Any] = {
        "model": lm.model_id, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "plan": asdict(plan),
        "machine": machine(lm),
    }
    print(f"[bench] {report['machine']['device_name']} {report['machine']['dtype']} model={lm.model_id}", flush=True)
    report["ceilings"] = ceilings(lm.device, args.tiny)
    print(f"[bench] ceilings {report['ceilings']}", flush=True)
    core = EngineCore(lm, timezone="UTC")
    bank = FrameBank(plan.frame_size)
    warm_up(lm, bank)
    if args.profile_decode:
        profile_decode(lm, plan, bank)
        return 0
    runs = {  # in this order; fastpath compares itself with the livewatch section's eager path
        "prototype": lambda: prototype(lm, core, plan),
        "livewatch": lambda: livewatch_section(lm, plan, bank),
        "fastpath": lambda: fastpath(lm, plan, bank, report["livewatch"]),
        "oom": lambda: oom_section(lm, plan, bank),
        "kernels": lambda: kernels_section(lm, plan, bank),
        "agreement": lambda: agreement_section(lm, plan, bank),
        "scaling": lambda: scaling(lm, plan, bank),
        "ingest": lambda: ingest(plan, lambda h, w: target_size(h, w, lm.spec)),
    }
    for name, run in runs.items():
        if name in sections and (name != "fastpath" or "livewatch" in sections):
            report[name] = run()
            print(f"[bench] {name} {json.dumps(report[name])}", flush=True)
    if {"livewatch", "scaling"} <= sections:
        report["floors"] = floors(lm, report["ceilings"], report["livewatch"], report["scaling"], report.get("fastpath"))
    report["seconds"] = round(time.time() - t_start, 1)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    if {"prototype", "livewatch", "fastpath", "scaling", "ingest"} <= sections:
        table = markdown(report)
        (args.out / "bench.md").write_text(table)
        print(table)
    print(f"[bench] done in {report['seconds']} s; wrote {args.out / 'bench.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
