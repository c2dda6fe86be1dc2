#!/usr/bin/env python3
"""Write a tiny Qwen2.5-VL checkpoint with random weights, offline, in seconds.

    python tools/make_tiny_model.py DIR [--seed N]
    python tools/make_tiny_model.py DIR --arch qwen2.5-vl-3b --device cuda   # full size, random, bf16

The checkpoint has the real architecture class (Qwen2_5_VLForConditionalGeneration) and the config fields that
matter to livewatch's code paths (patch 14, temporal_patch_size 2, spatial_merge_size 2, tokens_per_second 2,
M-RoPE sections, full-attention vision blocks, tied embeddings), only smaller. Its tokenizer is a byte-level BPE
trained on the spot with Qwen2's pre-tokenizer; the special tokens follow the real model's order (<|endoftext|>,
<|im_start|>, <|im_end|>, ..., <|vision_start|>, <|vision_end|>, <|vision_pad|>, <|image_pad|>, <|video_pad|>, ...)
directly after the learned vocabulary, and the config's token ids point at them. The chat template and the
image/video processor configs are the real model's, so ``AutoProcessor.from_pretrained(DIR)`` and
``Qwen2_5_VLForConditionalGeneration.from_pretrained(DIR)`` load it exactly as they load the real model.
Random weights answer noise: tests compare code paths against each other, never against expected text.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# The real Qwen2.5-VL special tokens, in the real id order (151643 onwards in the real vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# Qwen2.5-VL-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_WORDS = (
    "the a an is are was were be been camera video frame person people car truck door window street room light "
    "dark red green blue white black yellow left right top bottom moving standing walking running entered left "
    "what when where who how many is there anyone at in on of to from with and or not yes no it this that time "
    "second seconds minute minutes hour ago now before after first last scene change changed changes happened "
    "describe tell me about you are a helpful assistant watching live system user assistant question answer "
    "test pattern color bars numbers counter image picture object objects motion still empty full open closed"
).split()


def _corpus(rng: random.Random, lines: int = 3000) -> list[str]:
    out = []
    for _ in range(lines):
        n = rng.randint(3, 14)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        sentence = " ".join(words)
        out.append(sentence.capitalize() + rng.choice([".", "?", "!", ",", ":"]))
    out.append("2026-11-26T12:00:00+00:00 12:34:56 UTC +01:00 Z T - : / ( ) [ ] ' \" ; _ # % & * @")
    return out


def train_tokenizer(vocab_size: int, seed: int):
    """A byte-level BPE with Qwen2's pre-tokenizer, trained on a generated English corpus."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(random.Random(seed)), trainer=trainer)
    state = json.loads(tok.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    return vocab, merges


def build_processor(seed: int = 0, vocab_size: int = 1024):
    """The processor (trained tokenizer, chat template, image/video processors) and the special token ids."""
    from transformers import Qwen2_5_VLProcessor, Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    vocab, merges = train_tokenizer(vocab_size, seed)
    base = len(vocab)
    ids = {tok: base + i for i, tok in enumerate(SPECIAL_TOKENS)}
    # Qwen2Tokenizer adds only the tokens it knows as special itself; register all of them in the real order.
    full_vocab = dict(vocab)
    full_vocab.update(ids)
    tokenizer = Qwen2Tokenizer(
        vocab=full_vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=131072,
    )
    for tok, want in ids.items():
        got = tokenizer.convert_tokens_to_ids(tok)
        if got != want:
            raise RuntimeError(f"special token {tok} got id {got}, expected {want}")
    tokenizer.chat_template = CHAT_TEMPLATE
    size = {"shortest_edge": 3136, "longest_edge": 12845056}
    common = dict(size=size, patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**common),
        chat_template=CHAT_TEMPLATE,
    )
    return processor, ids


# The real Qwen2.5-VL-3B-Instruct architecture (its config.json), for benchmarks with random weights.
ARCH_3B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.02,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
}
ARCH_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "tokens_per_second": 2,
    "window_size": 112,
    "out_hidden_size": 2048,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "initializer_range": 0.02,
}
# The tiny model: the same fields, smaller. initializer_range 0.3 (the real models use 0.02): with tiny random
# weights a small init makes every greedy answer the same token repeated, which would let token-equality tests pass
# vacuously.
ARCH_TINY_TEXT = {k: v for k, v in ARCH_3B_TEXT.items() if k != "vocab_size"} | {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "initializer_range": 0.3,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
}
ARCH_TINY_VISION = ARCH_3B_VISION | {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "fullatt_block_indexes": [1],
    "initializer_range": 0.3,
}


def model_config(ids: dict[str, int], arch: str = "tiny"):
    """A Qwen2_5_VLConfig of the given size whose token ids point at the processor's special tokens."""
    from transformers import Qwen2_5_VLConfig

    text = dict(ARCH_3B_TEXT if arch == "qwen2.5-vl-3b" else ARCH_TINY_TEXT)
    vision = dict(ARCH_3B_VISION if arch == "qwen2.5-vl-3b" else ARCH_TINY_VISION)
    text.setdefault("vocab_size", max(ids.values()) + 1)
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    config.bos_token_id = ids["<|endoftext|>"]
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    return config


def build(out_dir: Path, seed: int = 0, vocab_size: int = 1024, arch: str = "tiny", device: str = "cpu") -> Path:
    """Write the checkpoint: the tiny architecture in float32 (tests), or the 3B architecture with random weights
    in bfloat16 (~7.5 GB; to run the daemon on a GPU at full size where the real weights cannot be downloaded)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    out_dir.mkdir(parents=True, exist_ok=True)
    processor, ids = build_processor(seed, vocab_size)
    config = model_config(ids, arch)
    torch.manual_seed(seed)
    if arch == "tiny":
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    else:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "LIVEWATCH_TINY_RANDOM_MODEL").write_text(
        "Random weights written by tools/make_tiny_model.py: answers are noise.\n", encoding="utf-8"
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0, help="seed for the weights and the tokenizer corpus")
    parser.add_argument("--arch", choices=["tiny", "qwen2.5-vl-3b"], default="tiny",
                        help="tiny (tests, float32) or the full 3B architecture (random weights, bfloat16)")
    parser.add_argument("--device", default="cpu", help="where to initialise the weights (3B: cuda is much faster)")
    args = parser.parse_args(argv)
    path = build(args.out_dir, seed=args.seed, arch=args.arch, device=args.device)
    print(f"{args.arch} random-weight Qwen2.5-VL checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
