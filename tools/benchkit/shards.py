"""The ``shards`` section: whether GPUs added as Ray shard actors add cameras kept fresh in proportion.

One Ray actor per GPU (``num_gpus=1``; Ray sets its ``CUDA_VISIBLE_DEVICES``, so the shard's GPU is its cuda:0)
builds the model the way ``common.build_model`` does for the run's arguments (``--arch qwen2.5-vl-3b
--random-weights``: the real architecture in bf16, random weights), warms it up (``common.warm_up``), and runs the
``capacity`` section's sweep (``capacity.sweep``: N synthetic cameras fed in real time at 1 fps into the daemon's
``EngineWorker`` in eager mode, star + window contexts with the default window slack and step budget, a one-token
question every ~0.5 s) for ``plan.capacity_seconds`` of feeding per camera count.

Baseline first: shard 0 alone at each N of the list (the other shards built but idle). Then every shard at once,
each at the same N in lockstep: a Ray barrier actor holds each shard's real-time feeding of one N until every
shard has encoded its N cameras' initial contexts, so the feeds run side by side and share the host's cores,
memory and PCIe as a multi-GPU daemon's shards would. Totals are shards x N.

Per N and per shard: the capacity figures (encode lag p50/p95/max, busy fractions, peak GPU memory, question
TTFT). "Kept fresh" for one shard = the largest N with p95 lag <= 2 s and no failed question
(``capacity.kept_fresh``); for all shards = the largest total shards x N where every shard passes; the ratio of
the two. The driver process builds no model and allocates nothing on a GPU (``tools/bench.py`` dispatches this
section before its own model would be built, so ``--sections shards`` runs alone).

On a lent 2-GPU machine without Ray and without a network: the Ray wheel for its Python (cp312, 79 MB) is over
what one call may carry, so it travels unpacked and slimmed (its jars, dashboard UI and the serve, tune, train,
data, rllib and llm packages removed: a 28 MB tar.xz) in an ignored ``.raypkg/`` beside ``.raypkg/whl/`` (the
daemon's wheels without PyAV, plus jsonschema, jsonschema-specifications, referencing and rpds-py), then:

    pip install -q --no-index --no-deps --target /tmp/site .raypkg/whl/*.whl
    tar -xJf .raypkg/ray-2.60.0-cp312-slim.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
    python3 tools/bench.py --arch qwen2.5-vl-3b --random-weights --sections shards --out $OUT/bench
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchkit import capacity
from benchkit.common import Plan

ROOT = Path(__file__).resolve().parent.parent.parent
CAMERAS = (128, 160, 192, 224)  # cameras per shard, each run by one shard alone and by every shard at once
TINY_CAMERAS = (1, 2)
BARRIER_TIMEOUT_S = 900.0  # a shard that never reaches the barrier (crashed, stuck) fails the run instead of hanging
KEYS = ("lag_p50_s", "lag_p95_s", "lag_max_s", "busy_fraction", "encode_busy_fraction", "cameras_per_step",
        "ttft_p50_ms", "ttft_p95_ms", "question_errors", "peak_gib")  # the summary's figures per shard


class Barrier:
    """A Ray async actor: ``wait(key, parties)`` returns once ``parties`` callers have waited on ``key``."""

    def __init__(self) -> None:
        self.count: dict[Any, int] = {}
        self.events: dict[Any, asyncio.Event] = {}

    async def wait(self, key: Any, parties: int) -> float:
        event = self.events.setdefault(key, asyncio.Event())
        self.count[key] = self.count.get(key, 0) + 1
        if self.count[key] >= parties:
            event.set()
        await asyncio.wait_for(event.wait(), BARRIER_TIMEOUT_S)
        return time.time()


class Shard:
    """A Ray actor (``num_gpus=1``): one GPU's model, and capacity's sweep on it."""

    def __init__(self, index: int, args: argparse.Namespace, plan: Plan) -> None:
        import torch

        from benchkit.common import build_model, machine, warm_up
        from livewatch.engine.synthetic import FrameBank
        from livewatch.log import configure_logging

        configure_logging("warning", "console", stream=sys.stderr)
        self.index, self.plan = index, plan
        t0 = time.perf_counter()
        self.lm = build_model(args)
        warm_up(self.lm, FrameBank(plan.frame_size))
        self.machine = {**machine(self.lm), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "gpu_uuid": _gpu_uuid(torch, self.lm.device), "build_s": round(time.perf_counter() - t0, 1)}

    def info(self) -> dict[str, Any]:
        return {"shard": self.index, "model": self.lm.model_id, **self.machine}

    def sweep(self, runs: list[tuple[int, int, int]], barrier: Any = None, parties: int = 1,
              tag: str = "") -> list[dict[str, Any]]:
        """capacity's sweep over ``runs``; with a barrier, each run's feeding starts once ``parties`` shards are
        ready for it (their cameras' initial contexts encoded)."""
        from benchkit.common import free
        from livewatch.engine.core import EngineCore

        feed = capacity.load
        starts: list[float] = []

        async def synced(*a: Any, **kw: Any) -> dict[str, Any]:
            if barrier is not None:
                await barrier.wait.remote((tag, len(starts)), parties)
            starts.append(time.time())
            return await feed(*a, **kw)

        capacity.load = synced  # sweep looks ``load`` up at each run; this process runs only this shard
        try:
            results = asyncio.run(capacity.sweep(self.lm, self.plan, runs, EngineCore))
        finally:
            capacity.load = feed
            free(self.lm.device)
        for r, t in zip(results, starts, strict=False):
            r["shard"] = self.index
            r["feed_started_at"] = round(t, 3)
        return results


def _gpu_uuid(torch: Any, device: Any) -> str | None:
    if device.type != "cuda":
        return None
    try:
        return str(torch.cuda.get_device_properties(device).uuid)
    except Exception:  # older torch: no uuid
        return None


def host() -> dict[str, Any]:
    """The driver's machine: its GPUs by name (it builds no model and allocates nothing on them)."""
    import torch
    import transformers

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"gpus": len(names), "gpu_names": names, "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu": f"{os.cpu_count()} cores {platform.machine()}",
            "python": platform.python_version()}


def _start_ray(gpus: int) -> Any:
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every shard's progress lines in the log, not "repeated 2x"
    # The actors import benchkit.shards (their class) and livewatch: workers inherit the environment of the local
    # cluster that ray.init starts from here.
    paths = [str(ROOT), str(ROOT / "tools")]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                         if p and p not in paths])
    import ray

    ray.init(num_gpus=gpus, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
    return ray


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: runs[0].get(k) for k in ("cameras", *KEYS)} if len(runs) == 1 else {
        "cameras": runs[0]["cameras"], "per_shard": [{k: r.get(k) for k in KEYS} for r in runs]}


def run(args: argparse.Namespace, plan: Plan, cameras: tuple[int, ...] | None = None,
        shards: int | None = None) -> dict[str, Any]:
    import torch

    from livewatch.engine.scheduling.options import EngineOptions

    cameras = tuple(cameras or (TINY_CAMERAS if args.tiny else CAMERAS))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    declared = gpus or (shards or 2)  # CPU smoke run: GPUs declared to Ray, so the actors are placed as on a GPU host
    shards = shards or declared
    if shards > declared:
        raise ValueError(f"{shards} shards asked for, {declared} GPUs")
    ray = _start_ray(declared)
    try:
        t0 = time.perf_counter()
        Remote = ray.remote(num_gpus=1)(Shard)
        actors = [Remote.remote(i, args, plan) for i in range(shards)]
        infos = ray.get([a.info.remote() for a in actors])  # every model built and warmed up
        print(f"[bench] shards {shards} built in {time.perf_counter() - t0:.1f} s: "
              f"{[(i['shard'], i['device_name'], i['cuda_visible_devices']) for i in infos]}", flush=True)
        budget = EngineOptions().encode_step_tokens
        runs = [(n, plan.capacity_slack, budget) for n in cameras]

        alone = ray.get(actors[0].sweep.remote(runs))
        one_kept = capacity.kept_fresh(alone)
        print(f"[bench] shards one shard kept fresh {one_kept}: {[summary([r]) for r in alone]}", flush=True)

        barrier = ray.remote(Barrier).remote()
        per_shard = ray.get([a.sweep.remote(runs, barrier, shards, "together") for a in actors])
        together: list[dict[str, Any]] = []
        for i, n in enumerate(cameras):
            row = [per_shard[s][i] for s in range(shards)]
            fresh = all(capacity.kept_fresh([r]) == n for r in row)
            together.append({"cameras_per_shard": n, "cameras_total": shards * n, "all_fresh": fresh,
                             "feed_start_spread_s": _spread(row), "shards": row})
            print(f"[bench] shards {shards}x{n}={shards * n} all fresh {fresh}: {summary(row)}", flush=True)
        all_kept: int = max((t["cameras_total"] for t in together if t["all_fresh"]), default=0)
        return {
            "shards": shards,
            "model": infos[0]["model"],
            "shard_machines": infos,
            "cameras_per_shard": list(cameras),
            "window_slack_pairs": plan.capacity_slack,
            "encode_step_tokens": budget,
            "feed_seconds": plan.capacity_seconds,
            "fresh_bound_p95_s": capacity.FRESH_P95_S,
            "one_shard": {"runs": alone, "cameras_kept_fresh": one_kept, "tested_up_to": max(cameras)},
            "all_shards": {"runs": together, "cameras_kept_fresh": all_kept,
                           "tested_up_to": shards * max(cameras)},
            "ratio": round(all_kept / one_kept, 2) if one_kept else None,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    finally:
        ray.shutdown()


def _spread(row: list[dict[str, Any]]) -> float | None:
    starts = [r["feed_started_at"] for r in row if "feed_started_at" in r]
    return round(max(starts) - min(starts), 3) if len(starts) == len(row) and starts else None
