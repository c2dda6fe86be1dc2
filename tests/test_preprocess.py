from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoProcessor

from livewatch.engine.prompting.preprocess import VisionSpec, pair_input, patchify, target_size, tokens_per_pair
from engine_helpers import make_pair

SPEC = VisionSpec(14, 2, 2, 3136, 100352, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def test_1080p_pair_at_the_default_cap_is_120_tokens() -> None:
    assert target_size(1080, 1920, SPEC) == (224, 420)
    assert tokens_per_pair(1080, 1920, SPEC) == 120
    rows, grid = pair_input(make_pair(0, 0.0, size=(1080, 1920)), SPEC)
    assert grid == (1, 16, 30)
    assert rows.shape == (16 * 30, 3 * 2 * 14 * 14)


def test_prototype_frame_size_is_capped() -> None:
    # The prototype fed 1092x1932 frames uncapped: 78x138 patches per grid. Capped, it is 120 tokens.
    assert tokens_per_pair(1092, 1932, SPEC) == 120


@settings(max_examples=200, deadline=None)
@given(st.integers(16, 4320), st.integers(16, 7680))
def test_no_pair_exceeds_the_cap(h: int, w: int) -> None:
    if max(h, w) / min(h, w) > 200:
        return  # smart_resize rejects extreme aspect ratios
    th, tw = target_size(h, w, SPEC)
    assert th % 28 == 0 and tw % 28 == 0
    assert th * tw <= SPEC.max_pixels
    assert tokens_per_pair(h, w, SPEC) <= SPEC.max_pixels // 784


def test_patch_layout_matches_the_hf_video_processor(tiny_model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    frames = np.random.default_rng(1).integers(0, 255, size=(4, 112, 196, 3), dtype=np.uint8)
    ours, grid = patchify(frames, SPEC)
    theirs = processor.video_processor(videos=[frames], do_resize=False, return_tensors="pt")
    assert theirs["video_grid_thw"].tolist() == [list(grid)]
    torch.testing.assert_close(ours, theirs["pixel_values_videos"], rtol=0, atol=1e-5)
