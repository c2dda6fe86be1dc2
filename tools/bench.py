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
  fastpath    the daemon's decode path (batched slots, CUDA graphs on a GPU): the livewatch section's scenario,
              greedy agreement with the eager path, a decode step's breakdown, concurrent questions
  ingest      CPU seconds per camera-second of a 1080p30 H.264 stream sampled at 1 fps (full decode vs livewatch's
              skipping path), importance scoring per pair (capped frames) and frame-store writes per pair of 1080p
              frames stored uncapped (needs PyAV)
  capacity    N cameras fed pairs in real time at 1 fps on the daemon's engine thread (eager mode): encode lag
              p50/p95/max, busy fraction, peak memory, question TTFT under that load, and "cameras kept fresh"
              (largest N with p95 lag <= 2 s) against the prototype's full re-encode per batch
  watches     (not by default) watch evaluation cost (1-256 watches at once, alone and beside decoding) and the
              watched cameras one GPU sustains at 1 fps with 2 watches each (engine latency p95 <= 2.5 s)
  history     (not by default) a question about a 1-hour range (TTFT cold and warm), find's archived hours per
              minute, and evidence ranking's cost per answer
  kernels     (GPU, not by default) the decode step with PyTorch's kernels against the fused Triton kernels
  oom         (GPU, not by default) a real CUDA out-of-memory in the middle of a question
  agreement   (not by default) the fast path's greedy agreement with the eager path, on its own
  shards      (GPU, not by default; alone, needs Ray) one Ray actor per GPU (num_gpus=1), each with its own model:
              capacity's sweep on one shard alone, then on every shard at once in lockstep (same N each), and
              the cameras kept fresh by one GPU against all of them (--shard-cameras N,N,...)
  floors      each measured figure against its physical floor (decode: LLM weight bytes / bandwidth; prefill and
              vision: FLOPs / matmul rate)
Answers have a fixed length (end-of-turn ignored) so runs compare. Figures that depend on the machine are labelled
with it. Runs where only torch, transformers and torchvision are installed: frames are synthesised with numpy;
PyAV (ingest) is optional.

This file is the command line and the section table; each section is a module of tools/benchkit/ (see its
__init__). A new section: a module with a ``run`` returning its JSON, and one line in SECTIONS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import bench_memory  # noqa: E402
from benchkit import (  # noqa: E402
    agreement, capacity, ceilings, eager, fastpath, history, ingest, kernels, oom, prototype, scaling, shards, watches,
)
from benchkit.common import FULL, TINY, Plan, build_model, machine, warm_up  # noqa: E402
from benchkit.report import floors, markdown  # noqa: E402
from livewatch.engine.model.loading import LoadedModel  # noqa: E402
from livewatch.engine.prompting.preprocess import target_size  # noqa: E402
from livewatch.engine.synthetic import FrameBank  # noqa: E402


@dataclass
class Run:
    """What a section is given: the model, the run's sizes, the frames, the report so far, the command line.

    A section of DRIVERLESS builds its models in its own processes: it gets no model and no frames (None)."""

    lm: LoadedModel
    plan: Plan
    bank: FrameBank
    report: dict[str, Any]
    args: argparse.Namespace


# Run in this order (fastpath compares itself with the livewatch section's eager path, so it needs it).
SECTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "prototype": lambda r: prototype.run(r.lm, r.plan),
    "livewatch": lambda r: eager.run(r.lm, r.plan, r.bank),
    "fastpath": lambda r: fastpath.run(r.lm, r.plan, r.bank, r.report["livewatch"]),
    "oom": lambda r: oom.run(r.lm, r.plan, r.bank),
    "kernels": lambda r: kernels.run(r.lm, r.plan, r.bank),
    "agreement": lambda r: agreement.run(r.lm, r.plan, r.bank),
    "scaling": lambda r: scaling.run(r.lm, r.plan, r.bank),
    "ingest": lambda r: ingest.run(r.plan, lambda h, w: target_size(h, w, r.lm.spec)),
    "memory": lambda r: bench_memory.memory_section(quick=r.plan is TINY),  # CPU: the star memory's event suite
    "capacity": lambda r: capacity.run(r.lm, r.plan),
    "watches": lambda r: watches.run(r.lm, r.plan),  # not by default: watch evaluation cost and watched cameras
    "history": lambda r: history.run(r.lm, r.plan),  # not by default: range questions, find, evidence ranking
    "shards": lambda r: shards.run(r.args, r.plan, _ints(r.args.shard_cameras)),  # GPU, alone (DRIVERLESS)
    # new sections here (--sections lists this table's names)
}
NEEDS = {"fastpath": "livewatch"}  # a section that runs only when the one it needs runs too
DRIVERLESS = {"shards"}  # sections whose own processes (Ray actors) build the models: run alone, no model here
DEFAULT_SECTIONS = "prototype,livewatch,fastpath,scaling,capacity,ingest"  # also what the markdown table needs


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="a checkpoint directory or HF id")
    src.add_argument("--arch", choices=["qwen2.5-vl-3b", "tiny"], help="build this architecture with random weights")
    parser.add_argument("--random-weights", action="store_true", help="with --arch: random weights (no download)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, small sizes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--max-pixels", type=int, default=100352)
    parser.add_argument("--sections", default=DEFAULT_SECTIONS,
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench")
    parser.add_argument("--shard-cameras", help="shards: cameras per shard, comma-separated (default "
                        f"{','.join(map(str, shards.CAMERAS))}; --tiny {','.join(map(str, shards.TINY_CAMERAS))})")
    parser.add_argument("--profile-decode", action="store_true",
                        help="print the GPU kernels of one eager decode step (batch 1 and 16) and exit")
    args = parser.parse_args(argv)
    if args.tiny and not args.model:
        args.arch = args.arch or "tiny"
    if not args.model and not args.arch:
        parser.error("give --model, --arch ARCH --random-weights, or --tiny")
    if args.arch and not args.model and args.arch != "tiny" and not args.random_weights:
        parser.error("--arch needs --random-weights (weights are not downloaded)")
    chosen = set(args.sections.split(","))
    if chosen & DRIVERLESS and not chosen <= DRIVERLESS:
        parser.error(f"{','.join(sorted(chosen & DRIVERLESS))} runs alone (its actors take the GPUs): "
                     f"--sections {','.join(sorted(chosen & DRIVERLESS))}")
    if chosen & DRIVERLESS and args.profile_decode:
        parser.error("--profile-decode needs this process's model: not with --sections shards")
    return args


def _ints(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(x) for x in text.split(",")) if text else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = TINY if args.tiny else FULL
    sections = set(args.sections.split(","))
    args.out.mkdir(parents=True, exist_ok=True)

    from livewatch.log import configure_logging

    configure_logging("warning", "console", stream=sys.stderr)
    t_start = time.time()
    if sections <= DRIVERLESS:  # the section's actors build their own models on their GPUs: none here
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "plan": asdict(plan),
            "machine": shards.host(),
        }
        print(f"[bench] {report['machine']['gpus']} GPUs {report['machine']['gpu_names']}; no model in the driver",
              flush=True)
        run = Run(None, plan, None, report, args)  # type: ignore[arg-type]  # DRIVERLESS sections use neither
    else:
        lm = build_model(args)
        report = {
            "model": lm.model_id, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "plan": asdict(plan),
            "machine": machine(lm),
        }
        print(f"[bench] {report['machine']['device_name']} {report['machine']['dtype']} model={lm.model_id}",
              flush=True)
        report["ceilings"] = ceilings.run(lm.device, args.tiny)
        print(f"[bench] ceilings {report['ceilings']}", flush=True)
        bank = FrameBank(plan.frame_size)
        warm_up(lm, bank)
        if args.profile_decode:
            kernels.profile_decode(lm, plan, bank)
            return 0
        run = Run(lm, plan, bank, report, args)
    for name, section in SECTIONS.items():
        if name in sections and NEEDS.get(name, name) in sections:
            report[name] = section(run)
            if name in DRIVERLESS:
                report.setdefault("model", report[name].get("model"))
            print(f"[bench] {name} {json.dumps(report[name])}", flush=True)
    if {"livewatch", "scaling"} <= sections:
        report["floors"] = floors(lm, report["ceilings"], report["livewatch"], report["scaling"], report.get("fastpath"))
    report["seconds"] = round(time.time() - t_start, 1)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    if set(DEFAULT_SECTIONS.split(",")) <= sections:
        table = markdown(report)
        (args.out / "bench.md").write_text(table)
        print(table)
    if "memory" in report:
        (args.out / "memory.md").write_text(bench_memory.markdown(report["memory"]))
    print(f"[bench] done in {report['seconds']} s; wrote {args.out / 'bench.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
