"""Batched prefix prefills (livewatch.engine.model.prefill) against transformers' own forward, item by item, with the tiny
model in float32 on the CPU: the reference is EngineCore._encode's call (text_model over a DynamicCache holding the
kept entries), positions are real prefix layouts' M-RoPE positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine_helpers import T0, make_pair
from livewatch.engine.model import kernels
from livewatch.engine.core import EngineCore
from livewatch.engine.model.generate import cache_from_kv, kv_from_cache, stack_prefix
from livewatch.engine.prompting.layout import plan_update
from livewatch.engine.model.loading import load_model
from livewatch.engine.model.prefill import PrefillItem, Prefiller

KV = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


@pytest.fixture(scope="module")
def core(lm) -> EngineCore:
    return EngineCore(lm, timezone="UTC", max_gap_s=30.0)


def prefix_inputs(lm, core: EngineCore, camera: str, pairs, seed: int):
    """(embeds, positions, layout) of a whole prefix: the head's token embeddings, then random vision-like
    embeddings (the prefill takes any), at the layout's real M-RoPE positions."""
    layout = core.layout_for(camera, pairs)
    head = lm.embed_tokens(torch.tensor(layout.head))
    gen = torch.Generator().manual_seed(seed)
    vision = torch.randn((layout.n_visual, head.shape[1]), generator=gen) * float(head.std())
    return torch.cat([head, vision]).detach(), torch.from_numpy(layout.positions()), layout


@torch.inference_mode()
def reference(lm, past: KV | None, embeds: torch.Tensor, positions: torch.Tensor) -> KV:
    """One item through transformers, as EngineCore._encode runs it."""
    kv = None if past is None else [(past[0][i][None], past[1][i][None]) for i in range(past[0].shape[0])]
    cache = cache_from_kv(lm.model.config.text_config, kv)
    lm.text_model(inputs_embeds=embeds[None], position_ids=positions[:, None, :], past_key_values=cache, use_cache=True)
    return stack_prefix(kv_from_cache(cache))


def assert_same(got: KV, ref: KV) -> None:
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
        scale = float(r.abs().max())
        assert scale > 0.1, "degenerate reference: the comparison would prove little"
        err = float((g - r).abs().max())
        assert err <= 1e-4 * max(1.0, scale), f"max error {err:.2e} (scale {scale:.2f})"


@pytest.fixture(scope="module")
def items(lm, core: EngineCore) -> list[tuple[PrefillItem, KV]]:
    """Three updates of different shapes with their references: a rebuild (no past), an extension of a few tokens
    after a long past, and a partial rebuild (a pair in the middle left the context)."""
    out = []
    embeds, positions, _ = prefix_inputs(lm, core, "a", [make_pair(i, T0 + 2 * i) for i in range(3)], seed=1)
    out.append(PrefillItem(None, embeds, positions))

    embeds, positions, layout = prefix_inputs(lm, core, "b", [make_pair(i, T0 + 400 + 2 * i) for i in range(5)], 2)
    keep = layout.n_tokens - 7
    past = reference(lm, None, embeds[:keep], positions[:, :keep])
    out.append(PrefillItem(past, embeds[keep:], positions[:, keep:]))

    old_pairs = [make_pair(10 + i, T0 + 2 * i) for i in range(4)]
    old_embeds, old_positions, old_layout = prefix_inputs(lm, core, "c", old_pairs, seed=3)
    new_pairs = old_pairs[:2] + old_pairs[3:] + [make_pair(14, T0 + 8)]
    layout = core.layout_for("c", new_pairs)
    plan = plan_update(old_layout, layout)
    assert plan.keep_tokens > len(layout.head) and plan.first_new_slot == 2
    old_kv = reference(lm, None, old_embeds, old_positions)
    past = (old_kv[0][:, :, : plan.keep_tokens], old_kv[1][:, :, : plan.keep_tokens])  # crop_kv's views
    gen = torch.Generator().manual_seed(4)
    new_embeds = torch.randn((layout.n_tokens - plan.keep_tokens, old_embeds.shape[1]), generator=gen)
    out.append(PrefillItem(past, new_embeds * float(old_embeds.std()),
                           torch.from_numpy(layout.positions(from_slot=plan.first_new_slot))))
    return [(item, reference(lm, item.past, item.embeds, item.positions)) for item in out]


def test_one_item_without_past_equals_transformers(lm, items) -> None:
    prefiller = Prefiller(lm)
    item, ref = items[0]
    assert item.past is None and item.embeds.shape[0] > 300
    (got,) = prefiller.run([item])
    assert_same(got, ref)
    assert prefiller.describe()["attention"] == "sdpa_masked" and prefiller.describe()["kernels"] == "torch"


def test_one_extension_equals_transformers(lm, items) -> None:
    item, ref = items[1]
    assert item.kept > 500 and item.embeds.shape[0] == 7
    (got,) = Prefiller(lm).run([item])
    assert_same(got, ref)
    # the kept entries come back unchanged, the new ones after them
    assert torch.equal(got[0][:, :, : item.kept], item.past[0]) and torch.equal(got[1][:, :, : item.kept], item.past[1])


def test_several_items_in_one_forward_equal_each_alone(lm, items) -> None:
    prefiller = Prefiller(lm)
    results = prefiller.run([item for item, _ in items])
    assert prefiller.describe()["forwards"] == 1
    for got, (item, ref) in zip(results, items):
        assert got[0].shape[2] == item.kept + item.embeds.shape[0]
        assert_same(got, ref)
    # order within the call does not matter
    reordered = prefiller.run([items[2][0], items[0][0], items[1][0]])
    for got, (_, ref) in zip(reordered, [items[2], items[0], items[1]]):
        assert_same(got, ref)


@pytest.mark.parametrize("max_tokens", [450, 120, 37])
def test_max_tokens_splits_the_call_into_forwards_with_the_same_results(lm, items, max_tokens: int) -> None:
    prefiller = Prefiller(lm, max_tokens=max_tokens)
    empty = PrefillItem(items[1][0].past, items[1][0].embeds[:0], items[1][0].positions[:, :0])  # nothing new
    results = prefiller.run([item for item, _ in items] + [empty])
    total = sum(item.embeds.shape[0] for item, _ in items)
    assert prefiller.describe()["forwards"] >= -(-total // max_tokens) > 1
    for got, (_, ref) in zip(results, items):
        assert_same(got, ref)
    assert torch.equal(results[3][0], empty.past[0]) and torch.equal(results[3][1], empty.past[1])


def test_results_are_fresh_tensors(lm, items) -> None:
    inputs = [item for item, _ in items]
    kept = [(item.past[0].clone(), item.past[1].clone()) if item.past else None for item in inputs]
    prefiller = Prefiller(lm)
    first = prefiller.run(inputs)
    snapshot = [(k.clone(), v.clone()) for k, v in first]
    tensors = [t for kv in first for t in kv]
    for t in tensors:  # each owns its storage: no view of a workspace or of another result
        assert t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == len(tensors)
    prefiller.run(inputs)  # a second call (a new workspace) leaves the first results alone
    with torch.inference_mode():  # and writing one result changes no other, nor the inputs
        first[0][0].fill_(7.0)
    for (k, v), (k0, v0) in zip(first[1:], snapshot[1:]):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    for item, past in zip(inputs, kept):
        assert past is None or (torch.equal(item.past[0], past[0]) and torch.equal(item.past[1], past[1]))


def test_bad_shapes_are_refused(lm, items) -> None:
    item = items[0][0]
    with pytest.raises(ValueError, match="positions"):
        Prefiller(lm).run([PrefillItem(None, item.embeds, item.positions[:, :-1])])
    with pytest.raises(ValueError):
        Prefiller(lm, max_tokens=0)


@pytest.mark.skipif(not kernels.available(torch.device("cpu")), reason="needs triton with TRITON_INTERPRET=1")
def test_fused_kernels_give_the_same_results(lm, items) -> None:
    prefiller = Prefiller(lm, fused=True, max_tokens=200)
    assert prefiller.describe()["kernels"] == "triton", prefiller.describe()
    small = [items[1], (PrefillItem(None, items[0][0].embeds[:60], items[0][0].positions[:, :60]), None)]
    results = prefiller.run([item for item, _ in small])
    assert_same(results[0], small[0][1])
    item = small[1][0]
    assert_same(results[1], reference(lm, None, item.embeds, item.positions))


def test_graphs_need_cuda_and_leave_the_results_alone(lm, items) -> None:
    """CUDA graphs of a lone camera's update are checked against the eager forward when captured, on a GPU
    (tools/check_prefill.py); without CUDA they are off, with the reason, and the path is the eager one."""
    prefiller = Prefiller(lm, graphs=True)
    assert prefiller.describe()["graphs_off"] == "needs CUDA with the varlen kernel and the fused kernels"
    item, expected = items[1]
    assert_same(prefiller.run([item])[0], expected)
    assert prefiller.describe()["graph_replays"] == 0
    assert Prefiller(lm).describe()["graphs_off"] == "off"
