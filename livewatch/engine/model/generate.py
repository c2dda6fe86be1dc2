"""The model's forward steps with explicit positions, and token selection.

KV caches are handed to transformers as ``DynamicCache`` objects built around our own tensors: a question's cache
starts as views of the camera's shared prefix, and DynamicLayer.update concatenates into new tensors, so the
prefix tensors are never written. (Checked against transformers 5.17's cache_utils; the suite pins that version.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from livewatch.engine.results import SamplingParams
from livewatch.errors import EngineError
from livewatch.log import get_logger

log = get_logger("livewatch.engine")

KV = list[tuple[torch.Tensor, torch.Tensor]]


def model_failure(exc: BaseException, doing: str) -> EngineError:
    """The one translation of a failure inside the model into the error that fails the jobs it touched: out of
    GPU memory or another model error. The client's message has no exception text (shapes, device state): the
    log keeps it."""
    oom = isinstance(exc, torch.OutOfMemoryError)
    log.error("engine.model_error", doing=doing, out_of_memory=oom, error=f"{type(exc).__name__}: {exc}")
    return EngineError(f"{'out of GPU memory' if oom else 'model error'} while {doing}", out_of_memory=oom)


def stack_prefix(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer [1, kv_heads, P, head_dim] tensors -> two [layers, kv_heads, P, head_dim] tensors."""
    return torch.stack([k[0] for k, _ in kv]), torch.stack([v[0] for _, v in kv])


def cache_from_kv(config: Any, kv: KV | None) -> DynamicCache:
    """A DynamicCache whose layers start as the given tensors (no copy)."""
    cache = DynamicCache(config=config)
    if kv:
        for layer, (k, v) in zip(cache.layers, kv):
            assert isinstance(layer, DynamicLayer)
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
    return cache


def kv_from_cache(cache: DynamicCache) -> KV:
    out: KV = []
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer) and layer.keys is not None and layer.values is not None
        out.append((layer.keys, layer.values))
    return out


def kv_nbytes(kv: KV | None) -> int:
    if not kv:
        return 0
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def kv_length(kv: KV | None) -> int:
    return int(kv[0][0].shape[-2]) if kv else 0


def position_tensor(positions: np.ndarray, device: torch.device) -> torch.Tensor:
    """(3, S) numpy -> (3, 1, S) long tensor, the explicit M-RoPE position ids transformers accepts."""
    return torch.from_numpy(np.ascontiguousarray(positions)).to(device=device, dtype=torch.long).unsqueeze(1)


def forward(lm: Any, embeds: torch.Tensor, positions: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
    """Run the language model on ``embeds`` (1, S, H) after ``cache``; returns the last token's logits (V,)."""
    out = lm.text_model(inputs_embeds=embeds, position_ids=positions, past_key_values=cache, use_cache=True)
    return lm.model.lm_head(out.last_hidden_state[:, -1, :])[0].float()


def pick_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_scores, dim=-1) > params.top_p  # keep the token that crosses top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
