"""The ``scaling`` section: latency against frames in context and against cameras sharing the model; vision time
per pair (batched and alone); prefix rebuild vs partial rebuild vs extension; KV bytes per camera.

The three prefix updates are timed as the engine runs them, prefill from cached vision embeddings: an extension
(a pair lands, none leaves), a partial rebuild (the oldest window pair leaves, one lands: every position after it
moves), and a full rebuild. The full rebuild is the same pairs with every time shifted by a minute: the prompt's
head (which names the first frame's time) changes, so the engine rebuilds the whole prefix, while the pairs (same
ids, same images) stay in the vision cache.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from benchkit.common import FULL, Clock, Plan, ask, context_pairs, free, median, peak_gib, peak_reset
from livewatch.engine.core import EngineCore
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.synthetic import FrameBank
from livewatch.engine.prompting.preprocess import pair_input
from livewatch.frames import FramePair


def _frames(lm: LoadedModel, plan: Plan, bank: FrameBank) -> list[dict[str, Any]]:
    rows = []
    for n_frames in plan.scaling_frames:
        pairs = n_frames // 2
        core = EngineCore(lm, timezone="UTC", max_gap_s=600)
        core.set_context("cam", context_pairs(bank, pairs // 2, pairs - pairs // 2), 1)
        build = core.encode("cam")
        ttfts = [ask(core, "cam", 1)["ttft_ms"] for _ in range(plan.repeats)]
        answer = ask(core, "cam", min(64, plan.answer_tokens))
        rows.append({
            "frames": n_frames, "visual_tokens": answer["visual_tokens"], "prefix_build_ms": round(build.encode_ms, 1),
            "followup_ttft_ms": median(ttfts), "decode_tokens_per_s": answer["decode_tokens_per_s"],
            "kv_bytes": core.camera_stats("cam")["kv_bytes"],
        })
        del core
        free(lm.device)
    return rows


def _vision(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """Vision per pair, the engine's tower (graph-captured per grid on a GPU) and transformers' own: one call
    for a batch of pairs (32 at the full plan, pairs of one camera size), and one call per pair."""
    clock = Clock(lm.device)
    batch = context_pairs(bank, 0, 32 if plan is FULL else 4, first_id=1000)
    inputs = [pair_input(p, lm.spec) for p in batch]  # host preprocessing is not the tower's time
    tower = EngineCore(lm, timezone="UTC").encoder.tower

    def hf(items: list) -> None:
        rows = torch.cat([r for r, _ in items]).to(lm.device, lm.dtype)
        lm.visual(rows, grid_thw=torch.tensor([g for _, g in items], device=lm.device))

    out: dict[str, Any] = {"vision_batch_pairs": len(batch)}
    for name, encode in (("", tower.encode), ("_transformers", hf)):
        encode(inputs)  # first use of the shapes (graph capture, kernel selection) stays out of the figures
        encode(inputs[:1])
        t0 = clock.now()
        for _ in range(plan.repeats):
            encode(inputs)
        batched = (clock.now() - t0) / (plan.repeats * len(batch))
        singles = []
        for item in inputs[:5]:
            t0 = clock.now()
            encode([item])
            singles.append(clock.now() - t0)
        out[f"vision_ms_per_pair_batched{name}"] = round(batched * 1e3, 2)
        out[f"vision_ms_per_pair_alone{name}"] = round(statistics.median(singles) * 1e3, 2)
    out["vision_tower"] = tower.describe()
    return out


def _shifted(bank: FrameBank, pairs: list[FramePair], seconds: float) -> list[FramePair]:
    """The same pairs (ids, images) taken ``seconds`` later."""
    return [bank.pair(p.id, p.time + seconds) for p in pairs]


def _prefix_upkeep(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """Prefix maintenance, prefill only (vision embeddings cached)."""
    clock = Clock(lm.device)
    core = EngineCore(lm, timezone="UTC")
    stars = context_pairs(bank, plan.star_pairs, 0)
    window = context_pairs(bank, 0, plan.window_pairs, first_id=plan.star_pairs)
    core.set_context("cam", stars + window[:-1], 1)
    core.encode("cam")
    t0 = clock.now()
    core.set_context("cam", stars + window, 2)
    extend = core.encode("cam")
    t_extend = clock.now() - t0
    slid = stars + window[1:] + [bank.pair(500, window[-1].time + 2)]
    core.set_context("cam", slid, 3)
    t0 = clock.now()
    partial = core.encode("cam")
    t_partial = clock.now() - t0
    core.set_context("cam", _shifted(bank, slid, 60.0), 4)  # a new head: the whole prefix, no vision work
    t0 = clock.now()
    rebuild = core.encode("cam")
    t_rebuild = clock.now() - t0
    assert rebuild.pairs_encoded == 0, "the full rebuild must come from cached vision"
    del core
    free(lm.device)
    return {
        "prefix_extension_ms": round(t_extend * 1e3, 1),
        "prefix_partial_rebuild_ms": round(t_partial * 1e3, 1),
        "prefix_full_rebuild_ms": round(t_rebuild * 1e3, 1),
        "prefix_update_kinds": [extend.kind.value, partial.kind.value, rebuild.kind.value],
    }


def core_pairs(plan: Plan, bank: FrameBank, camera: int) -> list[FramePair]:
    return context_pairs(bank, plan.star_pairs, plan.window_pairs, first_id=10_000 * camera)


def _window_reprefill(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    """The window sliding on 8 cameras at once (one pair leaves the window's front, one lands: the window's
    tokens are recomputed after the kept stars), as one encode step runs them, against one camera alone."""
    n = 8 if plan is FULL else 2
    core = EngineCore(lm, timezone="UTC")
    names = [f"cam{c}" for c in range(n)]
    for c, name in enumerate(names):
        core.set_context(name, core_pairs(plan, bank, c), 1)
    core.encode_many(names)
    figures: dict[str, Any] = {}
    for version, label, cams in ((2, "alone", names[:1]), (3, "batched", names)):
        for c, name in enumerate(cams):
            pairs = core_pairs(plan, bank, c)
            core.set_context(name, pairs[: plan.star_pairs] + pairs[plan.star_pairs + version - 1:] + [
                bank.pair(10_000 * c + 900 + version, pairs[-1].time + 2.0 * version)], version)
        batch = core.encode_many(cams)
        reports = [r for _, r in batch.reports]
        assert {r.kind.value for r in reports} == {"partial"}, [r.kind for r in reports]
        figures[f"window_reprefill_{label}_ms_per_camera"] = round(reports[0].prefill_ms / len(cams), 1)
        figures["window_reprefill_tokens"] = reports[0].prefill_tokens
    figures["window_reprefill_batch"] = n
    figures["prefill"] = core.encoder.prefiller.describe()
    del core
    free(lm.device)
    return figures


def _cameras(lm: LoadedModel, plan: Plan, bank: FrameBank) -> list[dict[str, Any]]:
    clock = Clock(lm.device)
    rows = []
    for n_cams in plan.scaling_cameras:
        peak_reset(lm.device)
        core = EngineCore(lm, timezone="UTC")
        for c in range(n_cams):
            core.set_context(f"cam{c}", core_pairs(plan, bank, c), 1)
        t0 = clock.now()
        core.encode_many([f"cam{c}" for c in range(n_cams)])  # as the eager engine step runs them: together
        encode_all = clock.now() - t0
        for c in range(n_cams):  # the same work one camera at a time (each camera's pairs are cached now:
            core.set_context(f"cam{c}", _shifted(bank, core_pairs(plan, bank, c), 60.0), 2)  # a new head each)
        t0 = clock.now()
        for c in range(n_cams):
            core.encode(f"cam{c}")
        one_by_one_prefill = clock.now() - t0
        for c in range(n_cams):
            core.set_context(f"cam{c}", core_pairs(plan, bank, c), 3)
        t0 = clock.now()
        batched = core.encode_many([f"cam{c}" for c in range(n_cams)])
        batched_prefill = clock.now() - t0
        assert all(r.pairs_encoded == 0 for _, r in batched.reports), "a prefill-only figure"
        ttfts = [ask(core, f"cam{c}", 1)["ttft_ms"] for c in range(n_cams)]
        kv = [core.camera_stats(f"cam{c}")["kv_bytes"] for c in range(n_cams)]
        rows.append({
            "cameras": n_cams, "encode_all_ms": round(encode_all * 1e3, 1), "followup_ttft_ms": median(ttfts),
            "full_prefill_one_by_one_ms_per_camera": round(one_by_one_prefill * 1e3 / n_cams, 1),
            "full_prefill_batched_ms_per_camera": round(batched_prefill * 1e3 / n_cams, 1),
            "kv_bytes_per_camera": int(statistics.mean(kv)), "peak_gib": peak_gib(lm.device),
        })
        del core
        free(lm.device)
    return rows


@torch.inference_mode()
def run(lm: LoadedModel, plan: Plan, bank: FrameBank) -> dict[str, Any]:
    out: dict[str, Any] = {"frames": _frames(lm, plan, bank), "cameras": []}
    out.update(_vision(lm, plan, bank))
    out.update(_prefix_upkeep(lm, plan, bank))
    out.update(_window_reprefill(lm, plan, bank))
    out["cameras"] = _cameras(lm, plan, bank)
    return out
