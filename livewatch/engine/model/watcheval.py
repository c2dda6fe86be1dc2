"""Watch evaluation: P(yes) of many yes/no questions on their cameras' shared prefixes, in one forward, no decoding.

A watch's question is an ordinary question suffix (the camera's question template around a fixed yes/no prompt);
its answer is read from the logits of the first answer position: P(yes) = the probability mass of the tokenizer's
"yes" tokens over that of "yes" and "no" tokens. Nothing is generated and nothing is written to any cache.

All watches due in one engine step run together, whatever their cameras, without copying any prefix per watch:
each layer computes the queries, keys and values of every watch's suffix ([W, S] tokens, padded to the longest),
then attends in two parts that are joined in one softmax:

- to the camera's prefix: the cameras' prefixes are padded into one [C, kv_heads, P_max, head_dim] tensor per
  layer (a copy per camera per evaluation step, not per watch), and the queries of the watches of camera c, laid
  out as [C, kv_heads, W_max * n_rep * S, head_dim], multiply it in one batched product; padded keys are masked;
- to the watch's own suffix: causal, [W, kv_heads, n_rep * S, S].

The two score blocks are concatenated along the keys, one softmax (float32) gives the exact attention over
prefix + suffix, and the two value products are summed. The layer's own weights, rotary tables and norms are used
(fastpath.fuse_projections / fused_weights), so the arithmetic is the model's; the tests check it against a
from-scratch forward of the same prompt. A ``max_cells`` bound on the padded attention
splits a large set of watches into several forwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half

from livewatch.engine.model import kernels
from livewatch.engine.model.fastpath import fuse_projections, fused_weights
from livewatch.engine.model.loading import LoadedModel

YES_WORDS = ("Yes", "yes", "YES", " Yes", " yes")
NO_WORDS = ("No", "no", "NO", " No", " no")


@dataclass(frozen=True)
class WatchQuery:
    camera: str
    prefix: tuple[torch.Tensor, torch.Tensor]  # the camera's stacked prefix (k, v): [layers, kv_heads, P, D]
    next_position: int  # M-RoPE position of the suffix's first token
    suffix: tuple[int, ...]  # token ids from <|vision_end|> to the assistant turn


def single_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The ids of the words that are one token each (others would need decoding to score)."""
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(tokens) == 1 and tokens[0] not in ids:
            ids.append(int(tokens[0]))
    return ids


class WatchEvaluator:
    def __init__(self, lm: LoadedModel, max_cells: int = 1 << 26) -> None:
        text = lm.text_model
        fuse_projections(text)
        self.lm = lm
        self.embed = text.embed_tokens
        self.rotary = text.rotary_emb
        self.layers = list(text.layers)
        self.norm = text.norm
        shape = lm.attention
        self.n_heads, self.kv_heads, self.head_dim = shape.heads, shape.kv_heads, shape.head_dim
        self.n_rep, self.scaling = shape.n_rep, shape.scaling
        # attention scores of one forward and layer: cameras x W_max x n_rep x S x P_max (padding included), which
        # bounds the float32 score, softmax and probability tensors (~12 bytes a cell at the peak)
        self.max_cells = max_cells
        self.yes_ids = single_token_ids(lm.tokenizer, YES_WORDS)
        self.no_ids = single_token_ids(lm.tokenizer, NO_WORDS)
        if not self.yes_ids or not self.no_ids:
            raise ValueError("the tokenizer has no single-token yes/no words")
        head = lm.model.lm_head.weight
        self.answer_rows = head[self.yes_ids + self.no_ids]  # the only logits a watch reads
        self.evaluations = 0
        self.forwards = 0

    @torch.inference_mode()
    def probabilities(self, queries: Sequence[WatchQuery]) -> list[float]:
        """P(yes) of each query, in order. Watches are grouped by camera and cut into forwards whose padded
        attention stays within ``max_cells``."""
        out: list[float | None] = [None] * len(queries)
        for chunk in self._chunks(queries):
            for index, p in zip(chunk, self._forward([queries[i] for i in chunk])):
                out[index] = p
        self.evaluations += len(queries)
        return [p if p is not None else math.nan for p in out]

    def _chunks(self, queries: Sequence[WatchQuery]) -> list[list[int]]:
        by_camera: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_camera.setdefault(q.camera, []).append(i)
        chunks: list[list[int]] = []
        current: list[list[int]] = []  # the current chunk's watches, per camera

        def cells(groups: list[list[int]]) -> int:
            members = [i for g in groups for i in g]
            w_max = max(len(g) for g in groups)
            s = max(len(queries[i].suffix) for i in members)
            p = max(int(queries[i].prefix[0].shape[2]) for i in members)
            return len(groups) * w_max * self.n_rep * s * p

        for indices in by_camera.values():
            for start in range(0, len(indices), 1):
                group = indices[start : start + 1]
                if current and current[-1] and queries[current[-1][0]].camera == queries[group[0]].camera:
                    trial = [*current[:-1], current[-1] + group]
                else:
                    trial = [*current, group]
                if current and cells(trial) > self.max_cells:
                    chunks.append([i for g in current for i in g])
                    current = [group]
                else:
                    current = trial
        if current:
            chunks.append([i for g in current for i in g])
        return chunks

    @torch.inference_mode()
    def prefix_attention(self, query: WatchQuery, rows_from: int) -> torch.Tensor:
        """The attention mass the suffix positions ``rows_from``.. put on each prefix position, summed over
        layers, heads and those rows: [P] float32 (evidence ranking: the suffix is question + answer)."""
        mass = torch.zeros(int(query.prefix[0].shape[2]), dtype=torch.float32, device=self.lm.device)
        self._forward([query], collect=(mass, rows_from))
        return mass

    def _forward(self, queries: Sequence[WatchQuery],
                 collect: tuple[torch.Tensor, int] | None = None) -> list[float]:
        self.forwards += 1
        dev = self.lm.device
        cameras = list(dict.fromkeys(q.camera for q in queries))
        members = [[i for i, q in enumerate(queries) if q.camera == c] for c in cameras]
        w_max = max(len(m) for m in members)
        lengths = [len(q.suffix) for q in queries]
        s = max(lengths)
        w, c_n = len(queries), len(cameras)
        # the suffixes, padded (padding repeats the last token; the causal mask keeps real tokens from it)
        tokens = torch.tensor([list(q.suffix) + [q.suffix[-1]] * (s - len(q.suffix)) for q in queries], device=dev)
        positions = torch.tensor([[q.next_position + j for j in range(s)] for q in queries], device=dev)
        h = self.embed(tokens)  # [W, S, H]
        cos, sin = self.rotary(h, positions[None].expand(3, -1, -1))  # [W, S, D]
        cos, sin = cos[:, None], sin[:, None]  # [W, 1, S, D]
        # the cameras' prefixes, padded, one layer at a time into one buffer: [C, kv_heads, P_max, D]
        first = [next(q for q in queries if q.camera == c).prefix for c in cameras]
        p_lens = [int(k.shape[2]) for k, _ in first]
        p_max = max(p_lens)
        shape = (c_n, self.kv_heads, p_max, self.head_dim)
        k_pre = torch.zeros(shape, dtype=h.dtype, device=dev)
        v_pre = torch.zeros(shape, dtype=h.dtype, device=dev)
        # slot of each watch in the [C, W_max] grid, and the masks
        slot = torch.empty(w, dtype=torch.long)
        for ci, m in enumerate(members):
            for j, qi in enumerate(m):
                slot[qi] = ci * w_max + j
        slot = slot.to(dev)
        neg = torch.finfo(torch.float32).min
        key = torch.arange(p_max, device=dev)
        pre_mask = torch.where(key[None] < torch.tensor(p_lens, device=dev)[:, None], 0.0, neg)  # [C, P_max]
        causal = torch.arange(s, device=dev)
        suf_mask = torch.where(causal[None, :] <= causal[:, None], 0.0, neg)  # [S, S]
        masks = (pre_mask[:, None, None, :], suf_mask)
        for i, layer in enumerate(self.layers):
            for ci, (k, v) in enumerate(first):
                k_pre[ci, :, : p_lens[ci]].copy_(k[i])
                v_pre[ci, :, : p_lens[ci]].copy_(v[i])
            h = self._layer(layer, h, cos, sin, k_pre, v_pre, slot, c_n, w_max, masks, collect)
        last = torch.tensor([n - 1 for n in lengths], device=dev)
        final = kernels.ref_rms_norm(h[torch.arange(w, device=dev), last], self.norm.weight,
                                     self.norm.variance_epsilon)
        logits = (final @ self.answer_rows.T).float()  # [W, yes + no]
        n_yes = len(self.yes_ids)
        mass = torch.logsumexp(logits[:, :n_yes], -1) - torch.logsumexp(logits, -1)
        return [float(p) for p in mass.exp().tolist()]

    def _layer(self, layer: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_pre: torch.Tensor,
               v_pre: torch.Tensor, slot: torch.Tensor, c_n: int, w_max: int,
               masks: tuple[torch.Tensor, torch.Tensor],
               collect: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
        w, s, _ = h.shape
        kvh, rep, d = self.kv_heads, self.n_rep, self.head_dim
        nq, nk = self.n_heads * d, kvh * d
        wq, bias, gu = fused_weights(layer)
        x = kernels.ref_rms_norm(h, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        qkv = torch.nn.functional.linear(x, wq, bias)
        qk = qkv[..., : nq + nk].view(w, s, self.n_heads + kvh, d).transpose(1, 2)  # [W, heads + kvh, S, D]
        qk = qk * cos + rotate_half(qk) * sin
        q = qk[:, : self.n_heads].reshape(w, kvh, rep * s, d)  # query head h shares KV head h // rep
        k_suf = qk[:, self.n_heads :]  # [W, kvh, S, D]
        v_suf = qkv[..., nq + nk :].view(w, s, kvh, d).transpose(1, 2)
        # every watch in its camera's row of a [C, W_max] grid: one batched product per part, no prefix copied
        grid_q = q.new_zeros((c_n * w_max, kvh, rep * s, d)).index_copy_(0, slot, q)
        grid_q = grid_q.view(c_n, w_max, kvh, rep * s, d).transpose(1, 2).reshape(c_n, kvh, w_max * rep * s, d)
        pre = torch.matmul(grid_q, k_pre.transpose(-1, -2)).float() * self.scaling + masks[0]  # [C, kvh, R, P]
        suf = torch.matmul(q, k_suf.transpose(-1, -2)).float() * self.scaling  # [W, kvh, rep * S, S]
        grid_s = suf.new_zeros((c_n * w_max, kvh, rep * s, s)).index_copy_(0, slot, suf)
        grid_s = grid_s.view(c_n, w_max, kvh, rep, s, s) + masks[1]  # causal within each watch's suffix
        grid_s = grid_s.transpose(1, 2).reshape(c_n, kvh, w_max * rep * s, s)
        p_len = pre.shape[-1]
        probs = torch.softmax(torch.cat([pre, grid_s], -1), -1)  # one softmax over prefix + suffix, float32
        if collect is not None:  # one query (C = W_max = 1): rows are (rep, s)
            mass, rows_from = collect
            mass += probs[0, :, :, :p_len].reshape(kvh, rep, s, p_len)[:, :, rows_from:].sum((0, 1, 2))
        probs = probs.to(h.dtype)
        o_pre = torch.matmul(probs[..., :p_len], v_pre)  # [C, kvh, R, D]
        o_pre = o_pre.view(c_n, kvh, w_max, rep * s, d).transpose(1, 2).reshape(c_n * w_max, kvh, rep * s, d)
        p_suf = probs[..., p_len:].view(c_n, kvh, w_max, rep * s, s).transpose(1, 2).reshape(c_n * w_max, kvh,
                                                                                            rep * s, s)
        o = o_pre.index_select(0, slot) + torch.matmul(p_suf.index_select(0, slot), v_suf)
        o = o.view(w, kvh, rep, s, d).permute(0, 3, 1, 2, 4).reshape(w, s, nq)
        h = h + layer.self_attn.o_proj(o)
        x = kernels.ref_rms_norm(h, layer.post_attention_layernorm.weight,
                                 layer.post_attention_layernorm.variance_epsilon)
        y = torch.nn.functional.linear(x, gu)
        ng = gu.shape[0] // 2
        return h + layer.mlp.down_proj(layer.mlp.act_fn(y[..., :ng]) * y[..., ng:])
