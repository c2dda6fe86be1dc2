"""Prefix prefills of several cameras in one forward, each with its own positions and its own KV.

A camera's prefix update (EngineCore.encode_many) runs the language model on its new tokens after the entries it keeps,
one camera at a time: an extension of a hundred tokens is bound by kernel launches, and a re-prefill of a thousand
leaves the GEMMs short of rows. ``Prefiller.run`` takes several updates (``PrefillItem``: the kept K/V, the new
embeddings, their M-RoPE positions) and drives the language model's layers with our code, as the decode step does
(``livewatch.engine.model.fastpath``: fused [q; k; v] and [gate; up] weights, the model's rotary tables and norms):

- Varlen, no padding in the GEMMs: the new tokens of all items are packed into one [T, hidden] stream (T = sum of
  N_i) for the norms, the projections, the rotary (positions packed too) and the MLP.
- One workspace per call holds every item's keys and values, packed along the sequence and head-major:
  [layers, kv_heads, S, head_dim], S = sum of (K_i + N_i). Item i's rows are its K_i kept entries (copied in)
  followed by its N_i new ones, which each layer writes before its attention.
- One attention call per layer for all items. Query j of item i sees keys 0 .. K_i + j of its own item: causal,
  aligned to the end of the item's keys. On CUDA that is flash attention's varlen kernel (queries packed, keys
  per item straight from the workspace, grouped-query attention native), used once it agreed with the masked
  path on random inputs at start-up; else (CPU, or no such kernel) SDPA over queries and keys padded per item with
  a boolean mask, the query heads that share a KV head laid out as extra query rows (exact for any mask).
- Only the layers' K/V are wanted: the last layer stops after its K/V projection; no final norm, no lm_head.
- Each item's result is its rows of the workspace copied out: fresh [layers, kv_heads, K_i + N_i, head_dim]
  tensors (a call of one item returns the workspace itself, which nothing else holds).
- A call whose T exceeds ``max_tokens`` runs as several forwards; an item longer than the room left is prefilled
  in chunks, each after the K/V of the previous one (chunked causal prefill: the same numbers).

With ``fused`` (CUDA; CPU tensors under Triton's interpreter in tests) the norms, with the residual add riding on
them, the rotary of q and k with the K/V writes (forwards of up to 512 tokens) and the MLP's activation run as the
Triton kernels of ``livewatch.engine.model.kernels`` once their self-test passed, as in the decode step. With ``graphs``
(CUDA, varlen and fused kernels) a lone camera's update of up to 1,536 tokens (launch-bound, or short of rows)
replays a CUDA graph per token bucket: a shared workspace of GRAPH_MAX_KEYS rows, the bucket's padding rows
computed row-wise and never read (cu_q/cu_k bound the attention), each graph checked against the eager forward
when captured (at the engine's warm-up, or a bucket's first use).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half

from livewatch.engine.model import kernels
from livewatch.engine.model.fastpath import check_kernels, fuse_projections, fused_weights
from livewatch.engine.model.loading import LoadedModel
from livewatch.log import get_logger

log = get_logger("livewatch.engine")

KVPair = tuple[torch.Tensor, torch.Tensor]
_ROPE_KERNEL_TOKENS = 512  # the fused rotary (a program per token and head) is slower past this (H100: +6 ms at 960)


@dataclass
class PrefillItem:
    past: KVPair | None  # kept entries, stacked (k, v): [layers, kv_heads, K, head_dim] each (K may be 0)
    embeds: torch.Tensor  # [N, hidden] new input embeddings (text and/or vision), model dtype, on the device
    positions: torch.Tensor  # [3, N] int64 M-RoPE positions of the new tokens (on the device or the CPU)

    @property
    def kept(self) -> int:
        return int(self.past[0].shape[2]) if self.past is not None else 0


@dataclass
class _Piece:
    """The tokens [start, start + count) of one item, after ``past`` (its kept entries, or the K/V of its
    previous chunk)."""

    index: int
    start: int
    count: int
    past: KVPair | None

    @property
    def kept(self) -> int:
        return int(self.past[0].shape[2]) if self.past is not None else 0


@dataclass
class _Plan:
    """Where one forward's tokens go: the same for every layer."""

    kept: list[int]
    new: list[int]
    first_key: list[int]  # workspace row where each piece's keys start
    write: torch.Tensor  # [T] workspace row of each new token
    cu_q: torch.Tensor  # [B + 1] int32: packed query offsets
    cu_k: torch.Tensor  # [B + 1] int32: packed key offsets
    max_q: int
    max_k: int
    slots: torch.Tensor  # [T] zeros: the fused rotary kernel's cache slot of each token (one workspace)
    # the masked path only: padded queries [B, N_max] and keys [B, L] as packed rows (padding repeats a real row),
    # the mask [B, 1, n_rep * N_max, L] and each packed query's padded row [T]
    q_rows: torch.Tensor | None = None
    k_rows: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    back: torch.Tensor | None = None


GRAPH_BUCKETS = (64, 128, 256, 512, 1024, 1536)  # new tokens of one camera's update run as a CUDA graph
GRAPH_MAX_KEYS = 8192  # kept + bucket: the graphs' shared workspace (2 x layers x kv_heads x this x head_dim)


@dataclass
class _Graph:
    """One bucket's captured forward and the static tensors it reads (filled before each replay)."""

    bucket: int
    h: torch.Tensor  # [bucket, hidden] embeddings (rows past the update's are stale: row-wise, never read back)
    cos: torch.Tensor  # [bucket, 1, head_dim]
    sin: torch.Tensor
    plan: _Plan  # write rows, cu_q = [0, n], cu_k = [0, kept + n]; max lengths are the bucket's bounds
    graph: Any = None


def _varlen_attention() -> Callable[..., Any] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        return None
    return varlen_attn


class Prefiller:
    """Prefix prefills of several items in one forward (see the module's docstring)."""

    def __init__(self, lm: LoadedModel, *, fused: bool = False, max_tokens: int = 8192,
                 graphs: bool = False) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        text = lm.text_model
        fuse_projections(text)
        self.device, self.dtype = lm.device, lm.dtype
        self.rotary = text.rotary_emb
        self.layers = list(text.layers)
        shape = lm.attention
        self.n_heads, self.kv_heads, self.head_dim = shape.heads, shape.kv_heads, shape.head_dim
        self.n_rep, self.scaling = shape.n_rep, shape.scaling
        self.max_tokens = max_tokens
        self.calls = 0
        self.forwards = 0
        self.fused = False
        self.kernels_off_reason: str | None = None
        if fused:
            _, self.kernels_off_reason = check_kernels(lm)
            self.fused = self.kernels_off_reason is None
            if not self.fused:
                log.warning("engine.prefill_kernels_off", reason=self.kernels_off_reason)
        self._varlen: Callable[..., Any] | None = None
        self._varlen_kwargs: dict[str, Any] = {}
        self.varlen_off_reason: str | None = "not CUDA"
        if self.device.type == "cuda":
            self.varlen_off_reason = self._check_varlen()
        # one camera's short update as a CUDA graph per token bucket (captured at first use, checked against eager)
        self.graphs_off_reason = None if graphs and self._varlen is not None and self.fused else (
            "needs CUDA with the varlen kernel and the fused kernels" if graphs else "off")
        self._graphs: dict[int, _Graph] = {}
        self._workspace: KVPair | None = None
        self.graph_replays = 0

    # -- the call -----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, items: Sequence[PrefillItem]) -> list[KVPair]:
        """New stacked (k, v) per item: [layers, kv_heads, K+N, head_dim], fresh tensors (not views of a shared
        workspace)."""
        results: list[KVPair | None] = [None] * len(items)
        queue: deque[tuple[int, int]] = deque()
        for i, item in enumerate(items):
            n = item.embeds.shape[0]
            if tuple(item.positions.shape) != (3, n) or item.embeds.dim() != 2:
                raise ValueError(f"item {i}: embeds [N, hidden] and positions [3, N] are required, got "
                                 f"{tuple(item.embeds.shape)} and {tuple(item.positions.shape)}")
            if n:
                queue.append((i, 0))
            else:
                results[i] = self._copy_past(item.past)
        self.calls += 1
        while queue:
            pieces: list[_Piece] = []
            room = self.max_tokens
            while queue and room > 0:
                index, start = queue[0]
                left = items[index].embeds.shape[0] - start
                if left > room and pieces and left <= self.max_tokens:
                    break  # whole, in the next forward
                queue.popleft()
                count = min(left, room)
                pieces.append(_Piece(index, start, count, results[index] if start else items[index].past))
                room -= count
                if count < left:  # the rest after this chunk's K/V: a later forward
                    queue.appendleft((index, start + count))
                    break
            for piece, kv in zip(pieces, self._forward(items, pieces)):
                results[piece.index] = kv
        done = [r for r in results if r is not None]
        assert len(done) == len(items)
        return done

    def _copy_past(self, past: KVPair | None) -> KVPair:
        if past is not None:
            return past[0].clone(), past[1].clone()
        empty = torch.empty((len(self.layers), self.kv_heads, 0, self.head_dim), dtype=self.dtype, device=self.device)
        return empty, empty.clone()

    def _forward(self, items: Sequence[PrefillItem], pieces: list[_Piece]) -> list[KVPair]:
        self.forwards += 1
        if len(pieces) == 1 and self.graphs_off_reason is None:
            piece = pieces[0]
            bucket = next((b for b in GRAPH_BUCKETS if b >= piece.count), None)
            if bucket is not None and piece.kept + bucket <= GRAPH_MAX_KEYS:
                graph = self._graph(bucket)
                if graph is not None:
                    item = items[piece.index]
                    return [self._replay(graph, piece, item.embeds[piece.start : piece.start + piece.count],
                                         item.positions[:, piece.start : piece.start + piece.count])]
        return self._forward_eager(items, pieces)

    def _forward_eager(self, items: Sequence[PrefillItem], pieces: list[_Piece]) -> list[KVPair]:
        plan = self._plan([p.kept for p in pieces], [p.count for p in pieces], masked=self._varlen is None)
        dev = self.device
        h = torch.cat([items[p.index].embeds[p.start : p.start + p.count] for p in pieces]).to(dev, self.dtype)
        positions = torch.cat([items[p.index].positions[:, p.start : p.start + p.count].to(dev) for p in pieces], 1)
        shape = (len(self.layers), self.kv_heads, plan.first_key[-1] + plan.kept[-1] + plan.new[-1], self.head_dim)
        k_all = torch.empty(shape, dtype=self.dtype, device=dev)
        v_all = torch.empty(shape, dtype=self.dtype, device=dev)
        for piece, first in zip(pieces, plan.first_key):
            if piece.past is not None and piece.kept:
                k_all[:, :, first : first + piece.kept].copy_(piece.past[0])
                v_all[:, :, first : first + piece.kept].copy_(piece.past[1])
        cos, sin = self.rotary(h, positions.to(torch.long)[:, None, :])  # [1, T, head_dim]
        cos, sin = cos[0, :, None], sin[0, :, None]
        delta: torch.Tensor | None = None
        for i, layer in enumerate(self.layers):
            h, delta = self._layer(layer, h, delta, cos, sin, k_all[i], v_all[i], plan, last=i == len(self.layers) - 1)
        if len(pieces) == 1:
            return [(k_all, v_all)]
        out = []
        for first, kept, new in zip(plan.first_key, plan.kept, plan.new):
            rows = slice(first, first + kept + new)
            out.append((k_all[:, :, rows].clone(memory_format=torch.contiguous_format),
                        v_all[:, :, rows].clone(memory_format=torch.contiguous_format)))
        return out

    # -- one camera's update as a CUDA graph ------------------------------------------------------------------------

    def prepare_graphs(self) -> None:
        """Capture (and check) every bucket's graph now, at start-up, rather than at each bucket's first update."""
        for bucket in (b for b in GRAPH_BUCKETS if self.graphs_off_reason is None):
            self._graph(bucket)

    def _graph(self, bucket: int) -> _Graph | None:
        """The graph of ``bucket`` new tokens after up to GRAPH_MAX_KEYS - bucket kept ones, captured and checked
        against the eager forward; None (and graphs off for good) when either fails."""
        if bucket in self._graphs:
            return self._graphs[bucket]
        try:
            graph = self._capture(bucket)
            error = self._check_graph(graph)
        except Exception as exc:  # capture refused by the driver, out of memory, ...
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            self.graphs_off_reason = f"bucket {bucket}: {error}"
            log.warning("engine.prefill_graphs_off", reason=self.graphs_off_reason)
            self._graphs.clear()
            return None
        self._graphs[bucket] = graph
        return graph

    def _capture(self, bucket: int) -> _Graph:
        dev, dt = self.device, self.dtype
        if self._workspace is None:
            shape = (len(self.layers), self.kv_heads, GRAPH_MAX_KEYS, self.head_dim)
            self._workspace = (torch.zeros(shape, dtype=dt, device=dev), torch.zeros(shape, dtype=dt, device=dev))
        cu = torch.tensor([0, bucket], dtype=torch.int32, device=dev)
        plan = _Plan([0], [bucket], [0], torch.arange(bucket, device=dev), cu, cu.clone(), bucket, GRAPH_MAX_KEYS,
                     torch.zeros(bucket, dtype=torch.int64, device=dev))
        cos = torch.zeros((bucket, 1, self.head_dim), dtype=dt, device=dev)
        g = _Graph(bucket, torch.zeros((bucket, self.layers[0].input_layernorm.weight.shape[0]), dtype=dt,
                                       device=dev), cos, cos.clone(), plan)
        k_all, v_all = self._workspace

        def body() -> None:
            h, delta = g.h, None
            for i, layer in enumerate(self.layers):
                h, delta = self._layer(layer, h, delta, g.cos, g.sin, k_all[i], v_all[i], g.plan,
                                       last=i == len(self.layers) - 1)

        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            body()  # warm-up outside the graph: kernel selection, Triton compilation
        torch.cuda.current_stream(dev).wait_stream(stream)
        g.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g.graph):
            body()
        return g

    def _replay(self, g: _Graph, piece: _Piece, embeds: torch.Tensor, positions: torch.Tensor,
                count: bool = True) -> KVPair:
        assert self._workspace is not None and g.graph is not None
        k_all, v_all = self._workspace
        n, kept = piece.count, piece.kept
        if piece.past is not None and kept:
            k_all[:, :, :kept].copy_(piece.past[0])
            v_all[:, :, :kept].copy_(piece.past[1])
        g.h[:n].copy_(embeds)
        pos = positions.to(self.device, torch.long)
        pos = torch.cat([pos, pos[:, -1:].expand(3, g.bucket - n)], 1) if n < g.bucket else pos
        cos, sin = self.rotary(g.h, pos[:, None, :])
        g.cos.copy_(cos[0, :, None])
        g.sin.copy_(sin[0, :, None])
        g.plan.write.copy_(torch.arange(kept, kept + g.bucket), non_blocking=True)
        g.plan.cu_q.copy_(torch.tensor([0, n], dtype=torch.int32), non_blocking=True)
        g.plan.cu_k.copy_(torch.tensor([0, kept + n], dtype=torch.int32), non_blocking=True)
        g.graph.replay()
        self.graph_replays += count
        return (k_all[:, :, : kept + n].clone(memory_format=torch.contiguous_format),
                v_all[:, :, : kept + n].clone(memory_format=torch.contiguous_format))

    def _check_graph(self, g: _Graph) -> str | None:
        """The graph's K/V against the eager forward for random inputs of a partly filled bucket."""
        gen = torch.Generator().manual_seed(1)
        kept, n = 97, max(1, g.bucket - 7)
        shape = (len(self.layers), self.kv_heads, kept, self.head_dim)
        past = (torch.randn(shape, generator=gen).to(self.device, self.dtype),
                torch.randn(shape, generator=gen).to(self.device, self.dtype))
        embeds = (torch.randn((n, g.h.shape[1]), generator=gen) * 0.02).to(self.device, self.dtype)
        positions = torch.arange(kept, kept + n)[None].expand(3, n).contiguous()
        got = self._replay(g, _Piece(0, 0, n, past), embeds, positions, count=False)
        want = self._forward_eager([PrefillItem(past, embeds, positions)], [_Piece(0, 0, n, past)])[0]
        error = max(float((a.float() - b.float()).norm() / b.float().norm()) for a, b in zip(got, want))
        return None if error <= kernels.tolerance(self.dtype) else f"relative error {error:.2e} against eager"

    # -- one layer ----------------------------------------------------------------------------------------------

    def _norm(self, norm: Any, h: torch.Tensor, delta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h + delta, weight * rms_norm(h + delta)); the Triton kernel adds in place."""
        if self.fused:
            return h, kernels.add_rms_norm(h, delta, norm.weight, norm.variance_epsilon)
        if delta is not None:
            h = h + delta
        return h, kernels.ref_rms_norm(h, norm.weight, norm.variance_epsilon)

    def _layer(self, layer: Any, h: torch.Tensor, delta: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
               k_ws: torch.Tensor, v_ws: torch.Tensor, plan: _Plan, last: bool,
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h [T, H] is the residual stream before the previous layer's MLP output ``delta`` is added; writes this
        layer's new K/V into its workspace (k_ws, v_ws: [kv_heads, S, head_dim]) and returns (h, this layer's MLP
        output), or (h, None) for the last layer, whose K/V are all that is wanted of it."""
        t = h.shape[0]
        heads, kvh, d = self.n_heads, self.kv_heads, self.head_dim
        nq, nk = heads * d, kvh * d
        h, x = self._norm(layer.input_layernorm, h, delta)
        w, bias, gu = fused_weights(layer)
        if last:  # the K/V projection alone
            kv = torch.nn.functional.linear(x, w[nq:], bias[nq:])
            k = kv[:, :nk].view(t, kvh, d)
            k_ws.index_copy_(1, plan.write, (k * cos + rotate_half(k) * sin).transpose(0, 1))
            v_ws.index_copy_(1, plan.write, kv[:, nk:].view(t, kvh, d).transpose(0, 1))
            return h, None
        qkv = torch.nn.functional.linear(x, w, bias)
        if self.fused and t <= _ROPE_KERNEL_TOKENS:
            # the decode step's kernel: rotary on q and k, k and v written to the workspace, one launch
            q = kernels.rope_qkv(qkv, cos[:, 0], sin[:, 0], k_ws[None], v_ws[None], plan.slots, plan.write, 1, heads)
        else:  # rotary on queries and keys together: one set of elementwise kernels instead of two
            qk = qkv[:, : nq + nk].view(t, heads + kvh, d)
            qk = qk * cos + rotate_half(qk) * sin
            k_ws.index_copy_(1, plan.write, qk[:, heads:].transpose(0, 1))
            v_ws.index_copy_(1, plan.write, qkv[:, nq + nk :].view(t, kvh, d).transpose(0, 1))
            q = qk[:, :heads]
        o = self._attend(q, k_ws, v_ws, plan)
        attn, mlp = layer.self_attn, layer.mlp
        h, x = self._norm(layer.post_attention_layernorm, h, attn.o_proj(o))
        y = torch.nn.functional.linear(x, gu)
        if self.fused:
            return h, mlp.down_proj(kernels.silu_mul(y))
        ng = gu.shape[0] // 2
        return h, mlp.down_proj(mlp.act_fn(y[:, :ng]) * y[:, ng:])

    # -- attention ----------------------------------------------------------------------------------------------

    def _attend(self, q: torch.Tensor, k_ws: torch.Tensor, v_ws: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """q [T, heads, head_dim] (packed) over one layer's workspace -> [T, heads * head_dim]."""
        if self._varlen is not None:
            # [S, kv_heads, head_dim] views of the head-major workspace: flash attention takes strided rows and heads
            o = self._varlen(q, k_ws.transpose(0, 1), v_ws.transpose(0, 1), plan.cu_q, plan.cu_k, plan.max_q,
                             plan.max_k, **self._varlen_kwargs)
            return o.reshape(q.shape[0], -1)
        return self._attend_masked(q, k_ws, v_ws, plan)

    def _attend_masked(self, q: torch.Tensor, k_ws: torch.Tensor, v_ws: torch.Tensor, plan: _Plan) -> torch.Tensor:
        assert plan.q_rows is not None and plan.k_rows is not None and plan.back is not None
        b, n_max = plan.q_rows.shape
        kvh, d = self.kv_heads, self.head_dim
        # [B, N_max, heads, D] -> [B, kv_heads, n_rep * N_max, D]: query head h shares KV head h // n_rep
        qp = q[plan.q_rows].view(b, n_max, kvh, self.n_rep, d).permute(0, 2, 3, 1, 4).reshape(b, kvh, -1, d)
        keys, values = k_ws[:, plan.k_rows].transpose(0, 1), v_ws[:, plan.k_rows].transpose(0, 1)  # [B, kvh, L, D]
        o = torch.nn.functional.scaled_dot_product_attention(qp, keys, values, attn_mask=plan.mask,
                                                             scale=self.scaling)
        o = o.view(b, kvh, self.n_rep, n_max, d).permute(0, 3, 1, 2, 4).reshape(b * n_max, -1)
        return o[plan.back]

    def _plan(self, kept: list[int], new: list[int], masked: bool) -> _Plan:
        lengths = [k + n for k, n in zip(kept, new)]
        first_key = [0, *accumulate(lengths)][:-1]
        write = torch.cat([torch.arange(f + k, f + k + n) for f, k, n in zip(first_key, kept, new)])
        dev = self.device
        plan = _Plan(kept, new, first_key, write.to(dev),
                     torch.tensor([0, *accumulate(new)], dtype=torch.int32).to(dev),
                     torch.tensor([0, *accumulate(lengths)], dtype=torch.int32).to(dev), max(new), max(lengths),
                     torch.zeros(len(write), dtype=torch.int64, device=dev))
        if masked:
            n_max, key_len, b = max(new), max(lengths), len(new)
            kept_t, new_t = torch.tensor(kept), torch.tensor(new)
            # padded query j of a piece repeats its last real query: every row sees some key (no NaN) and is dropped
            j = torch.minimum(torch.arange(n_max)[None], new_t[:, None] - 1)  # [B, N_max]
            key = torch.arange(key_len)
            plan.q_rows = (torch.tensor([0, *accumulate(new)][:-1])[:, None] + j).to(dev)
            plan.k_rows = (torch.tensor(first_key)[:, None]
                           + torch.minimum(key[None], torch.tensor(lengths)[:, None] - 1)).to(dev)
            allowed = key[None, None] <= (kept_t[:, None] + j)[:, :, None]  # [B, N_max, L]
            plan.mask = allowed[:, None, None].expand(b, 1, self.n_rep, n_max, key_len).reshape(
                b, 1, self.n_rep * n_max, key_len).to(dev)
            plan.back = torch.cat([i * n_max + torch.arange(n) for i, n in enumerate(new)]).to(dev)
        return plan

    def _check_varlen(self) -> str | None:
        """Take flash attention's varlen kernel if it agrees with the masked path on random inputs of the model's
        shapes and the workspace's layout (pieces of other kept and new lengths, one without kept ones); or why not."""
        fn = _varlen_attention()
        if fn is None:
            return "torch has no torch.nn.attention.varlen"
        if self.dtype not in (torch.float16, torch.bfloat16):
            return f"flash attention does not take {self.dtype}"
        params = inspect.signature(fn).parameters
        kwargs: dict[str, Any] = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
        kwargs |= {"scale": self.scaling} if "scale" in params else {}
        kwargs |= {"enable_gqa": True} if "enable_gqa" in params and self.n_rep > 1 else {}
        kept, new = [37, 0, 300, 5], [70, 129, 3, 1]
        plan = self._plan(kept, new, masked=True)
        gen = torch.Generator().manual_seed(0)
        t, s = sum(new), sum(kept) + sum(new)
        qk = torch.randn((t, self.n_heads + self.kv_heads, self.head_dim), generator=gen).to(self.device, self.dtype)
        ws = torch.randn((2, self.kv_heads, s, self.head_dim), generator=gen).to(self.device, self.dtype)
        try:
            self._varlen, self._varlen_kwargs = fn, kwargs
            got = self._attend(qk[:, : self.n_heads], ws[0], ws[1], plan).float()
        except Exception as exc:  # an older kernel without GQA, an unsupported card, ...
            self._varlen = None
            return f"{type(exc).__name__}: {exc}"
        self._varlen = None
        ref = self._attend_masked(qk[:, : self.n_heads], ws[0], ws[1], plan).float()
        error = float((got - ref).norm() / ref.norm())
        if error > kernels.tolerance(self.dtype):
            return f"the varlen kernel's relative error {error:.2e} against the masked path"
        self._varlen = fn
        return None

    def describe(self) -> dict[str, Any]:
        off = {"graphs_off": self.graphs_off_reason, "varlen_off": self.varlen_off_reason,
               "kernels_off": self.kernels_off_reason}
        return {"attention": "flash_varlen" if self._varlen is not None else "sdpa_masked",
                "kernels": "triton" if self.fused else "torch", "max_tokens": self.max_tokens, "calls": self.calls,
                "forwards": self.forwards, "graphs": sorted(self._graphs), "graph_replays": self.graph_replays,
                **{k: v for k, v in off.items() if v}}
