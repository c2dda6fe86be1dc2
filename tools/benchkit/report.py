"""The run's summary: each measured figure against its physical floor (``floors``), and the markdown table.

Floors: decode is bound by reading the LLM's weights once per token (weight bytes / measured copy bandwidth);
prefill and vision by their FLOPs at the measured matmul rate. A figure's fraction of its floor says how much
is left to gain; both ceilings come from the same run (``ceilings``).
"""

from __future__ import annotations

from typing import Any

import torch

from benchkit.common import param_count
from livewatch.engine.model.loading import LoadedModel


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
    lines += capacity_table(r.get("capacity"))
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


def capacity_table(cap: dict[str, Any] | None) -> list[str]:
    """The capacity section: cameras fed in real time at 1 fps against the prototype's full re-encode."""
    if not cap:
        return []
    lines = [
        "",
        f"Capacity (cameras at 1 fps, eager mode, the daemon's engine thread): {cap['cameras_kept_fresh']} cameras "
        f"kept fresh (p95 encode lag <= {cap['fresh_bound_p95_s']} s; tested up to {cap['tested_up_to']}); the "
        f"prototype's method (full re-encode per batch, one camera at a time, same harness; tested up to "
        f"{cap['prototype_tested_up_to']}) keeps {cap['prototype_cameras_kept_fresh']} "
        f"({ratio(cap['cameras_kept_fresh'], cap['prototype_cameras_kept_fresh'])}).",
        "",
        "| cameras | window slack | step budget | encode lag p50 / p95 / max | lag sampled p95 | busy (encode, vision) | encode step | question TTFT p50 / p95 | peak memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in cap["runs"] + [{**r, "cameras": f"{r['cameras']} (prototype)"} for r in cap["prototype_runs"]]:
        lines.append(
            f"| {row['cameras']} | {row['window_slack_pairs']} pairs | {row['encode_step_tokens']} | {row['lag_p50_s']} / "
            f"{row['lag_p95_s']} / {row['lag_max_s']} s | {row['lag_sampled_p95_s']} s | {row['busy_fraction']:.0%} "
            f"({row['encode_busy_fraction']:.0%}, {row['vision_busy_fraction']:.0%}) | {row['cameras_per_step']} cameras, "
            f"{row['tokens_per_step']} tokens, {row['encode_ms_per_step']} ms | {row['ttft_p50_ms']} / "
            f"{row['ttft_p95_ms']} ms ({row['questions']} asked, {row['question_errors']} failed) | {row['peak_gib']} GiB |"
        )
    return lines
