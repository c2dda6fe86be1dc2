"""The tiny checkpoint loads through the same entry points as the real model and runs a video forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

import make_tiny_model


def test_config_fields_match_the_real_architecture(tiny_model_dir: Path) -> None:
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    vision = cfg["vision_config"]
    assert (vision["patch_size"], vision["temporal_patch_size"], vision["spatial_merge_size"]) == (14, 2, 2)
    assert vision["tokens_per_second"] == 2
    head_dim = cfg["text_config"]["hidden_size"] // cfg["text_config"]["num_attention_heads"]
    assert sum(cfg["text_config"]["rope_parameters"]["mrope_section"]) == head_dim // 2


def test_special_tokens_follow_the_real_layout(tiny_model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in make_tiny_model.SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["video_token_id"] == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg["vision_start_token_id"] == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    # Byte-level BPE round-trips any text, including text it never saw in training.
    text = "Is anyone at the door? Ça va, 12:34 — 摄像头"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_video_forward_pass_has_the_expected_token_count(tiny_model_dir: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happened?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 224, 420, 3), dtype=np.uint8)
    inputs = processor(text=[text], videos=[frames], return_tensors="pt", videos_kwargs={"do_resize": False})
    grid = inputs["video_grid_thw"]
    assert grid.tolist() == [[2, 16, 30]]
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert n_video == int(grid.prod()) // 4 == 240
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
