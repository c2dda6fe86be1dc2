"""The batched vision tower (livewatch.engine.model.visiontower) against transformers' own tower (tiny model, float32, CPU).

The tiny model's tower has a window block (0) and a full-attention block (1); its window is 112 px = 8 patches,
so the grids here (224x420 -> 16x30 patches, 168x196 -> 12x14) have smaller windows at their right and bottom
edges. Most towers here run with ``self_check=False``: a failing fast path would otherwise fall back to
transformers' tower and the comparison would pass on transformers' own numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from livewatch.engine import synthetic
from livewatch.engine.model.loading import LoadedModel, load_model
from livewatch.engine.prompting.preprocess import pair_input
from livewatch.engine.model.visiontower import VisionTower

WIDE = (224, 420)  # grid (1, 16, 30): 2 x 4 windows of 4 x 4 merge units, the last column 3 units wide
SMALL = (168, 196)  # grid (1, 12, 14): 2 x 2 windows, partial in both directions (four window sizes)


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), "cpu", "float32")


def items(lm: LoadedModel, size: tuple[int, int], n: int, first: int = 0) -> list[tuple[torch.Tensor, tuple[int, int, int]]]:
    return [pair_input(synthetic.pair(first + i, synthetic.START + 2.0 * i, size), lm.spec) for i in range(n)]


def tower(lm: LoadedModel, **kwargs) -> VisionTower:
    return VisionTower(lm.visual, lm.spec, lm.device, use_graphs=False, **{"self_check": False, **kwargs})


@torch.inference_mode()
def reference(lm: LoadedModel, item: tuple[torch.Tensor, tuple[int, int, int]]) -> torch.Tensor:
    """transformers' tower on one pair alone, as livewatch.engine.prompting.vision calls it."""
    rows, grid = item
    out = lm.visual(rows.to(lm.device, dtype=lm.dtype), grid_thw=torch.tensor([grid]))
    return out.pooler_output


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    scale = theirs.abs().max().item()
    assert scale > 1.0  # real features, not a degenerate output
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4 * scale, f"max abs error {err:.3g} at scale {scale:.3g}"


def test_grids_exercise_partial_windows_and_both_block_kinds(lm: LoadedModel) -> None:
    t = tower(lm)
    assert t.full_blocks and len(t.full_blocks) < len(t.blocks)
    t.encode(items(lm, WIDE, 1) + items(lm, SMALL, 1))
    grids = t.describe()["grids"]
    # [windows, patches per window] per window size: full 8x8-patch windows, then the smaller ones at the edges
    assert grids["16x30"]["windows"] == [[6, 64], [2, 48]]
    assert grids["12x14"]["windows"] == [[1, 64], [1, 48], [1, 32], [1, 24]]


def test_one_pair(lm: LoadedModel) -> None:
    item = items(lm, WIDE, 1)[0]
    (ours,) = tower(lm).encode([item])
    assert ours.shape == (16 * 30 // 4, lm.model.config.vision_config.out_hidden_size)
    assert_close(ours, reference(lm, item))


def test_windows_matter(lm: LoadedModel) -> None:
    """The comparisons can fail: the same tower with every block attending over the whole pair is far off."""
    item = items(lm, WIDE, 1)[0]
    t = tower(lm)
    t.full_blocks = frozenset(range(len(t.blocks)))
    (ours,) = t.encode([item])
    theirs = reference(lm, item)
    assert (ours - theirs).abs().max().item() > 1e-2 * theirs.abs().max().item()


def test_several_pairs_of_one_grid_in_one_call(lm: LoadedModel) -> None:
    batch = items(lm, WIDE, 5)
    t = tower(lm)
    out = t.encode(batch)
    assert len(out) == 5 and t.tower_calls == 1 and t.pairs_encoded == 5
    for ours, item in zip(out, batch):
        assert_close(ours, reference(lm, item))
    assert (out[0] - out[1]).abs().max().item() > 1e-2  # pairs differ: one pair's features are not another's


def test_mixed_grids_keep_item_order(lm: LoadedModel) -> None:
    wide, small = items(lm, WIDE, 3), items(lm, SMALL, 3, first=10)
    mixed = [wide[0], small[0], small[1], wide[1], small[2], wide[2]]
    t = tower(lm)
    out = t.encode(mixed)
    assert t.tower_calls == 2  # one batched computation per grid
    for ours, item in zip(out, mixed):
        assert_close(ours, reference(lm, item))


def test_more_pairs_than_max_batch_are_chunked(lm: LoadedModel) -> None:
    batch = items(lm, SMALL, 10)
    t = tower(lm, max_batch=4)
    assert t.buckets == (1, 2, 4)
    out = t.encode(batch)
    assert t.tower_calls == 3 and t.pairs_encoded == 10
    for ours, item in zip(out, batch):
        assert_close(ours, reference(lm, item))


def test_padding_to_a_bucket_changes_nothing(lm: LoadedModel) -> None:
    batch = items(lm, WIDE, 3)  # padded to 4 with a zero pair
    plain, padded = tower(lm).encode(batch), tower(lm, pad_eager=True).encode(batch)
    for a, b, item in zip(plain, padded, batch):
        assert_close(b, a)
        assert_close(b, reference(lm, item))


def test_triton_rotary_matches(lm: LoadedModel) -> None:
    """The rotary kernel CUDA runs (here CPU tensors under Triton's interpreter, set by conftest.py)."""
    batch = items(lm, SMALL, 2)
    t = tower(lm, fused_rotary=True)
    assert t.describe()["rotary"] == "triton"
    for ours, item in zip(t.encode(batch), batch):
        assert_close(ours, reference(lm, item))


def test_self_check_passes_and_is_reported(lm: LoadedModel) -> None:
    t = tower(lm, self_check=True)
    batch = items(lm, SMALL, 2)
    out = t.encode(batch)
    info = t.describe()
    assert info["mode"] == "eager" and info["rotary"] == "torch" and info["fallbacks"] == {}
    assert info["fallback_calls"] == 0
    assert 0.0 <= info["grids"]["12x14"]["check_error"] < 1e-4
    for ours, item in zip(out, batch):
        assert_close(ours, reference(lm, item))


def test_failed_self_check_falls_back_to_transformers(lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tower(lm, self_check=True)
    real = VisionTower.forward
    monkeypatch.setattr(VisionTower, "forward", lambda self, plan, x: real(self, plan, x) * 1.1)
    batch = items(lm, SMALL, 2)
    out = t.encode(batch)
    info = t.describe()
    assert "self-check failed" in info["fallbacks"]["12x14"] and info["fallback_calls"] == 1
    for ours, item in zip(out, batch):
        assert_close(ours, reference(lm, item))


def test_error_on_the_fast_path_falls_back(lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tower(lm)
    wide = items(lm, WIDE, 2)
    t.encode(wide[:1])  # the grid's plan works

    def broken(self, plan, x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(VisionTower, "forward", broken)
    out = t.encode(wide)
    assert "kernel exploded" in t.describe()["fallbacks"]["16x30"]
    assert t.tower_calls == 2 and t.pairs_encoded == 3
    for ours, item in zip(out, wide):
        assert_close(ours, reference(lm, item))
