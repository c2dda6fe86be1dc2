"""The fused Triton kernels (run by Triton's interpreter on CPU tensors) against their PyTorch expressions, and
the decode step built from them against the PyTorch step, with the tiny model in float32.

The interpreter's bfloat16 casts truncate and its bfloat16 dot products are wrong, so bfloat16 is checked on a
GPU only (at the daemon's start-up by kernels.self_test, and by tools/bench.py's agreement section)."""

from __future__ import annotations

import math

import pytest
import torch

from engine_helpers import T0, make_pair
from livewatch.engine.model import kernels
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.model.fastpath import SlotCache, StepRunner
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import load_model

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not kernels.available(CPU), reason="needs triton with TRITON_INTERPRET=1")


@pytest.mark.parametrize(
    "shapes",
    [
        {},  # self_test's own: 8 query heads over 2 KV heads, head_dim 64
        {"hidden": 64, "heads": 4, "kv_heads": 2, "head_dim": 16, "inter": 128},  # the tiny model
        {"hidden": 200, "heads": 6, "kv_heads": 6, "head_dim": 32, "inter": 100, "len": 130},  # no GQA, odd sizes
    ],
)
def test_every_kernel_matches_its_reference(shapes) -> None:
    errors = kernels.self_test(CPU, torch.float32, shapes)
    assert set(errors) == {"add_rms_norm", "rope_qkv", "decode_attention", "silu_mul", "gemv"}
    assert kernels.describe_self_test(errors, torch.float32) is None, errors


@pytest.mark.parametrize("chunk", [16, 64, 128])
def test_decode_attention_covers_chunk_edges(chunk: int) -> None:
    """Rows whose keys end exactly on, just before and just after a chunk boundary, and a single-key row."""
    gen = torch.Generator().manual_seed(3)
    lengths = [1, chunk - 1, chunk, chunk + 1, 3 * chunk]
    slots, kv_heads, heads, d, max_len = len(lengths), 2, 8, 32, 3 * chunk + 5
    k = torch.randn((slots, kv_heads, max_len, d), generator=gen)
    v = torch.randn((slots, kv_heads, max_len, d), generator=gen)
    q = torch.randn((slots, heads, d), generator=gen)
    write = torch.tensor(lengths) - 1
    out = kernels.decode_attention(q, k, v, write, 1 / math.sqrt(d), chunk)
    ref = kernels.ref_decode_attention(q, k, v, write, 1 / math.sqrt(d))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # keys past a row's length must not matter: poison them
    k2, v2 = k.clone(), v.clone()
    for row, n in enumerate(lengths):
        k2[row, :, n:] = 1e4
        v2[row, :, n:] = float("nan")
    torch.testing.assert_close(kernels.decode_attention(q, k2, v2, write, 1 / math.sqrt(d), chunk), out)


@pytest.mark.parametrize(("n", "k", "config"), [(40, 64, (16, 32, 4, 2)), (37, 100, (8, 64, 4, 3)), (64, 64, None)])
def test_gemv_with_bias_and_with_the_activation_on_its_input(n: int, k: int, config) -> None:
    gen = torch.Generator().manual_seed(5)
    w, b = torch.randn((n, k), generator=gen), torch.randn(n, generator=gen)
    x, gu = torch.randn((1, k), generator=gen), torch.randn((1, 2 * k), generator=gen)
    torch.testing.assert_close(kernels.gemv(x, w, b, config=config), torch.nn.functional.linear(x, w, b))
    torch.testing.assert_close(kernels.gemv(gu, w, silu_gate=True, config=config),
                               torch.nn.functional.linear(kernels.ref_silu_mul(gu), w))
    with pytest.raises(ValueError, match="one row"):
        kernels.gemv(torch.zeros((2, k)), w)


def test_attention_chunk_grows_with_the_batch() -> None:
    assert kernels.attention_chunk(1, 2, 4096, 132) == 64
    assert kernels.attention_chunk(8, 2, 4096, 132) == 128
    assert kernels.attention_chunk(16, 2, 4096, 132) == 256
    assert kernels.attention_chunk(64, 2, 4096, 132) == 256  # capped


def test_self_test_reports_a_wrong_kernel(monkeypatch) -> None:
    """The start-up check is not a formality: a kernel that computes something else is named and turned off."""
    monkeypatch.setattr(kernels, "silu_mul", lambda gu: kernels.ref_silu_mul(gu) * 1.01)
    errors = kernels.self_test(CPU, torch.float32, {"hidden": 64, "heads": 4, "kv_heads": 2, "head_dim": 16})
    assert "silu_mul" in (kernels.describe_self_test(errors, torch.float32) or "")


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), "cpu", "float32")


def test_fused_step_equals_the_pytorch_step(lm) -> None:
    """Prefill then decode through both paths from the same cache state: same logits, same greedy tokens."""
    runners = []
    for fused in (False, True):
        runner = StepRunner(lm, SlotCache(lm, slots=2, max_len=256), use_graphs=False)
        runner.want_kernels = fused
        assert runner.prepare_kernels() is fused
        runners.append(runner)
    assert runners[1].describe()["kernels"] == "triton" and runners[0].describe()["kernels"] == "torch"
    gen = torch.Generator().manual_seed(1)
    vocab = lm.model.config.text_config.vocab_size
    prompt = torch.randint(0, vocab, (40,), generator=gen).tolist()
    results = []
    for runner in runners:
        logits0, first = runner.prefill(1, prompt, start_pos=0, start_write=0)
        other, _ = runner.prefill(0, prompt[:17], start_pos=5, start_write=0)
        runner.set_rows(2, {0: (3, 22, 17), 1: (first, 40, 40)})
        logits, tokens = runner.decode(2, steps=6)
        runner.set_rows(1, {0: (tokens[-1][0], 28, 23)})  # one row: the GEMV projections
        single, single_tokens = runner.decode(1, steps=4)
        results.append((logits0, other, logits, tokens + single_tokens, single))
    (l0a, oa, la, ta, sa), (l0b, ob, lb, tb, sb) = results
    torch.testing.assert_close(sb, sa, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(l0b, l0a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ob, oa, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-4)
    assert tb == ta


def test_kernels_stay_off_for_a_model_whose_activation_is_not_silu(lm, monkeypatch) -> None:
    monkeypatch.setattr(lm.model.config.text_config, "hidden_act", "gelu_pytorch_tanh")
    runner = StepRunner(lm, SlotCache(lm, slots=1, max_len=64), use_graphs=False)
    runner.want_kernels = True
    assert runner.prepare_kernels() is False
    assert runner.describe()["kernels"] == "torch" and "gelu_pytorch_tanh" in runner.describe()["kernels_off"]


def test_batched_answers_with_fused_kernels_equal_the_unbatched_path(lm) -> None:
    core = EngineCore(lm, timezone="UTC")
    core.set_context("a", [make_pair(i, T0 + 2 * i) for i in range(2)], 1)
    params = SamplingParams(max_new_tokens=6)
    expected = core.ask("a", "What is here?", params).token_ids
    decoder = BatchDecoder(core, slots=2, max_len=1024, use_graphs=False)
    decoder.runner.want_kernels = True
    assert decoder.runner.prepare_kernels()
    got: list[str] = []
    prepared = core.prepare("a", "What is here?", params.max_new_tokens)
    assert decoder.admit("q", prepared, params, got.append, lambda: False) is None
    outcomes = []
    while decoder.active:
        outcomes += decoder.step()
    assert [o.answer.token_ids for o in outcomes] == [expected]
