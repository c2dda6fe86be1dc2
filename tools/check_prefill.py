#!/usr/bin/env python3
"""Batched prefix prefills (livewatch.engine.model.prefill.Prefiller) against transformers' forward, one camera at a time.

    python tools/check_prefill.py                         # CUDA: the 3B architecture, random weights, bf16
    python tools/check_prefill.py --tiny DIR              # CPU smoke run on a tools/make_tiny_model.py checkpoint

Two update shapes, each at several batch sizes B (cameras per call):
  reprefill   1,200 new tokens after 1,320 kept (a partial rebuild of a 20-pair prefix)   B = 1, 4, 8, 16
  extend      120 new tokens (one pair) after 2,520 kept                                   B = 1, 8, 32
(``--tiny``: a tenth of the tokens.) Positions are a real prefix layout's M-RoPE positions (a text head, then
pairs of 8x15 merged patches); embeddings and kept K/V are random. The reference (``hf``) is EngineCore._encode's
call, transformers' text_model over a DynamicCache, timed per camera; the Prefiller is timed per call with the
PyTorch kernels and, where they pass their self-test, the fused Triton ones. Prints one JSON object: ms per call
and per camera, and the largest relative error (max |a - b| / max |b| over each item's K and V) against the
reference for one batch of each shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402

from benchkit.common import Clock, build_model, free, machine, median  # noqa: E402
from livewatch.engine.model.generate import cache_from_kv, kv_from_cache, stack_prefix  # noqa: E402
from livewatch.engine.prompting.layout import PairSlot, PrefixLayout  # noqa: E402
from livewatch.engine.model.loading import LoadedModel  # noqa: E402
from livewatch.engine.model.prefill import PrefillItem, Prefiller  # noqa: E402

CASES = {"reprefill": (1320, 1200, (1, 4, 8, 16)), "extend": (2520, 120, (1, 8, 32))}
HEAD_TOKENS = 120
PAIR_GRID = (8, 15)  # merged patches of a 224x420 pair: 120 tokens


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", type=Path, help="a tiny checkpoint directory (tools/make_tiny_model.py): CPU smoke")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--max-tokens", type=int, default=8192, help="the Prefiller's tokens per forward")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per figure (0: 10 on CUDA, 2 on CPU)")
    args = parser.parse_args(argv)
    args.model, args.arch, args.attn, args.max_pixels = (str(args.tiny) if args.tiny else None), "qwen2.5-vl-3b", \
        "sdpa", 100352
    return args


def layout_positions(total: int) -> torch.Tensor:
    """[3, total] positions of a prefix: a text head, then pairs two seconds apart (2 tokens per second)."""
    pair = PAIR_GRID[0] * PAIR_GRID[1]
    n_pairs = -(-(total - HEAD_TOKENS) // pair)
    slots = tuple(PairSlot(i, 4 * i, *PAIR_GRID) for i in range(max(n_pairs, 0)))
    return torch.from_numpy(PrefixLayout(head=tuple(range(HEAD_TOKENS)), slots=slots).positions()[:, :total])


def make_items(lm: LoadedModel, b: int, kept: int, new: int, seed: int) -> list[PrefillItem]:
    cfg = lm.model.config.text_config
    heads, kvh = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    shape = (int(cfg.num_hidden_layers), kvh, kept, int(cfg.hidden_size) // heads)
    gen = torch.Generator().manual_seed(seed)
    positions = layout_positions(kept + new)
    scale = float(lm.embed_tokens.weight[:256].float().std())
    items = []
    for _ in range(b):
        past = (torch.randn(shape, generator=gen).to(lm.device, lm.dtype),
                torch.randn(shape, generator=gen).to(lm.device, lm.dtype))
        embeds = (torch.randn((new, int(cfg.hidden_size)), generator=gen) * scale).to(lm.device, lm.dtype)
        items.append(PrefillItem(past, embeds, positions[:, kept:].to(lm.device)))
    return items


@torch.inference_mode()
def hf_one(lm: LoadedModel, item: PrefillItem) -> tuple[torch.Tensor, torch.Tensor]:
    """One camera through transformers, as EngineCore._encode runs it."""
    past = item.past
    kv = None if past is None else [(past[0][i][None], past[1][i][None]) for i in range(past[0].shape[0])]
    cache = cache_from_kv(lm.model.config.text_config, kv)
    lm.text_model(inputs_embeds=item.embeds[None], position_ids=item.positions[:, None, :], past_key_values=cache,
                  use_cache=True)
    return stack_prefix(kv_from_cache(cache))


def timed(clock: Clock, fn: Any, repeats: int) -> float:
    fn()  # warm-up: kernel selection, allocator growth
    times = []
    for _ in range(repeats):
        t0 = clock.now()
        fn()
        times.append((clock.now() - t0) * 1e3)
    return median(times)


def max_rel_error(got: list[tuple[torch.Tensor, torch.Tensor]], ref: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    worst = 0.0
    for g, r in zip(got, ref):
        for a, b in zip(g, r):
            worst = max(worst, float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)))
    return worst


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    lm = build_model(args)
    lm.model.eval()
    clock = Clock(lm.device)
    repeats = args.repeats or (10 if lm.device.type == "cuda" else 2)
    divisor = 10 if args.tiny else 1
    prefillers = {"torch": Prefiller(lm, max_tokens=args.max_tokens)}
    fused = Prefiller(lm, fused=True, max_tokens=args.max_tokens)
    if fused.fused:
        prefillers["fused"] = fused
    graphed = Prefiller(lm, fused=True, max_tokens=args.max_tokens, graphs=True)
    if graphed.graphs_off_reason is None:  # one camera's update of up to 512 tokens as a CUDA graph
        prefillers["graphs"] = graphed
    report: dict[str, Any] = {"machine": machine(lm), "model": lm.model_id, "repeats": repeats,
                              "prefiller": prefillers["torch"].describe(), "fused_prefiller": fused.describe(),
                              "cases": {}}
    for name, (kept, new, batches) in CASES.items():
        kept, new = kept // divisor, new // divisor
        one = make_items(lm, 1, kept, new, seed=0)
        hf_ms = timed(clock, lambda: hf_one(lm, one[0]), repeats)
        case: dict[str, Any] = {"kept": kept, "new": new, "hf_ms_per_camera": hf_ms, "batches": []}
        for b in batches:
            items = make_items(lm, b, kept, new, seed=b)
            row: dict[str, Any] = {"cameras": b, "hf_ms_per_call": round(hf_ms * b, 3)}
            for label, prefiller in prefillers.items():
                ms = timed(clock, lambda: prefiller.run(items), repeats)
                row[f"{label}_ms_per_call"], row[f"{label}_ms_per_camera"] = ms, round(ms / b, 3)
                row[f"{label}_speedup_vs_hf"] = round(hf_ms * b / ms, 2)
            if b in batches[:2]:  # the error of the two smallest batches of each shape (one camera: fused rotary)
                ref = [hf_one(lm, item) for item in items]
                for label, prefiller in prefillers.items():
                    row[f"{label}_max_rel_error_vs_hf"] = max_rel_error(prefiller.run(items), ref)
                del ref
            case["batches"].append(row)
            del items
            free(lm.device)
        report["cases"][name] = case
    report["graphs_prefiller"] = graphed.describe()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
