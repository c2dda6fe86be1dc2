"""The Qwen2.5-VL vision tower over batches of pairs, with static shapes, eager or captured as CUDA graphs.

transformers' tower is launch-bound on a GPU: per call it rebuilds the rotary table and the window index on the
host, and every window layer runs one attention call per window (~500 kernels and many host syncs per pair).
Here every pair is one temporal patch (grid (1, gh, gw)) and the pairs of one grid run as one batch [P, n, C]
(n = gh * gw patches per pair), with what depends on the grid alone computed once per grid and cached:

- the window permutation (from transformers' ``get_vision_window_index``: windows of 8x8 patches, smaller at the
  right and bottom edges) and its inverse over merge units. Our order keeps every window contiguous and the four
  patches of a merge unit together, with the windows sorted by size (attention ignores the order of the windows
  and of the keys within one), so a window layer is one SDPA call per window size over [P * windows, heads, size,
  head_dim]: flash attention without a mask, one call for all windows of all pairs when the grid tiles evenly,
  at most four otherwise. A block in ``fullatt_block_indexes`` attends over its whole pair (one call, no mask).
- rotary cos/sin in that order, from the model's own rotary module and transformers' position ids.

The arithmetic is the model's, on the model's weights: the patch embedding's Conv3d (kernel == stride, no bias)
as one GEMM over the rows, each block's norms (torch's fused rms_norm, statistics in float32 as the model's),
qkv, rotary in float32 (bf16 inputs promoted, not copied), proj, MLP and the merger. The MLPs' gate and up
projections run as one GEMM, their intermediate size padded with zeros to a multiple of 64 (``align_mlp``: the
real 3420 leaves rows 16-byte misaligned, which cuBLAS serves with kernels ~2.5x slower); the modules keep views
into the padded weights, so no memory is added and transformers' forward is unchanged.

``VisionTower.encode`` groups items by grid and runs each group in chunks of at most ``max_batch`` pairs. On CUDA
with ``use_graphs`` a chunk replays a CUDA graph captured per (grid, pair-count bucket), lazily on first use or
ahead of time by ``prepare(grid)``; pairs are padded with zeros to the bucket (pairs are independent, padded
outputs are dropped). The graphs share one private memory pool and each grid's static input/output buffers (the
largest bucket's; a bucket's graph uses the leading rows). Before a grid's first fast call its result on two
random pairs is compared with transformers' tower (relative error bound by dtype); a failure, or any exception
later on the fast path, logs a warning and sends that grid to transformers' tower from then on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from livewatch.engine.model import kernels
from livewatch.engine.prompting.preprocess import VisionSpec
from livewatch.log import get_logger

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

log = get_logger("livewatch.engine")

BUCKETS = (1, 2, 4, 8, 16, 32)
# max |ours - transformers'| / max |transformers'| accepted by the start-up check, per dtype
# (bf16: transformers' own tower differs from its float32 result by ~1.5% on the random-weight 3B, and two bf16
# computations by up to ~3%; float32 on CUDA: cuDNN's convolution in transformers' tower runs in TF32, ~6e-4)
CHECK_TOLERANCE = {torch.float32: 2e-3, torch.float64: 1e-8, torch.bfloat16: 5e-2, torch.float16: 1e-2}
MLP_ALIGN = 64
CHECK_PAIRS = 2

Grid = tuple[int, int, int]


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    capture_s: float


@dataclass
class _GridPlan:
    """What one grid (1, gh, gw) needs, computed once."""

    grid: Grid
    n: int  # patches per pair
    perm: torch.Tensor  # [n] patch order of the batch: input row index at each position
    unit_inverse: torch.Tensor  # [n / merge^2] merged row of each merge unit (input order)
    classes: list[tuple[int, int, int]]  # (first position, windows, patches per window) per window size
    cos: torch.Tensor  # [n, 1, 1, head_dim] float32 in ``perm`` order (broadcast over q/k and heads)
    sin: torch.Tensor
    inputs: torch.Tensor | None = None  # graphs: [max bucket, n, in_features] float32
    outputs: torch.Tensor | None = None  # graphs: [max bucket, n / merge^2, out_hidden] model dtype
    graphs: dict[int, _Graph] = field(default_factory=dict)
    check_error: float | None = None


def _key(grid: Sequence[int]) -> str:
    """'16x30' for (1, 16, 30) (status and logs); the whole grid when it has several temporal patches."""
    return "x".join(str(int(g)) for g in (grid[1:] if int(grid[0]) == 1 else grid))


@dataclass
class AlignedMLP:
    """One block's MLP as the tower runs it: [gate; up] in one weight, the intermediate size padded to ``width``."""

    gate_up: torch.Tensor  # [2 * width, hidden]: gate rows, zeros, up rows, zeros
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor  # [hidden, width], zero columns past the real intermediate size
    down_bias: torch.Tensor | None
    width: int
    act: Any


def align_mlp(visual: Any) -> list[AlignedMLP]:
    """Each vision block's MLP with [gate; up] fused and the intermediate size padded to a multiple of MLP_ALIGN.

    The padding changes no number: a padded gate/up row is zero with zero bias, so act(0) * 0 = 0 enters down
    projections whose padded columns are zero too. The modules' weights become views into the new tensors (as
    ``fastpath.fuse_projections`` does for the language model): no memory is added, transformers' forward reads
    the same numbers. Idempotent."""
    out = []
    for blk in visual.blocks:
        mlp = blk.mlp
        aligned = getattr(mlp, "_livewatch_aligned", None)
        if aligned is None:
            gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
            inter = int(gate.out_features)
            width = -(-inter // MLP_ALIGN) * MLP_ALIGN
            with torch.inference_mode(False), torch.no_grad():  # ordinary parameters, whatever mode we run in
                gu = gate.weight.new_zeros((2 * width, gate.in_features))
                gu[:inter], gu[width : width + inter] = gate.weight, up.weight
                dw = down.weight.new_zeros((down.out_features, width))
                dw[:, :inter] = down.weight
                gate.weight = torch.nn.Parameter(gu[:inter], requires_grad=False)
                up.weight = torch.nn.Parameter(gu[width : width + inter], requires_grad=False)
                down.weight = torch.nn.Parameter(dw[:, :inter], requires_grad=False)
                gub = None
                if gate.bias is not None and up.bias is not None:
                    gub = gate.bias.new_zeros(2 * width)
                    gub[:inter], gub[width : width + inter] = gate.bias, up.bias
                    gate.bias = torch.nn.Parameter(gub[:inter], requires_grad=False)
                    up.bias = torch.nn.Parameter(gub[width : width + inter], requires_grad=False)
                elif gate.bias is not None or up.bias is not None:
                    raise ValueError("gate and up projections must both have a bias or neither")
            aligned = AlignedMLP(gu, gub, dw, down.bias, width, mlp.act_fn)
            mlp._livewatch_aligned = aligned
        out.append(aligned)
    return out


if triton is not None:

    @triton.jit
    def _rotary_kernel(qkv_ptr, cos_ptr, sin_ptr, out_ptr, n, HEADS: tl.constexpr, HALF: tl.constexpr,
                       BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
        """One token's q and k heads (the first 2 * HEADS of its qkv row [3, HEADS, D]) -> out [2, HEADS, D]:
        x * cos + rotate_half(x) * sin in float32, rounded once, as apply_rotary_pos_emb_vision."""
        t = tl.program_id(0)
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        inside = (h < 2 * HEADS) & (d < HALF)
        src = qkv_ptr + t * (6 * HEADS * HALF) + h * (2 * HALF) + d
        x1 = tl.load(src, mask=inside, other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF, mask=inside, other=0.0).to(tl.float32)
        row = (t % n) * (2 * HALF) + d
        c1 = tl.load(cos_ptr + row, mask=d < HALF, other=0.0)
        c2 = tl.load(cos_ptr + row + HALF, mask=d < HALF, other=0.0)
        s1 = tl.load(sin_ptr + row, mask=d < HALF, other=0.0)
        s2 = tl.load(sin_ptr + row + HALF, mask=d < HALF, other=0.0)
        dst = out_ptr + t * (4 * HEADS * HALF) + h * (2 * HALF) + d
        tl.store(dst, (x1 * c1 + (-x2) * s1).to(out_ptr.dtype.element_ty), mask=inside)
        tl.store(dst + HALF, (x2 * c2 + x1 * s2).to(out_ptr.dtype.element_ty), mask=inside)


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    return kernels.ref_rms_norm(x, norm.weight, norm.variance_epsilon)


class VisionTower:
    """Merged vision embeddings of pairs ([gh*gw / merge^2, out_hidden] each) from the model's vision tower.

    Not thread-safe: the engine worker owns it. ``self_check`` False skips the start-up comparison (tests that
    compare the fast path itself against transformers); ``pad_eager`` pads eager batches to a bucket as the
    graphs do (tests); ``fused_rotary`` (default: on CUDA when Triton is there) runs the rotary as one Triton
    kernel instead of six PyTorch ones over float32 copies (tests: CPU tensors under Triton's interpreter)."""

    def __init__(self, visual: Any, spec: VisionSpec, device: torch.device, use_graphs: bool,
                 max_batch: int = 32, self_check: bool = True, pad_eager: bool = False,
                 fused_rotary: bool | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.visual = visual  # Qwen2_5_VisionTransformerPretrainedModel
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = next(visual.parameters()).dtype
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.max_batch = max_batch
        self.self_check = self_check
        self.pad_eager = pad_eager
        self.buckets = tuple(b for b in BUCKETS if b < max_batch) + (max_batch,)
        self.blocks = list(self.visual.blocks)
        self.full_blocks = frozenset(int(i) for i in self.visual.fullatt_block_indexes)
        self.hidden = int(self.blocks[0].attn.qkv.in_features)
        self.heads = int(self.blocks[0].attn.num_heads)
        self.head_dim = self.hidden // self.heads
        self.scaling = float(self.blocks[0].attn.scaling)
        proj = self.visual.patch_embed.proj
        self.patch_weight = proj.weight.reshape(proj.weight.shape[0], -1)  # a view: [hidden, C * T * P * P]
        self.in_features = int(self.patch_weight.shape[1])
        self.merge_unit = spec.merge_size**2
        self.mlps = align_mlp(self.visual)
        if fused_rotary is None:
            fused_rotary = self.device.type == "cuda"
        self.fused_rotary = fused_rotary and triton is not None and kernels.available(self.device)
        self._plans: dict[Grid, _GridPlan] = {}
        self._fallbacks: dict[str, str] = {}
        self._pool: Any = None
        self.tower_calls = 0
        self.pairs_encoded = 0
        self.fallback_calls = 0

    # -- the call -------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, items: Sequence[tuple[torch.Tensor, tuple[int, int, int]]]) -> list[torch.Tensor]:
        """(rows [gh*gw, in_features] float32 on the host, grid (1, gh, gw)) per pair -> merged embeddings
        [gh*gw / merge^2, out_hidden] (model dtype, on the device), in item order. One batched computation per
        grid and chunk of at most ``max_batch`` pairs."""
        groups: dict[Grid, list[int]] = {}
        for i, (rows, grid) in enumerate(items):
            g = (int(grid[0]), int(grid[1]), int(grid[2]))
            if rows.shape[0] != g[0] * g[1] * g[2]:
                raise ValueError(f"item {i}: {rows.shape[0]} rows for grid {g}")
            groups.setdefault(g, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(items)
        for grid, indexes in groups.items():
            for start in range(0, len(indexes), self.max_batch):
                chunk = indexes[start : start + self.max_batch]
                embeds = self._run(grid, [items[i][0] for i in chunk])
                for i, emb in zip(chunk, embeds):
                    out[i] = emb
                self.tower_calls += 1
                self.pairs_encoded += len(chunk)
        return [e for e in out if e is not None]

    @torch.inference_mode()
    def prepare(self, grid: Sequence[int], buckets: Sequence[int] | None = None) -> bool:
        """Build a grid's plan, run its check and (graphs) capture its buckets ahead of first use (start-up).
        Returns whether the grid runs the fast path."""
        g = (int(grid[0]), int(grid[1]), int(grid[2]))
        plan = self._plan(g)
        if plan is None:
            return False
        if self.use_graphs:
            try:
                for b in buckets or self.buckets:
                    self._graph(plan, self._bucket(b))
            except Exception as exc:  # an optimisation: transformers' tower still works
                self._fall_back(g, f"capture failed: {type(exc).__name__}: {exc}")
                return False
        return True

    def _run(self, grid: Grid, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        plan = self._plan(grid)
        if plan is not None:
            try:
                return self._fast(plan, rows)
            except Exception as exc:  # an optimisation: never fail the caller for it
                self._fall_back(grid, f"{type(exc).__name__}: {exc}")
        self.fallback_calls += 1
        return self.reference(grid, rows)

    def reference(self, grid: Sequence[int], rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """transformers' own tower on pairs of one grid (the fallback, the check's reference, the tests')."""
        x = torch.cat(rows).to(self.device, dtype=self.dtype)
        grid_thw = torch.tensor([list(grid)] * len(rows), dtype=torch.long, device=self.device)
        out = self.visual(x, grid_thw=grid_thw)
        merged = out.pooler_output if hasattr(out, "pooler_output") else out
        return list(torch.split(merged, [r.shape[0] // self.merge_unit for r in rows]))

    def _bucket(self, pairs: int) -> int:
        return next(b for b in self.buckets if b >= pairs)

    def _fast(self, plan: _GridPlan, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        p = len(rows)
        if self.use_graphs:
            bucket = self._bucket(p)
            graph = self._graph(plan, bucket)
            assert plan.inputs is not None and plan.outputs is not None
            for i, r in enumerate(rows):
                plan.inputs[i].copy_(r)
            if p < bucket:
                plan.inputs[p:bucket].zero_()
            graph.graph.replay()
            return [plan.outputs[i].clone() for i in range(p)]
        x = torch.stack(rows).to(self.device, dtype=torch.float32)
        if self.pad_eager and p < self._bucket(p):
            x = torch.cat([x, x.new_zeros((self._bucket(p) - p, *x.shape[1:]))])
        y = self.forward(plan, x)
        return [y[i].clone() for i in range(p)]

    # -- the math -------------------------------------------------------------------------------------------------

    def forward(self, plan: _GridPlan, x: torch.Tensor) -> torch.Tensor:
        """x [P, n, in_features] float32 on the device -> merged [P, n / merge^2, out_hidden] (model dtype)."""
        p, n, _ = x.shape
        h = F.linear(x.to(self.dtype), self.patch_weight)  # the Conv3d (kernel == stride, no bias) as one GEMM
        h = h.index_select(1, plan.perm)
        for i, (blk, mlp) in enumerate(zip(self.blocks, self.mlps)):
            a = self._attention(blk.attn, _rms_norm(blk.norm1, h), plan, full=i in self.full_blocks)
            h = h + a
            y = F.linear(_rms_norm(blk.norm2, h), mlp.gate_up, mlp.gate_up_bias)
            h = h + F.linear(mlp.act(y[..., : mlp.width]) * y[..., mlp.width :], mlp.down, mlp.down_bias)
        merged = self.visual.merger(h.reshape(p * n, -1)).view(p, n // self.merge_unit, -1)
        return merged.index_select(1, plan.unit_inverse)

    def _attention(self, attn: Any, x: torch.Tensor, plan: _GridPlan, full: bool) -> torch.Tensor:
        """One block's attention for every pair: over the whole pair, or one SDPA call per window size."""
        p, n, c = x.shape
        hd = (self.heads, self.head_dim)
        qkv = attn.qkv(x).view(p, n, 3, *hd)
        if self.fused_rotary:
            qk = torch.empty((p, n, 2, *hd), dtype=x.dtype, device=x.device)
            _rotary_kernel[(p * n,)](qkv, plan.cos, plan.sin, qk, n, HEADS=self.heads, HALF=self.head_dim // 2,
                                     BLOCK_H=triton.next_power_of_2(2 * self.heads),
                                     BLOCK_D=triton.next_power_of_2(self.head_dim // 2))
        else:  # float32 on q and k together: the bf16 values promoted (not copied), as transformers' .float()
            qk = (qkv[:, :, :2] * plan.cos + rotate_half(qkv[:, :, :2]) * plan.sin).to(x.dtype)
        if full:
            q, k, v = (t.transpose(1, 2) for t in (qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]))
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)  # [P, heads, n, D]
            return attn.proj(o.transpose(1, 2).reshape(p, n, c))
        parts = []
        for first, windows, size in plan.classes:
            q, k, v = (t[:, first : first + windows * size].reshape(p * windows, size, *hd).transpose(1, 2)
                       for t in (qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]))
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)  # [P * windows, heads, size, D]
            parts.append(o.transpose(1, 2).reshape(p, windows * size, c))
        return attn.proj(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))

    # -- per grid -------------------------------------------------------------------------------------------------

    def _plan(self, grid: Grid) -> _GridPlan | None:
        """The grid's plan, built and checked on first use; None while the grid goes to transformers' tower."""
        key = _key(grid)
        if key in self._fallbacks:
            return None
        plan = self._plans.get(grid)
        if plan is not None:
            return plan
        if grid[0] != 1:
            self._fall_back(grid, "more than one temporal patch per item")
            return None
        try:
            plan = self._build_plan(grid)
            if self.self_check:
                plan.check_error = self._check(plan)
                tol = CHECK_TOLERANCE.get(self.dtype, 2e-2)
                if not plan.check_error <= tol:  # also catches NaN
                    raise RuntimeError(
                        f"max relative error {plan.check_error:.3g} against transformers' tower (bound {tol:g})")
        except Exception as exc:
            self._fall_back(grid, f"self-check failed: {type(exc).__name__}: {exc}")
            return None
        self._plans[grid] = plan
        return plan

    def _build_plan(self, grid: Grid) -> _GridPlan:
        grid_thw = torch.tensor([list(grid)], dtype=torch.long)
        merge, unit = self.spec.merge_size, self.merge_unit
        window_index, cu = get_vision_window_index(
            grid_thw, spatial_merge_size=merge, window_size=int(self.visual.window_size),
            patch_size=int(self.visual.patch_size))
        bounds = [int(c) // unit for c in cu.tolist()]
        windows = [window_index[a:b] for a, b in zip(bounds, bounds[1:])]  # merge units of each window
        windows.sort(key=len, reverse=True)  # stable: transformers' order within one size
        classes: list[tuple[int, int, int]] = []
        first = 0
        for w in windows:
            size = len(w) * unit
            if classes and classes[-1][2] == size:
                classes[-1] = (classes[-1][0], classes[-1][1] + 1, size)
            else:
                classes.append((first, 1, size))
            first += size
        units = torch.cat(windows)
        perm = (units[:, None] * unit + torch.arange(unit)).reshape(-1)
        position_ids = get_vision_position_ids(grid_thw, merge)[perm].to(self.device)
        cos, sin = self.visual.rotary_pos_emb(torch.empty(0, device=self.device), position_ids)  # [n, head_dim]
        return _GridPlan(
            grid=grid, n=grid[1] * grid[2], perm=perm.to(self.device), unit_inverse=torch.argsort(units).to(self.device),
            classes=classes, cos=cos.float()[:, None, None, :].contiguous(), sin=sin.float()[:, None, None, :].contiguous())

    def _check(self, plan: _GridPlan) -> float:
        """Largest relative error of the fast path against transformers' tower on random pairs of this grid."""
        gen = torch.Generator().manual_seed(0)
        rows = [torch.randn((plan.n, self.in_features), generator=gen) for _ in range(CHECK_PAIRS)]
        ours, theirs = self._fast(plan, rows), self.reference(plan.grid, rows)
        err = 0.0
        for o, t in zip(ours, theirs):
            scale = float(t.float().abs().max())
            err = max(err, float((o.float() - t.float()).abs().max()) / max(scale, 1e-30))
        return err

    def _fall_back(self, grid: Sequence[int], reason: str) -> None:
        key = _key(grid)
        self._fallbacks[key] = reason
        plan = self._plans.pop((int(grid[0]), int(grid[1]), int(grid[2])), None)
        if plan is not None:
            plan.graphs.clear()
            plan.inputs = plan.outputs = None
        log.warning("engine.vision_tower_fallback", grid=key, reason=reason)

    # -- CUDA graphs ----------------------------------------------------------------------------------------------

    def _graph(self, plan: _GridPlan, bucket: int) -> _Graph:
        graph = plan.graphs.get(bucket)
        if graph is None:
            graph = plan.graphs[bucket] = self._capture(plan, bucket)
        return graph

    def _capture(self, plan: _GridPlan, bucket: int) -> _Graph:
        t0 = time.perf_counter()
        if plan.inputs is None or plan.outputs is None:
            top = self.buckets[-1]
            plan.inputs = torch.zeros((top, plan.n, self.in_features), dtype=torch.float32, device=self.device)
            out_hidden = int(self.visual.merger.mlp[-1].out_features)
            plan.outputs = torch.zeros((top, plan.n // self.merge_unit, out_hidden), dtype=self.dtype,
                                       device=self.device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        inputs, outputs = plan.inputs[:bucket], plan.outputs[:bucket]
        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(plan, inputs)
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs.copy_(self.forward(plan, inputs))
        torch.cuda.synchronize(self.device)
        return _Graph(graph, time.perf_counter() - t0)

    def describe(self) -> dict[str, Any]:
        graphs = {_key(g): sorted(p.graphs) for g, p in self._plans.items() if p.graphs}
        return {
            "mode": "cuda_graphs" if self.use_graphs else "eager",
            "rotary": "triton" if self.fused_rotary else "torch",
            "max_batch": self.max_batch,
            "buckets": list(self.buckets),
            "grids": {
                _key(g): {"windows": [[k, size] for _, k, size in p.classes], "check_error": p.check_error}
                for g, p in self._plans.items()
            },
            "graphs": graphs,
            "capture_s": round(sum(x.capture_s for p in self._plans.values() for x in p.graphs.values()), 3),
            "fallbacks": dict(self._fallbacks),
            "tower_calls": self.tower_calls,
            "pairs_encoded": self.pairs_encoded,
            "fallback_calls": self.fallback_calls,
        }
