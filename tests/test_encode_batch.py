"""Several cameras' prefixes updated in one encode step (EngineCore.encode_many: one vision call, one prefill
forward) equal each camera encoded alone, and answer like the from-scratch reference (tiny model, float32, CPU),
through extension, partial rebuild, full rebuild and mixed frame sizes; the step's token budget and the encode
lag bookkeeping."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from engine_helpers import T0, make_pair, reference_greedy
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams, TemporaryContext
from livewatch.engine.prompting.layout import UpdateKind
from livewatch.engine.model.loading import load_model
from livewatch.engine.prompting.preprocess import tokens_per_pair

N = 10
SIZES = {"a": (360, 640), "b": (480, 640), "c": (360, 640)}  # b: another grid, so two vision groups


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


def pairs_of(camera: str, indices, gap: float = 2.0):
    base = {"a": 0, "b": 100, "c": 200}[camera]
    return [make_pair(base + i, T0 + 300 * (i > 0) + gap * i, SIZES[camera]) for i in indices]  # 0: long ago


def contexts(step: int) -> dict[str, list]:
    """Step 0: a first context each. Step 1: a grows by one pair (extension), b's second pair leaves and one
    lands (partial rebuild after its first pair), c's first pair leaves (a new head: full rebuild)."""
    if step == 0:
        return {"a": pairs_of("a", range(3)), "b": pairs_of("b", range(4)), "c": pairs_of("c", range(3))}
    return {
        "a": pairs_of("a", range(4)),
        "b": pairs_of("b", [0, 2, 3, 4]),
        "c": pairs_of("c", [1, 2, 3]),
    }


def assert_same_prefix(x: EngineCore, y: EngineCore, camera: str) -> None:
    kx, ky = x.prefix_kv(camera), y.prefix_kv(camera)
    assert len(kx) == len(ky)
    for (k1, v1), (k2, v2) in zip(kx, ky):
        assert k1.shape == k2.shape
        scale = max(float(k2.abs().max()), float(v2.abs().max()), 1.0)
        assert float((k1 - k2).abs().max()) <= 1e-4 * scale and float((v1 - v2).abs().max()) <= 1e-4 * scale


def test_batched_encodes_equal_each_camera_alone_and_the_reference(lm) -> None:
    together, alone = EngineCore(lm, timezone="UTC"), EngineCore(lm, timezone="UTC")
    kinds = []
    for step, want in enumerate(([UpdateKind.REBUILD] * 3, [UpdateKind.EXTEND, UpdateKind.PARTIAL, UpdateKind.REBUILD])):
        for camera, pairs in contexts(step).items():
            together.set_context(camera, pairs, step + 1)
            alone.set_context(camera, pairs, step + 1)
        batch = together.encode_many(list(SIZES))
        assert not batch.failed and not batch.deferred
        assert [r.kind for _, r in batch.reports] == want
        assert all(r.cameras == 3 for _, r in batch.reports)
        for camera in SIZES:
            alone.encode(camera)
            assert_same_prefix(together, alone, camera)
        kinds.append([r.kind for _, r in batch.reports])
    # the extension appended one pair's tokens; the partial rebuild recomputed b's last three pairs only
    reports = dict(batch.reports)
    assert reports["a"].prefill_tokens == tokens_per_pair(*SIZES["a"], lm.spec)
    assert reports["b"].prefill_tokens == 3 * tokens_per_pair(*SIZES["b"], lm.spec)
    params = SamplingParams(max_new_tokens=N)
    for camera, pairs in contexts(1).items():
        answer = together.ask(camera, "What happened at the door?", params)
        assert answer.metrics["cache_reused"] is True  # answered on the batched prefix
        expected = reference_greedy(together, camera, pairs, "What happened at the door?", N)
        assert list(answer.token_ids) == expected and len(set(expected)) > 2


def test_the_step_budget_defers_the_cameras_that_do_not_fit(lm) -> None:
    core = EngineCore(lm, timezone="UTC")
    for camera, pairs in contexts(0).items():
        core.set_context(camera, pairs, 1)
    batch = core.encode_many(["b", "a", "c"], token_budget=1)  # the first always runs; the others wait
    assert [c for c, _ in batch.reports] == ["b"] and batch.deferred == ["a", "c"]
    assert not core.needs_encode("b") and core.needs_encode("a") and core.needs_encode("c")
    budget = sum(r.prefill_tokens for _, r in core.encode_many(["a"]).reports) + 1
    core.set_context("a", pairs_of("a", range(4)), 2)  # 120 new tokens
    batch = core.encode_many(["a", "c"], token_budget=budget)
    assert [c for c, _ in batch.reports] == ["a"] and batch.deferred == ["c"]
    assert core.encode_many(["a", "b"]).reports == []  # both up to date: nothing to do


def test_encode_lag_counts_from_the_first_context_not_yet_encoded(lm) -> None:
    core = EngineCore(lm, timezone="UTC")
    published = time.monotonic() - 5.0
    core.set_context("a", pairs_of("a", range(2)), 1, published_at=published)
    core.set_context("a", pairs_of("a", range(3)), 2, published_at=published + 4.0)  # still the first one's age
    assert core.encode_lag_s("a") >= 5.0
    (_, report), = core.encode_many(["a"]).reports
    assert 5.0 <= report.lag_s < 60.0 and core.encode_lag_s("a") == 0.0
    assert core.camera_stats("a")["encode_lag_s"] == 0.0
    core.set_context("a", pairs_of("a", range(3)), 2)  # the version it holds: not stale
    assert core.encode_lag_s("a") == 0.0
    core.set_context("a", pairs_of("a", range(4)), 3, published_at=time.monotonic() - 1.0)
    assert 1.0 <= core.encode_lag_s("a") < 60.0


def test_a_model_failure_fails_the_batch_only_and_frees_its_caches(lm, monkeypatch) -> None:
    core = EngineCore(lm, timezone="UTC")
    for camera, pairs in contexts(0).items():
        core.set_context(camera, pairs, 1)
    core.encode_many(["c"])

    def oom(items):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(core.encoder.prefiller, "run", oom)
    batch = core.encode_many(["a", "b"])
    assert [c for c, _ in batch.failed] == ["a", "b"] and all(e.out_of_memory for _, e in batch.failed)
    assert "2.00 GiB" not in str(batch.failed[0][1])  # no exception text for clients
    monkeypatch.undo()
    assert core.camera_stats("c")["cache_valid"]  # another camera's prefix is untouched
    assert [c for c, _ in core.encode_many(["a", "b"]).reports] == ["a", "b"]  # and the next step succeeds


def test_history_pairs_are_encoded_once_across_temporary_contexts(lm) -> None:
    core = EngineCore(lm, timezone="UTC")
    pairs = pairs_of("a", range(3))
    history, found = TemporaryContext("a", "history", 1), TemporaryContext("a", "find", 2)
    core.set_context(history, pairs, 1)
    (_, first), = core.encode_many([history]).reports
    core.drop_camera(history)
    core.set_context(found, pairs[1:] + pairs_of("a", [7]), 1)
    (_, second), = core.encode_many([found]).reports
    assert first.pairs_encoded == 3 and second.pairs_encoded == 1  # the two shared pairs came from the cache
    core.set_context("a", pairs, 1)  # a live camera's context neither reads nor fills it
    (_, live), = core.encode_many(["a"]).reports
    assert live.pairs_encoded == 3
    core.drop_camera("a")  # the camera goes: its history embeddings too
    again = TemporaryContext("a", "history", 3)
    core.set_context(again, pairs, 1)
    assert core.encode_many([again]).reports[0][1].pairs_encoded == 3
