from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from livewatch.engine.prompting.detokenize import IncrementalDecoder


def test_multibyte_characters_are_released_whole(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Door: 摄像头 sees 🚚 at 12:00 — café"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 2  # byte-level pieces: some characters span several tokens
    dec = IncrementalDecoder(tok)
    deltas = [dec.push(i) for i in ids]
    deltas.append(dec.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_special_tokens_are_not_emitted(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    dec = IncrementalDecoder(tok)
    out = [dec.push(i) for i in tok("<|im_start|>hi<|im_end|>", add_special_tokens=False)["input_ids"]]
    assert "".join(out) + dec.flush() == "hi"
