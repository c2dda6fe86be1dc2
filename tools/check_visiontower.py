#!/usr/bin/env python3
"""The batched vision tower (livewatch.engine.model.visiontower) against transformers' tower: time per pair and error.

    python tools/check_visiontower.py --arch qwen2.5-vl-3b --random-weights   # a GPU: bf16, eager and CUDA graphs
    python tools/check_visiontower.py --tiny DIR                              # CPU smoke run on a tiny checkpoint

Pairs of synthetic 224x420 frames (grid 1x16x30) in batches of 1, 8 and 32. Each figure is the median over
``--repeats`` calls after a warm-up, the device synchronised around each call, per pair: rows on the host as
``pair_input`` makes them, embeddings on the device (the host-to-device copy included; the graphs are also timed
with the rows already on the device). transformers' tower is called the way livewatch called it before (all
rows of a batch in one call). The error is the largest over the batch's pairs of max |ours - transformers'| / max |transformers'|, in the model's dtype. The JSON also carries each
tower's ``describe()`` (a grid whose start-up check failed runs transformers' tower: see ``fallbacks``) and, with
graphs, how far 3 pairs padded to a bucket of 4 are from the same pairs in a batch of 8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402

from livewatch.engine import synthetic  # noqa: E402
from livewatch.engine.model.loading import LoadedModel, load_model  # noqa: E402
from livewatch.engine.prompting.preprocess import pair_input  # noqa: E402
from livewatch.engine.model.visiontower import VisionTower  # noqa: E402

Items = list[tuple[torch.Tensor, tuple[int, int, int]]]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--arch", choices=["qwen2.5-vl-3b", "tiny"], help="build this architecture with random weights")
    src.add_argument("--tiny", type=Path, metavar="DIR", help="a checkpoint directory (tools/make_tiny_model.py)")
    parser.add_argument("--random-weights", action="store_true", help="with --arch: random weights (no download)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--max-pixels", type=int, default=100352)
    parser.add_argument("--size", default="224x420", help="frame height x width")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.arch and not args.random_weights:
        parser.error("--arch needs --random-weights (weights are not downloaded)")
    return args


def build(args: argparse.Namespace) -> LoadedModel:
    if args.tiny:
        return load_model(str(args.tiny), args.device, args.dtype, args.attn, max_pixels=args.max_pixels)
    from benchkit.common import build_model  # the bench's random-weight model (imports the whole engine)

    args.model = None
    return build_model(args)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_pair_ms(fn: Any, batch: Items, device: torch.device, repeats: int) -> float:
    fn(batch)  # warm-up (a graph's capture, the allocator, kernel selection)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn(batch)
        sync(device)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times) / len(batch), 3)


def max_rel_err(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    worst = 0.0
    for o, t in zip(ours, theirs):
        scale = float(t.float().abs().max())
        worst = max(worst, float((o.float() - t.float()).abs().max()) / max(scale, 1e-30))
    return float(f"{worst:.3g}")


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    lm = build(args)
    height, width = (int(v) for v in args.size.split("x"))
    batches = [int(b) for b in args.batches.split(",")]
    top = max(batches)
    items: Items = [pair_input(synthetic.pair(i, synthetic.START + 2.0 * i, (height, width)), lm.spec)
                    for i in range(top)]
    grid = items[0][1]
    eager = VisionTower(lm.visual, lm.spec, lm.device, use_graphs=False, max_batch=top)
    graphs = VisionTower(lm.visual, lm.spec, lm.device, use_graphs=True, max_batch=top) \
        if lm.device.type == "cuda" else None
    report: dict[str, Any] = {
        "model": lm.model_id, "device": torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else "cpu",
        "dtype": str(lm.dtype).removeprefix("torch."), "torch": torch.__version__, "frame": [height, width],
        "grid": list(grid), "repeats": args.repeats,
    }
    t0 = time.perf_counter()
    eager.prepare(grid)
    report["eager_prepare_s"] = round(time.perf_counter() - t0, 3)
    if graphs is not None:
        t0 = time.perf_counter()
        graphs.prepare(grid, sorted({next(b for b in graphs.buckets if b >= n) for n in batches}))
        report["graphs_prepare_s"] = round(time.perf_counter() - t0, 3)

    def transformers_tower(batch: Items) -> list[torch.Tensor]:
        return eager.reference(grid, [rows for rows, _ in batch])

    rows_out = []
    for n in batches:
        batch = items[:n]
        theirs = transformers_tower(batch)
        row: dict[str, Any] = {"batch": n, "transformers_ms_per_pair": per_pair_ms(transformers_tower, batch, lm.device,
                                                                                  args.repeats)}
        row["eager_ms_per_pair"] = per_pair_ms(eager.encode, batch, lm.device, args.repeats)
        row["eager_max_rel_err"] = max_rel_err(eager.encode(batch), theirs)
        if graphs is not None:
            row["graphs_ms_per_pair"] = per_pair_ms(graphs.encode, batch, lm.device, args.repeats)
            row["graphs_max_rel_err"] = max_rel_err(graphs.encode(batch), theirs)
            on_device = [(rows.to(lm.device), g) for rows, g in batch]  # without the host-to-device copy
            row["graphs_ms_per_pair_rows_on_device"] = per_pair_ms(graphs.encode, on_device, lm.device, args.repeats)
        else:
            row["graphs_ms_per_pair"] = row["graphs_max_rel_err"] = row["graphs_ms_per_pair_rows_on_device"] = None
        rows_out.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    report["results"] = rows_out
    if graphs is not None and top >= 8:  # 3 pairs run padded to the bucket of 4: the same numbers as in a batch of 8
        report["graphs_padded_vs_batch_max_rel_diff"] = max_rel_err(graphs.encode(items[:3]), graphs.encode(items[:8]))
    report["eager_tower"] = eager.describe()
    report["graphs_tower"] = graphs.describe() if graphs is not None else None
    if lm.device.type == "cuda":
        report["peak_gib"] = round(torch.cuda.max_memory_allocated(lm.device) / 2**30, 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
