"""Decoder steps over preallocated KV slots, eager or captured as CUDA graphs.

Plain eager PyTorch decoding of the 3B model is bound by kernel launches (hundreds per token), far from the
weight-read floor (~2 ms per token on an H100). Here the language model's layers are driven with static shapes:

- ``SlotCache``: K/V for ``slots`` concurrent answers, ``max_len`` tokens each (the camera's prefix, copied in,
  then the question and the answer), one tensor per K and V: [layers, slots, kv_heads, max_len, head_dim].
- ``decode``: one token for each of the first B slots. Each row writes its new K/V at its own index and attends
  to keys 0..index (a mask), so rows of different lengths and cameras share one batch.
- ``prefill``: S question tokens into one slot after its prefix (S padded to a bucket; the causal mask keeps the
  real tokens from seeing the padding, later writes overwrite it).

Grouped-query attention is computed without repeating K/V: the query heads that share a KV head are laid out
as extra query rows of that head (exact for any mask). The layer's own weights and rotary tables are used, so
the arithmetic is the model's; the cache and the attention call are ours. On CUDA the step's small kernels are
replaced by the fused Triton kernels of ``livewatch.engine.model.kernels`` (checked at start-up, else PyTorch's).

``StepRunner`` runs these eagerly (CPU, or CUDA without graphs) or replays CUDA graphs captured at start-up for
a few batch sizes and prefill lengths; inputs go through static buffers, one host-to-device copy per call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half

from livewatch.engine.model import kernels
from livewatch.engine.model.loading import LoadedModel
from livewatch.log import get_logger

log = get_logger("livewatch.engine")

DECODE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PREFILL_BUCKETS = (32, 64, 128, 256, 512)


class SlotCache:
    def __init__(self, lm: LoadedModel, slots: int, max_len: int) -> None:
        cfg = lm.model.config.text_config
        self.layers = int(cfg.num_hidden_layers)
        self.kv_heads = int(cfg.num_key_value_heads)
        self.head_dim = int(cfg.hidden_size // cfg.num_attention_heads)
        self.slots = slots
        self.max_len = max_len
        shape = (self.layers, slots, self.kv_heads, max_len, self.head_dim)
        self.k = torch.zeros(shape, dtype=lm.dtype, device=lm.device)
        self.v = torch.zeros(shape, dtype=lm.dtype, device=lm.device)

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def load(self, slot: int, prefix_k: torch.Tensor, prefix_v: torch.Tensor) -> None:
        """Copy a prefix ([layers, kv_heads, P, head_dim] each) into a slot: two copies."""
        n = prefix_k.shape[2]
        self.k[:, slot, :, :n].copy_(prefix_k)
        self.v[:, slot, :, :n].copy_(prefix_v)


def fuse_projections(text_model: Any) -> None:
    """Give each layer one [q; k; v] and one [gate; up] weight, the modules keeping views into them.

    One GEMM instead of three (two) per layer at decode, where each launch costs more than its arithmetic; no
    memory is added and the model's own forward is unchanged (its weights are the same numbers, as views)."""
    for layer in text_model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if getattr(attn, "_livewatch_qkv", None) is not None:
            continue
        w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        b = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        nq, nk = attn.q_proj.weight.shape[0], attn.k_proj.weight.shape[0]
        for mod, lo, hi in ((attn.q_proj, 0, nq), (attn.k_proj, nq, nq + nk), (attn.v_proj, nq + nk, w.shape[0])):
            mod.weight = torch.nn.Parameter(w[lo:hi], requires_grad=False)
            mod.bias = torch.nn.Parameter(b[lo:hi], requires_grad=False)
        attn._livewatch_qkv = (w, b, nq, nk)
        gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        ng = mlp.gate_proj.weight.shape[0]
        mlp.gate_proj.weight = torch.nn.Parameter(gu[:ng], requires_grad=False)
        mlp.up_proj.weight = torch.nn.Parameter(gu[ng:], requires_grad=False)
        mlp._livewatch_gate_up = (gu, ng)


def fused_weights(layer: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer's ([q; k; v] weight, [q; k; v] bias, [gate; up] weight) as the decode step reads them (after
    ``fuse_projections``): the bench times the same matrices."""
    w, b, _, _ = layer.self_attn._livewatch_qkv
    gu, _ = layer.mlp._livewatch_gate_up
    return w, b, gu


def check_kernels(lm: LoadedModel) -> tuple[dict[str, float], str | None]:
    """Compile the fused kernels and check each against its PyTorch expression on random inputs of the model's
    shapes (start-up). Returns (relative error per kernel, why they must stay off: None when they may run)."""
    if not kernels.available(lm.device):
        return {}, "triton is not available for this device"
    cfg = lm.model.config.text_config
    activation = getattr(cfg, "hidden_act", "silu")
    if activation != "silu":  # the MLP kernels compute SiLU; the PyTorch step calls the model's own act_fn
        return {}, f"the model's MLP activation is {activation!r}; the fused kernels compute SiLU"
    heads = int(cfg.num_attention_heads)
    shapes = {"heads": heads, "kv_heads": int(cfg.num_key_value_heads), "head_dim": int(cfg.hidden_size // heads),
              "hidden": int(cfg.hidden_size)}
    try:
        errors = kernels.self_test(lm.device, lm.dtype, shapes)
    except Exception as exc:  # a missing compiler or an unsupported device: PyTorch's kernels still work
        return {}, f"{type(exc).__name__}: {exc}"
    return errors, kernels.describe_self_test(errors, lm.dtype)


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    return kernels.ref_rms_norm(x, norm.weight, norm.variance_epsilon)


class _Layers:
    """The language model's math over a SlotCache."""

    def __init__(self, lm: LoadedModel, cache: SlotCache) -> None:
        text = lm.text_model
        fuse_projections(text)
        self.embed = text.embed_tokens
        self.rotary = text.rotary_emb
        self.layers = list(text.layers)
        self.norm = text.norm
        self.lm_head = lm.model.lm_head
        cfg = lm.model.config.text_config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_rep = self.n_heads // cache.kv_heads
        self.cache = cache
        self.scaling = self.layers[0].self_attn.scaling
        self.key_index = torch.arange(cache.max_len, device=lm.device)
        self.fused = False  # the Triton kernels of livewatch.engine.model.kernels instead of the PyTorch expressions

    def _masked_attention(self, kc, vc, q: torch.Tensor, rows, mask, contiguous_rows: bool) -> torch.Tensor:
        """q [B, heads, S, D] over one layer's cache (kc, vc: [slots, kv_heads, max_len, D]) -> [B, S, heads * D]."""
        b, _, s, _ = q.shape
        c = self.cache
        if contiguous_rows:  # decode: rows are slots 0..B-1, a view
            keys, values = kc[:b], vc[:b]
        else:  # prefill: one slot given as a tensor (so one captured graph serves every slot)
            keys, values = kc.index_select(0, rows), vc.index_select(0, rows)
        # Attention as batched matmuls: with a per-row mask and few query rows (decode), SDPA's fused kernels run
        # one thread block per (row, head) and leave the GPU idle; cuBLAS splits the key axis instead. The scale
        # and the additive mask ride on the first product (baddbmm), the softmax runs in float32.
        bh, rows_q, n_keys = b * c.kv_heads, self.n_rep * s, keys.shape[2]
        q3 = q.reshape(bh, rows_q, c.head_dim)
        scores = torch.baddbmm(mask, q3, keys.reshape(bh, n_keys, c.head_dim).transpose(1, 2), alpha=self.scaling)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
        o = torch.bmm(probs, values.reshape(bh, n_keys, c.head_dim))
        return o.view(b, c.kv_heads, self.n_rep, s, c.head_dim).permute(0, 3, 1, 2, 4).reshape(b, s, -1)

    def _fused_layer(self, layer_idx: int, layer: Any, h: torch.Tensor, delta: torch.Tensor | None, cos, sin,
                     write, rows, mask, contiguous_rows: bool, seq: int) -> torch.Tensor:
        """The same layer through the Triton kernels. h [N, H] (N = B * seq) is the residual stream before the
        previous layer's MLP output ``delta`` is added (the add rides on this layer's first norm); returns this
        layer's MLP output, h updated in place."""
        c = self.cache
        attn, mlp = layer.self_attn, layer.mlp
        norm = layer.input_layernorm
        x = kernels.add_rms_norm(h, delta, norm.weight, norm.variance_epsilon)
        w, bias, _, _ = attn._livewatch_qkv
        one_row = h.shape[0] == 1  # a single answer: Triton's GEMV reads the weights faster than cuBLAS
        qkv = kernels.gemv(x, w, bias) if one_row else torch.nn.functional.linear(x, w, bias)
        kc, vc = c.k[layer_idx], c.v[layer_idx]
        q = kernels.rope_qkv(qkv, cos, sin, kc, vc, rows, write.reshape(-1), seq, self.n_heads)  # [N, heads, D]
        if contiguous_rows and seq == 1:
            o = kernels.decode_attention(q, kc, vc, write.reshape(-1), self.scaling)
        else:
            b = h.shape[0] // seq
            o = self._masked_attention(kc, vc, q.view(b, seq, self.n_heads, -1).transpose(1, 2), rows, mask,
                                       contiguous_rows).reshape(h.shape[0], -1)
        norm = layer.post_attention_layernorm
        attn_out = kernels.gemv(o, attn.o_proj.weight, attn.o_proj.bias) if one_row else attn.o_proj(o)
        x = kernels.add_rms_norm(h, attn_out, norm.weight, norm.variance_epsilon)
        gu, _ = mlp._livewatch_gate_up
        down = mlp.down_proj
        if one_row:  # the activation rides on the down projection's input loads
            return kernels.gemv(kernels.gemv(x, gu), down.weight, down.bias, silu_gate=True)
        return down(kernels.silu_mul(torch.nn.functional.linear(x, gu)))

    def _attend(
        self, layer_idx: int, layer: Any, h: torch.Tensor, cos, sin, write, rows, mask, contiguous_rows: bool
    ) -> torch.Tensor:
        """h: [B, S, H]; write: [B, S] cache indices; rows: [B] slot per row; mask: additive, [B * kv_heads,
        n_rep * S, max_len], 0 where a query may attend and -inf elsewhere."""
        b, s, _ = h.shape
        c = self.cache
        attn = layer.self_attn
        x = _rms_norm(layer.input_layernorm, h)
        w, bias, nq, nk = attn._livewatch_qkv
        qkv = torch.nn.functional.linear(x, w, bias)
        # rotary on queries and keys together: one set of elementwise kernels instead of two
        qk = qkv[..., : nq + nk].view(b, s, self.n_heads + c.kv_heads, c.head_dim).transpose(1, 2)
        qk = qk * cos + rotate_half(qk) * sin
        q, k = qk[:, : self.n_heads], qk[:, self.n_heads :]
        v = qkv[..., nq + nk :].view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        kc, vc = c.k[layer_idx], c.v[layer_idx]  # [slots, kv_heads, max_len, head_dim]
        r = rows[:, None].expand(b, s)
        kc[r, :, write] = k.transpose(1, 2)  # [B, S, kv_heads, head_dim] at (row, index)
        vc[r, :, write] = v.transpose(1, 2)
        o = self._masked_attention(kc, vc, q, rows, mask, contiguous_rows)
        h = h + attn.o_proj(o)
        mlp = layer.mlp
        gu, ng = mlp._livewatch_gate_up
        y = torch.nn.functional.linear(_rms_norm(layer.post_attention_layernorm, h), gu)
        return h + mlp.down_proj(mlp.act_fn(y[..., :ng]) * y[..., ng:])

    def run(self, tokens: torch.Tensor, positions: torch.Tensor, write: torch.Tensor, rows: torch.Tensor,
            last: torch.Tensor, contiguous_rows: bool) -> torch.Tensor:
        """tokens [B, S], positions [3, B, S], write [B, S], rows [B] (slots; 0..B-1 when ``contiguous_rows``),
        last [B] (which of S gives logits)."""
        b, s = tokens.shape
        h = self.embed(tokens)
        cos, sin = self.rotary(h, positions)
        mask = None
        if not (self.fused and contiguous_rows and s == 1):  # the fused decode attention needs no mask
            allowed = self.key_index[None, None, :] <= write[:, :, None]  # [B, S, max_len]: causal over the slot
            kvh = self.cache.kv_heads
            mask = torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill_(~allowed, float("-inf"))
            mask = mask[:, None, None].expand(b, kvh, self.n_rep, s, -1).reshape(b * kvh, self.n_rep * s, -1)
        picked_rows = torch.arange(b, device=h.device) * s + last
        if self.fused:
            h = h.reshape(b * s, -1)
            cos, sin = cos.reshape(b * s, -1).contiguous(), sin.reshape(b * s, -1).contiguous()
            delta = None
            for i, layer in enumerate(self.layers):
                delta = self._fused_layer(i, layer, h, delta, cos, sin, write, rows, mask, contiguous_rows, s)
            h, delta = h[picked_rows], delta[picked_rows] if delta is not None else None
            picked = kernels.add_rms_norm(h, delta, self.norm.weight, self.norm.variance_epsilon)
        else:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            for i, layer in enumerate(self.layers):
                h = self._attend(i, layer, h, cos, sin, write, rows, mask, contiguous_rows)
            picked = _rms_norm(self.norm, h.reshape(b * s, -1)[picked_rows])  # [B, H]
        return self.lm_head(picked).float()


@dataclass
class _Graph:
    graph: Any
    inputs: torch.Tensor  # [4, B, S] int64: token, position, write index, (row in [0, 0]; last in [0, 1])
    logits: torch.Tensor
    argmax: torch.Tensor


class StepRunner:
    """Decode and prefill calls over a SlotCache; CUDA graphs when ``use_graphs``."""

    def __init__(self, lm: LoadedModel, cache: SlotCache, use_graphs: bool, fused_kernels: bool = True) -> None:
        self.lm = lm
        self.cache = cache
        self.math = _Layers(lm, cache)
        self.device = lm.device
        self.use_graphs = use_graphs and lm.device.type == "cuda"
        self.decode_buckets = tuple(b for b in DECODE_BUCKETS if b <= cache.slots) or (cache.slots,)
        if self.decode_buckets[-1] != cache.slots:
            self.decode_buckets = (*self.decode_buckets, cache.slots)
        self.prefill_buckets = tuple(s for s in PREFILL_BUCKETS if s < cache.max_len)
        self._decode_graphs: dict[int, _Graph] = {}
        self._prefill_graphs: dict[int, _Graph] = {}
        self._eager_inputs: dict[int, torch.Tensor] = {}
        self._histories: dict[Any, torch.Tensor] = {}
        self._host: dict[int, torch.Tensor] = {}
        self.capture_s = 0.0
        # the Triton kernels run on CUDA; tests turn this on for CPU tensors under Triton's interpreter
        self.want_kernels = fused_kernels and lm.device.type == "cuda"
        self.kernel_errors: dict[str, float] = {}
        self.kernels_off_reason: str | None = None

    # -- the calls ------------------------------------------------------------------------------------------------

    def bucket_for(self, top_slot: int) -> int:
        bucket = next((b for b in self.decode_buckets if b > top_slot), None)
        if bucket is None:
            raise ValueError(f"slot {top_slot} is outside the {self.cache.slots} slots")
        return bucket

    def _decode_inputs(self, bucket: int) -> torch.Tensor:
        graph = self._decode_graphs.get(bucket)
        if graph is not None:
            return graph.inputs
        if bucket not in self._eager_inputs:
            self._eager_inputs[bucket] = torch.zeros((4, bucket, 1), dtype=torch.long, device=self.device)
        return self._eager_inputs[bucket]

    @torch.inference_mode()
    def set_rows(self, bucket: int, rows: dict[int, tuple[int, int, int]]) -> None:
        """Load the decode inputs of ``bucket``: {slot: (token, position, write index)}; other rows are padding
        that writes into its own slot's last cache position, which nothing reads."""
        host = self._host_inputs(bucket)
        host.zero_()
        host[2, :, 0] = self.cache.max_len - 1
        for slot, (token, position, write) in rows.items():
            host[0, slot, 0], host[1, slot, 0], host[2, slot, 0] = token, position, write
        self._decode_inputs(bucket).copy_(host, non_blocking=True)

    @torch.inference_mode()
    def set_tokens(self, bucket: int, tokens: dict[int, int]) -> None:
        """Overwrite the next input token of some rows (sampled rows pick their token on the host)."""
        inputs = self._decode_inputs(bucket)
        for slot, token in tokens.items():
            inputs[0, slot, 0] = token

    @torch.inference_mode()
    def decode(self, bucket: int, steps: int = 1) -> tuple[torch.Tensor, list[list[int]]]:
        """``steps`` decode steps for the rows of ``bucket`` (inputs from set_rows). Each step feeds its greedy
        tokens back as the next inputs on the device (positions and write indices advance by one), so
        several steps run without a host round trip. Returns (the last step's logits [bucket, V] on the
        device, greedy tokens per step [steps][bucket])."""
        graph = self._decode_graphs.get(bucket)
        history = self._history(bucket, steps)
        for i in range(steps):
            if graph is not None:
                graph.graph.replay()
                logits, argmax = graph.logits, graph.argmax
            else:
                logits, argmax = self._decode_eager(self._decode_inputs(bucket))
            history[i].copy_(argmax)
        out = self._host_history(bucket, steps)
        out.copy_(history[:steps], non_blocking=out.is_pinned())
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return logits, out.tolist()

    def _history(self, bucket: int, steps: int) -> torch.Tensor:
        key = (bucket, steps)
        if key not in self._histories:
            self._histories[key] = torch.zeros((steps, bucket), dtype=torch.long, device=self.device)
        return self._histories[key]

    def _host_history(self, bucket: int, steps: int) -> torch.Tensor:
        key = (bucket, steps, "host")
        if key not in self._histories:
            self._histories[key] = torch.zeros((steps, bucket), dtype=torch.long, pin_memory=self.device.type == "cuda")
        return self._histories[key]

    def _prefill_host(self, bucket: int) -> torch.Tensor:
        key = ("prefill", bucket)
        if key not in self._histories:
            self._histories[key] = torch.zeros((4, 1, bucket), dtype=torch.long, pin_memory=self.device.type == "cuda")
        return self._histories[key]

    def _host_inputs(self, bucket: int) -> torch.Tensor:
        if bucket not in self._host:
            self._host[bucket] = torch.zeros((4, bucket, 1), dtype=torch.long, pin_memory=self.device.type == "cuda")
        return self._host[bucket]

    @torch.inference_mode()
    def prefill(
        self, slot: int, tokens: list[int], start_pos: int, start_write: int, pad_to: int | None = None
    ) -> tuple[torch.Tensor, int]:
        """Write ``tokens`` into ``slot`` from cache index ``start_write`` (positions from ``start_pos``).

        Returns the last token's logits [V] and its greedy token. Captured graphs pad the question to a bucket
        length (``pad_to`` forces that padding on the eager path too, for tests)."""
        s = len(tokens)
        bucket = next((b for b in self.prefill_buckets if b >= s), None) if self._prefill_graphs else pad_to
        if bucket is None or bucket + start_write > self.cache.max_len:
            bucket = s  # eager (or too long for a captured bucket): exactly the question's length
        host = self._prefill_host(bucket)
        host.zero_()
        host[0, 0, :s] = torch.tensor(tokens)
        host[1, 0] = torch.arange(start_pos, start_pos + bucket)
        host[2, 0] = torch.arange(start_write, start_write + bucket)
        host[3, 0, 0] = slot
        host[3, 0, 1] = s - 1
        graph = self._prefill_graphs.get(bucket)
        if graph is not None:
            graph.inputs.copy_(host, non_blocking=True)
            graph.graph.replay()
            logits, argmax = graph.logits, graph.argmax
        else:
            logits, argmax = self._prefill_eager(host.to(self.device))
        return logits[0], int(argmax[0])

    def _decode_eager(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step that also feeds its greedy tokens back into ``inputs`` (captured as is)."""
        b = inputs.shape[1]
        rows = torch.arange(b, device=inputs.device)
        pos = inputs[1].unsqueeze(0).expand(3, -1, -1)
        last = torch.zeros(b, dtype=torch.long, device=inputs.device)
        logits = self.math.run(inputs[0], pos, inputs[2], rows, last, contiguous_rows=True)
        argmax = logits.argmax(-1)
        inputs[0, :, 0].copy_(argmax)
        inputs[1].add_(1)
        inputs[2].add_(1).clamp_(max=self.cache.max_len - 1)  # padding rows stay on their unread last position
        return logits, argmax

    def _prefill_eager(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = inputs[3, :, 0]
        pos = inputs[1].unsqueeze(0).expand(3, -1, -1)
        logits = self.math.run(inputs[0], pos, inputs[2], rows, inputs[3, :, 1], contiguous_rows=False)
        return logits, logits.argmax(-1)

    # -- CUDA graphs ----------------------------------------------------------------------------------------------

    def prepare_kernels(self) -> bool:
        """Compile the fused kernels and check each against its PyTorch expression on random inputs (start-up);
        the step uses them only if all pass. Returns whether it does."""
        if not self.want_kernels or self.math.fused:
            return self.math.fused
        self.kernel_errors, self.kernels_off_reason = check_kernels(self.lm)
        if self.kernels_off_reason is None:
            self.math.fused = True
        else:
            log.warning("engine.kernels_off", reason=self.kernels_off_reason)
        return self.math.fused

    def capture(self) -> float:
        """Prepare the fused kernels, then capture every decode and prefill bucket (start-up). Returns the seconds
        the graphs took (0 without graphs)."""
        self.prepare_kernels()
        if not self.use_graphs:
            return 0.0
        t0 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        for b in self.decode_buckets:
            self._decode_graphs[b] = self._capture(self._decode_eager, (4, b, 1), pool)
        for s in self.prefill_buckets:
            self._prefill_graphs[s] = self._capture(self._prefill_eager, (4, 1, s), pool)
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0
        return self.capture_s

    @torch.inference_mode()
    def _capture(self, fn, shape: tuple[int, int, int], pool) -> _Graph:
        inputs = torch.zeros(shape, dtype=torch.long, device=self.device)
        inputs[2] = self.cache.max_len - 1  # capture-time writes go where nothing is read
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            logits, argmax = fn(inputs)
        return _Graph(graph, inputs, logits, argmax)

    def decode_graph(self, bucket: int) -> _Graph | None:
        """The captured decode graph of a batch bucket (None without graphs): the bench replays it alone."""
        return self._decode_graphs.get(bucket)

    def drop_graphs(self) -> None:
        """Serve eagerly from now on (a capture that failed part-way leaves no half set of graphs)."""
        self.use_graphs = False
        self._decode_graphs.clear()
        self._prefill_graphs.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "cuda_graphs" if self._decode_graphs else "eager",
            "slots": self.cache.slots,
            "max_tokens_per_slot": self.cache.max_len,
            "slot_cache_bytes": self.cache.nbytes,
            "decode_buckets": list(self._decode_graphs) or list(self.decode_buckets),
            "prefill_buckets": list(self._prefill_graphs) or list(self.prefill_buckets),
            "capture_s": round(self.capture_s, 2),
            "kernels": "triton" if self.math.fused else "torch",
            **({"kernels_off": self.kernels_off_reason} if self.kernels_off_reason else {}),
        }
