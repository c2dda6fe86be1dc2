"""The ``kernels`` section (GPU) and ``--profile-decode``: PyTorch's kernels against livewatch's fused Triton
kernels for the decode step, in the same run.

Per step, graph replay at batch 1 and 16, a greedy answer through each, the kernels' start-up check; then the
decode attention alone per key-chunk size and each projection alone per GEMV tile configuration, 36 layers' worth
in one CUDA graph, so launch gaps are as in the daemon and weights come from memory, not L2. Times are device
events around a replay (``time_replays``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import torch

from benchkit.common import FULL, QUESTION, Plan, context_pairs, fast_answer, free, median
from livewatch.engine.model import kernels
from livewatch.engine.answer import Prepared
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.model.fastpath import fuse_projections, fused_weights
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.synthetic import FrameBank


def replay_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median milliseconds of ``fn`` captured as one CUDA graph and replayed (launch gaps as in the daemon)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_replays(graph, reps)


def time_replays(graph: torch.cuda.CUDAGraph, reps: int, between: Callable[[], None] | None = None) -> float:
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
    """Each projection of a one-row decode step through cuBLAS and through livewatch.engine.model.kernels.gemv, per
    tile configuration: the model's 36 layers' own weights in one graph (so they come from memory, not L2)."""
    fuse_projections(lm.text_model)
    layers = list(lm.text_model.layers)
    fused = [fused_weights(lyr) for lyr in layers]
    shapes: dict[str, tuple[list[torch.Tensor], list[torch.Tensor] | None, bool]] = {
        "qkv": ([w for w, _, _ in fused], [b for _, b, _ in fused], False),
        "o_proj": ([lyr.self_attn.o_proj.weight for lyr in layers], None, False),
        "gate_up": ([gu for _, _, gu in fused], None, False),
        "silu_down": ([lyr.mlp.down_proj.weight for lyr in layers], None, True),
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

            cublas = replay_ms(torch_step, lm.device, reps)
            grid = itertools.product((4, 8), (1024, 2048), (8, 16), (3, 4))
            timings: list[tuple[float, tuple[Any, ...]]] = []
            for cfg in grid:
                def triton_step(cfg: tuple[Any, ...] = cfg) -> None:
                    for i, w in enumerate(weights):
                        kernels.gemv(x, w, biases[i] if biases else None, silu, cfg)
                try:
                    timings.append((replay_ms(triton_step, lm.device, reps), cfg))
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


def _attention_sweep(lm: LoadedModel, prepared: Prepared, reps: int) -> dict[str, Any]:
    """The attention alone: 36 layers of one step, per chunk size."""
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
            ms = replay_ms(lambda: [kernels.decode_attention(q, k, v, write, d**-0.5, chunk) for _ in range(layers)],
                           lm.device, reps)
            chunks[f"chunk_{chunk}_batch_{bucket}_ms_per_step"] = ms
    return chunks


@torch.inference_mode()
def run(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """The decode step with PyTorch's kernels against livewatch's fused Triton kernels, in the same run: graph
    replay per step at batch 1 and 16, a greedy answer through each, the kernels' start-up check, and the
    decode attention alone per key-chunk size (36 layers' worth in one graph)."""
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
        answers[name] = fast_answer(core, dec, "cam", n_tokens, question="Describe the scene.").token_ids
        for slot in range(16):
            dec.runner.cache.load(slot, *core.stacked_prefix("cam"))
        for bucket in (1, 16):
            rows = {i: (1, prepared.next_position, prepared.prefix_tokens + 40) for i in range(bucket)}
            dec.runner.set_rows(bucket, rows)
            graph = dec.runner.decode_graph(bucket)
            assert graph is not None, "the decode graphs were not captured"
            ms = time_replays(graph.graph, reps,
                              between=lambda: dec.runner.set_rows(bucket, rows))  # same length each time
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
    out["attention_only"] = _attention_sweep(lm, prepared, reps)
    out["linear_only"] = _linear_sweep(lm, reps)
    del core
    free(lm.device)
    return out


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


def _profile_buckets(dec: BatchDecoder, prepared: Prepared, device: torch.device) -> None:
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
