"""Fused Triton kernels for the decode step, each beside the PyTorch expression it replaces.

Around its four weight GEMMs, a layer of the eager step runs ~25 small kernels (norm, rotary, cache writes,
attention over a mask, softmax, casts, residual adds, activation); at one token per row each costs a launch and
a round trip through memory, together about as long as reading the weights. These leave 9 launches a layer
(8 for a single answer):

- ``add_rms_norm``: the residual add (in place) and the model's RMSNorm (float32 statistics, cast, weight).
- ``rope_qkv``: rotary on q and k straight from the fused qkv projection; k and v written into the slot cache.
- ``decode_attention``: one query token per row over its keys 0..write ("flash decoding"): the key axis is split
  into chunks so that even one row keeps the GPU busy, the query heads sharing a KV head are computed together
  (grouped-query attention without repeating K/V), and a second kernel merges the chunks.
- ``silu_mul``: the MLP's act(gate) * up.
- ``gemv``: the projections of a single answer (one row): each program streams a few weight rows, at up to 97%
  of the copy bandwidth where cuBLAS's one-row kernels reach 50-85% on an H100; the down projection computes
  act(gate) * up as it loads its input, so that kernel and cuBLAS's split-K reduction disappear.

Rounding follows the eager expressions where they round (bf16 casts between steps). Attention keeps scores and
probabilities in float32 (the eager path rounds scores and probabilities to bf16), so the two paths agree to
rounding in bf16 and to float32 accuracy in float32 (``tools/bench.py`` section ``agreement``).

The kernels run on CUDA; with ``TRITON_INTERPRET=1`` (the CPU test suite) Triton's interpreter runs them on CPU
tensors. ``self_test`` compares every kernel with its reference on random inputs; the step runner calls it at
start-up and falls back to the PyTorch expressions if Triton is missing or a kernel disagrees.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
ATTENTION_BLOCK_N = 64  # keys per inner iteration of decode_attention


def attention_chunk(rows: int, kv_heads: int, max_len: int, processors: int) -> int:
    """Keys per program of decode_attention: small enough that one row's few KV heads still spread over the
    GPU, large enough that a full batch does not drown in programs (and in partial results to merge). On an
    H100 (36 layers, 2,568 keys): 64 is best at batch 1 (0.24 ms a step), 256 at batch 16 (0.68 ms vs 0.92)."""
    chunk = ATTENTION_BLOCK_N
    while chunk < 4 * ATTENTION_BLOCK_N and rows * kv_heads * -(-max_len // chunk) > 4 * processors:
        chunk *= 2
    return chunk


def _processors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132


def available(device: torch.device) -> bool:
    """Whether the kernels can run on tensors of ``device``."""
    if triton is None:
        return False
    return device.type == "cuda" or (INTERPRET and device.type == "cpu")


if triton is not None:

    @triton.jit
    def _silu_gate(g, u):
        """silu(g) * u, rounded where the eager expression (act_fn(gate) * up) rounds."""
        gf = g.to(tl.float32)
        act = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)
        return (act.to(tl.float32) * u.to(tl.float32)).to(g.dtype)

    @triton.jit
    def _add_rms_norm_kernel(h_ptr, d_ptr, w_ptr, out_ptr, n_cols, eps, HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        inside = cols < n_cols
        offs = row * n_cols + cols
        h = tl.load(h_ptr + offs, mask=inside, other=0.0)
        if HAS_DELTA:
            d = tl.load(d_ptr + offs, mask=inside, other=0.0)
            h = (h.to(tl.float32) + d.to(tl.float32)).to(h_ptr.dtype.element_ty)
            tl.store(h_ptr + offs, h, mask=inside)
        x = h.to(tl.float32)
        var = tl.sum(x * x, axis=0) / n_cols
        y = (x * tl.rsqrt(var + eps)).to(h_ptr.dtype.element_ty)
        w = tl.load(w_ptr + cols, mask=inside, other=0.0)
        tl.store(out_ptr + offs, (w.to(tl.float32) * y.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _rope_qkv_kernel(
        qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, rows_ptr, write_ptr,
        seq, qkv_stride, s_slot, s_head, s_pos,
        N_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    ):
        t = tl.program_id(0)  # token: row * seq + i
        hd = tl.program_id(1)  # q heads, then k heads, then v heads
        HALF: tl.constexpr = HEAD_DIM // 2
        j = tl.arange(0, HALF)
        src = qkv_ptr + t * qkv_stride + hd * HEAD_DIM
        x1 = tl.load(src + j)
        x2 = tl.load(src + HALF + j)
        dt = x1.dtype
        if hd < N_HEADS + KV_HEADS:
            # x * cos + rotate_half(x) * sin, rounded where the eager expression rounds
            c1 = tl.load(cos_ptr + t * HEAD_DIM + j).to(tl.float32)
            c2 = tl.load(cos_ptr + t * HEAD_DIM + HALF + j).to(tl.float32)
            s1 = tl.load(sin_ptr + t * HEAD_DIM + j).to(tl.float32)
            s2 = tl.load(sin_ptr + t * HEAD_DIM + HALF + j).to(tl.float32)
            a1, a2 = x1.to(tl.float32), x2.to(tl.float32)
            y1 = ((a1 * c1).to(dt).to(tl.float32) + (-a2 * s1).to(dt).to(tl.float32)).to(dt)
            y2 = ((a2 * c2).to(dt).to(tl.float32) + (a1 * s2).to(dt).to(tl.float32)).to(dt)
            if hd < N_HEADS:
                dst = q_ptr + (t * N_HEADS + hd) * HEAD_DIM
            else:
                slot = tl.load(rows_ptr + t // seq)
                pos = tl.load(write_ptr + t)
                dst = k_ptr + slot * s_slot + (hd - N_HEADS) * s_head + pos * s_pos
            tl.store(dst + j, y1)
            tl.store(dst + HALF + j, y2)
        else:
            slot = tl.load(rows_ptr + t // seq)
            pos = tl.load(write_ptr + t)
            dst = v_ptr + slot * s_slot + (hd - N_HEADS - KV_HEADS) * s_head + pos * s_pos
            tl.store(dst + j, x1)
            tl.store(dst + HALF + j, x2)

    @triton.jit
    def _attention_chunk_kernel(
        q_ptr, k_ptr, v_ptr, write_ptr, o_ptr, m_ptr, l_ptr,
        scale_log2, s_slot, s_head, s_pos, n_chunks,
        KV_HEADS: tl.constexpr, N_REP: tl.constexpr, HEAD_DIM: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, IEEE: tl.constexpr,
    ):
        bg = tl.program_id(0)  # row * KV_HEADS + kv head
        chunk = tl.program_id(1)
        b = bg // KV_HEADS
        g = bg % KV_HEADS
        length = tl.load(write_ptr + b) + 1
        r = tl.arange(0, BLOCK_M)
        d = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + (bg * N_REP + r[:, None]) * HEAD_DIM + d[None, :], mask=r[:, None] < N_REP, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        base = b * s_slot + g * s_head
        lo = chunk * CHUNK
        hi = tl.minimum(lo + CHUNK, length)
        for n0 in range(lo, hi, BLOCK_N):  # no iteration when the chunk starts past the row's keys
            n = n0 + tl.arange(0, BLOCK_N)
            live = n < hi
            k = tl.load(k_ptr + base + n[:, None] * s_pos + d[None, :], mask=live[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(live[None, :], s * scale_log2, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + base + n[:, None] * s_pos + d[None, :], mask=live[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        part = (bg * n_chunks + chunk) * N_REP + r
        tl.store(m_ptr + part, m_i, mask=r < N_REP)
        tl.store(l_ptr + part, l_i, mask=r < N_REP)
        tl.store(o_ptr + part[:, None] * HEAD_DIM + d[None, :], acc, mask=r[:, None] < N_REP)

    @triton.jit
    def _attention_merge_kernel(
        o_part, m_part, l_part, out_ptr, n_chunks,
        KV_HEADS: tl.constexpr, N_REP: tl.constexpr, HEAD_DIM: tl.constexpr, CHUNKS_P2: tl.constexpr,
    ):
        bh = tl.program_id(0)  # row * heads + head; head = kv head * N_REP + r
        bg = bh // N_REP
        r = bh % N_REP
        c = tl.arange(0, CHUNKS_P2)
        d = tl.arange(0, HEAD_DIM)
        used = c < n_chunks
        part = (bg * n_chunks + c) * N_REP + r
        m = tl.load(m_part + part, mask=used, other=float("-inf"))
        l = tl.load(l_part + part, mask=used, other=0.0)
        top = tl.max(m, axis=0)  # finite: the first chunk always holds a key
        w = tl.where(m > float("-inf"), tl.exp2(m - top), 0.0)
        o = tl.load(o_part + part[:, None] * HEAD_DIM + d[None, :], mask=used[:, None], other=0.0)
        out = tl.sum(o * w[:, None], axis=0) / tl.sum(l * w, axis=0)
        tl.store(out_ptr + bh * HEAD_DIM + d, out.to(out_ptr.dtype.element_ty))

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, inter, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < inter
        g = tl.load(gu_ptr + row * 2 * inter + cols, mask=inside, other=0.0)
        u = tl.load(gu_ptr + row * 2 * inter + inter + cols, mask=inside, other=0.0)
        tl.store(out_ptr + row * inter + cols, _silu_gate(g, u), mask=inside)


    @triton.jit
    def _gemv_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, N, K,
        HAS_BIAS: tl.constexpr, SILU_GATE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """y[N] = w[N, K] @ x[K] (+ b): one program streams BLOCK_N rows of the weight, FMA dot products in
        float32. With SILU_GATE, x is [2K] ([gate; up]) and the input is silu(gate) * up, computed on the fly."""
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_in = n < N
        acc = tl.zeros([BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_in = k < K
            x = tl.load(x_ptr + k, mask=k_in, other=0.0)
            if SILU_GATE:
                x = _silu_gate(x, tl.load(x_ptr + K + k, mask=k_in, other=0.0))
            w = tl.load(w_ptr + n[:, None] * K + k[None, :], mask=n_in[:, None] & k_in[None, :], other=0.0)
            acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
        if HAS_BIAS:
            acc += tl.load(b_ptr + n, mask=n_in, other=0.0).to(tl.float32)
        tl.store(y_ptr + n, acc.to(y_ptr.dtype.element_ty), mask=n_in)


# -- the calls ----------------------------------------------------------------------------------------------------


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """h [N, H] (contiguous) += delta, in place; returns weight * rms_norm(h)."""
    n, hidden = h.shape
    out = torch.empty_like(h)
    _add_rms_norm_kernel[(n,)](
        h, h if delta is None else delta, weight, out, hidden, eps,
        HAS_DELTA=delta is not None, BLOCK=triton.next_power_of_2(hidden), num_warps=4 if hidden <= 4096 else 8,
    )
    return out


def rope_qkv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    rows: torch.Tensor, write: torch.Tensor, seq: int, n_heads: int,
) -> torch.Tensor:
    """qkv [N, (heads + 2 * kv_heads) * D] (N = rows * seq), cos/sin [N, D], k/v_cache [slots, kv_heads, len, D]
    (one layer), rows [N // seq] slots, write [N] cache indices. Writes k and v; returns rotated q [N, heads, D]."""
    n = qkv.shape[0]
    _, kv_heads, _, head_dim = k_cache.shape
    q = torch.empty((n, n_heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    _rope_qkv_kernel[(n, n_heads + 2 * kv_heads)](
        qkv, cos, sin, q, k_cache, v_cache, rows, write,
        seq, qkv.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        N_HEADS=n_heads, KV_HEADS=kv_heads, HEAD_DIM=head_dim, num_warps=1,
    )
    return q


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, write: torch.Tensor, scale: float,
    chunk: int | None = None,
) -> torch.Tensor:
    """q [B, heads, D] (row b is slot b), k/v_cache [slots, kv_heads, len, D] (one layer), write [B]: row b
    attends to keys 0..write[b]. Returns [B, heads * D]."""
    b, n_heads, head_dim = q.shape
    _, kv_heads, max_len, _ = k_cache.shape
    n_rep = n_heads // kv_heads
    chunk = chunk or attention_chunk(b, kv_heads, max_len, _processors(q.device))
    n_chunks = triton.cdiv(max_len, chunk)
    parts = b * kv_heads * n_chunks * n_rep
    o_part = torch.empty((parts, head_dim), dtype=torch.float32, device=q.device)
    m_part = torch.empty(parts, dtype=torch.float32, device=q.device)
    l_part = torch.empty(parts, dtype=torch.float32, device=q.device)
    _attention_chunk_kernel[(b * kv_heads, n_chunks)](
        q, k_cache, v_cache, write, o_part, m_part, l_part,
        scale * math.log2(math.e), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), n_chunks,
        KV_HEADS=kv_heads, N_REP=n_rep, HEAD_DIM=head_dim, BLOCK_M=max(16, triton.next_power_of_2(n_rep)),
        BLOCK_N=min(ATTENTION_BLOCK_N, chunk), CHUNK=chunk, IEEE=q.dtype == torch.float32, num_warps=4,
    )
    out = torch.empty((b, n_heads * head_dim), dtype=q.dtype, device=q.device)
    _attention_merge_kernel[(b * n_heads,)](
        o_part, m_part, l_part, out, n_chunks,
        KV_HEADS=kv_heads, N_REP=n_rep, HEAD_DIM=head_dim, CHUNKS_P2=triton.next_power_of_2(n_chunks), num_warps=4,
    )
    return out


# (BLOCK_N, BLOCK_K, num_warps, num_stages), the best measured for the 3B model's projections on an H100
# (tools/bench.py, section kernels: "linear_only"); the down projection, with the activation on its input, likes
# longer rows per program
GEMV_CONFIG = (4, 1024, 8, 3)
GEMV_SILU_CONFIG = (8, 2048, 16, 3)


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, silu_gate: bool = False,
         config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """x [1, K] @ w[N, K]^T (+ bias) -> [1, N]; with ``silu_gate`` x is [1, 2K] and the input is
    silu(x[:, :K]) * x[:, K:]. One row only: for several, cuBLAS's tensor-core tiles are as fast."""
    if x.shape[0] != 1:
        raise ValueError(f"gemv takes one row, not {x.shape[0]}")
    n, k = w.shape
    block_n, block_k, warps, stages = config or (GEMV_SILU_CONFIG if silu_gate else GEMV_CONFIG)
    y = torch.empty((1, n), dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, w, w if bias is None else bias, y, n, k, HAS_BIAS=bias is not None, SILU_GATE=silu_gate,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )
    return y


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """gu [N, 2 * I] ([gate; up] per row) -> silu(gate) * up [N, I]."""
    n, two_i = gu.shape
    inter = two_i // 2
    out = torch.empty((n, inter), dtype=gu.dtype, device=gu.device)
    block = 1024
    _silu_mul_kernel[(n, triton.cdiv(inter, block))](gu, out, inter, BLOCK=block, num_warps=4)
    return out


# -- references (the eager expressions) and the start-up check ----------------------------------------------------


def ref_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The model's RMSNorm (statistics in float32, the normalised value cast back, then the weight) as two
    kernels instead of seven: torch's rms_norm computes in float32 internally for bf16/fp16 inputs. The PyTorch
    decode step uses it too."""
    return weight * torch.nn.functional.rms_norm(x, (x.shape[-1],), eps=eps)


def ref_add_rms_norm(h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if delta is not None:
        h.copy_(h + delta)
    return ref_rms_norm(h, weight, eps)


def ref_rope_qkv(qkv, cos, sin, k_cache, v_cache, rows, write, seq: int, n_heads: int) -> torch.Tensor:
    n = qkv.shape[0]
    _, kv_heads, _, d = k_cache.shape
    heads = qkv.view(n, n_heads + 2 * kv_heads, d)
    qk = heads[:, : n_heads + kv_heads]
    half = d // 2
    rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
    qk = qk * cos[:, None] + rotated * sin[:, None]
    slots = rows.repeat_interleave(seq)
    k_cache[slots, :, write] = qk[:, n_heads:]
    v_cache[slots, :, write] = heads[:, n_heads + kv_heads :]
    return qk[:, :n_heads].contiguous()


def ref_decode_attention(q, k_cache, v_cache, write, scale: float) -> torch.Tensor:
    b, n_heads, d = q.shape
    kv_heads = k_cache.shape[1]
    out = torch.empty((b, n_heads * d), dtype=q.dtype, device=q.device)
    for row in range(b):
        n = int(write[row]) + 1
        keys = k_cache[row, :, :n].repeat_interleave(n_heads // kv_heads, dim=0).float()
        values = v_cache[row, :, :n].repeat_interleave(n_heads // kv_heads, dim=0).float()
        probs = torch.softmax(torch.einsum("hd,hnd->hn", q[row].float(), keys) * scale, dim=-1)
        out[row] = torch.einsum("hn,hnd->hd", probs, values).reshape(-1).to(q.dtype)
    return out


def ref_silu_mul(gu: torch.Tensor) -> torch.Tensor:
    gate, up = gu.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def self_test(device: torch.device, dtype: torch.dtype, shapes: dict[str, int] | None = None) -> dict[str, float]:
    """Every kernel against its reference on random inputs; returns the relative error of each
    (|out - ref| / |ref|, norms over the whole output). Raises whatever Triton raises (missing compiler, ...)."""
    s = {"hidden": 256, "heads": 8, "kv_heads": 2, "head_dim": 64, "inter": 384, "slots": 3, "len": 200} | (
        shapes or {}
    )
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
        return float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))

    errors: dict[str, float] = {}
    h, delta, w = rand(5, s["hidden"]), rand(5, s["hidden"]), rand(s["hidden"])
    h_ref = h.clone()
    out = add_rms_norm(h, delta, w, 1e-6)
    ref = ref_add_rms_norm(h_ref, delta, w, 1e-6)
    errors["add_rms_norm"] = max(rel(out, ref), rel(h, h_ref))

    heads, kvh, d, slots, length = s["heads"], s["kv_heads"], s["head_dim"], s["slots"], s["len"]
    seq = 4
    qkv = rand(2 * seq, (heads + 2 * kvh) * d)
    angle = torch.rand((2 * seq, d), generator=gen) * 6.0
    cos, sin = angle.cos().to(device, dtype), angle.sin().to(device, dtype)
    rows = torch.tensor([2, 0], device=device)
    write = torch.tensor([5, 6, 7, 8] + [length - 10 + i for i in range(seq)], device=device)
    caches = [rand(slots, kvh, length, d) for _ in range(2)]
    ref_caches = [c.clone() for c in caches]
    q = rope_qkv(qkv, cos, sin, caches[0], caches[1], rows, write, seq, heads)
    q_ref = ref_rope_qkv(qkv, cos, sin, ref_caches[0], ref_caches[1], rows, write, seq, heads)
    errors["rope_qkv"] = max(rel(q, q_ref), rel(caches[0], ref_caches[0]), rel(caches[1], ref_caches[1]))

    q1 = rand(slots, heads, d)
    lengths = torch.tensor([(length - 1) * i // max(slots - 1, 1) for i in range(slots)], device=device)
    out = decode_attention(q1, caches[0], caches[1], lengths, d**-0.5)
    errors["decode_attention"] = rel(out, ref_decode_attention(q1, caches[0], caches[1], lengths, d**-0.5))

    gu = rand(3, 2 * s["inter"])
    errors["silu_mul"] = rel(silu_mul(gu), ref_silu_mul(gu))

    x, w_up, b_up = rand(1, s["hidden"]), rand(s["inter"], s["hidden"]), rand(s["inter"])
    w_down = rand(s["hidden"], s["inter"])
    errors["gemv"] = max(rel(gemv(x, w_up, b_up), torch.nn.functional.linear(x, w_up, b_up)),
                         rel(gemv(gu[:1], w_down, silu_gate=True),
                             torch.nn.functional.linear(ref_silu_mul(gu[:1]), w_down)))
    return errors


def tolerance(dtype: torch.dtype) -> float:
    """The largest relative error self_test accepts: a few units of the dtype's rounding."""
    return 1e-5 if dtype == torch.float32 else 2e-2


def describe_self_test(errors: dict[str, Any], dtype: torch.dtype) -> str | None:
    """None when every kernel is within tolerance, else a line naming the ones that are not."""
    bad = {k: v for k, v in errors.items() if not v <= tolerance(dtype)}
    return None if not bad else ", ".join(f"{k} relative error {v:.2e}" for k, v in bad.items())
