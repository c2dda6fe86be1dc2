"""The engine's cached, incremental path against an independent from-scratch forward (tiny model, float32, CPU)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from engine_helpers import T0, make_pair, reference_greedy
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.prompting.layout import UpdateKind
from livewatch.engine.model.loading import load_model
from livewatch.errors import CancelledRequest, EngineError, ModelUnavailableError, RequestError

N = 12
GREEDY = SamplingParams(max_new_tokens=N)


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


@pytest.fixture()
def core(lm) -> EngineCore:
    return EngineCore(lm, timezone="UTC", max_gap_s=30.0)


def prefix_digest(core: EngineCore, camera: str) -> tuple[int, str]:
    kv = core.prefix_kv(camera)
    h = hashlib.sha256()
    for k, v in kv:
        h.update(k.contiguous().numpy().tobytes())
        h.update(v.contiguous().numpy().tobytes())
    return int(kv[0][0].shape[-2]), h.hexdigest()


def check(core: EngineCore, camera: str, pairs, question: str) -> dict:
    answer = core.ask(camera, question, GREEDY)
    expected = reference_greedy(core, camera, pairs, question, N)
    assert list(answer.token_ids) == expected
    assert len(set(expected)) > 2, "degenerate reference: the comparison would prove little"
    return answer.metrics


def test_equivalence_through_the_life_of_a_context(core: EngineCore) -> None:
    # Non-uniform times: a star pair long ago (the gap is compressed to max_gap_s), then window pairs.
    times = [T0, T0 + 400, T0 + 402, T0 + 404]
    pairs = [make_pair(i, t) for i, t in enumerate(times)]
    core.set_context("door", pairs, version=1)

    m = check(core, "door", pairs, "What happened at the door?")  # first question: lazy encode
    assert m["cache_reused"] is False and m["encode_ms"] > 0
    assert m["frames_in_context"] == 8 and m["visual_tokens"] == 4 * 120

    before = prefix_digest(core, "door")
    m = check(core, "door", pairs, "Is anyone there?")  # follow-up on the reused prefix
    assert m["cache_reused"] is True and m["encode_ms"] == 0
    assert prefix_digest(core, "door") == before  # a question never modifies the shared prefix

    pairs = pairs + [make_pair(4, T0 + 406), make_pair(5, T0 + 408)]  # append-only batch
    core.set_context("door", pairs, version=2)
    assert core.encode("door").kind is UpdateKind.EXTEND
    check(core, "door", pairs, "What changed?")

    pairs = pairs[:2] + pairs[3:] + [make_pair(6, T0 + 410)]  # window eviction in the middle
    core.set_context("door", pairs, version=3)
    assert core.encode("door").kind is UpdateKind.PARTIAL
    check(core, "door", pairs, "What changed?")

    pairs = pairs[1:] + [make_pair(7, T0 + 412)]  # the oldest pair leaves: every position moves
    core.set_context("door", pairs, version=4)
    report = core.encode("door")
    assert report.kind is UpdateKind.REBUILD and report.pairs_encoded == 1
    check(core, "door", pairs, "Describe the scene.")

    stats = core.camera_stats("door")
    assert stats["vision_pairs_encoded"] == 8  # each pair went through the vision tower exactly once
    assert stats["prefix_extensions"] == 1 and stats["prefix_partial_rebuilds"] == 1 and stats["prefix_rebuilds"] == 2


def test_two_cameras_interleaved(core: EngineCore) -> None:
    a = [make_pair(i, T0 + 2 * i) for i in range(3)]
    b = [make_pair(100 + i, T0 + 50 + 3 * i, size=(480, 640)) for i in range(2)]
    core.set_context("a", a, 1)
    core.set_context("b", b, 1)
    check(core, "a", a, "What is on camera a?")
    check(core, "b", b, "What is on camera b?")
    a = a + [make_pair(3, T0 + 6)]
    core.set_context("a", a, 2)
    check(core, "b", b, "Anything new?")
    check(core, "a", a, "Anything new?")


def test_vision_tower_runs_once_per_pair(core: EngineCore, lm, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"pairs": 0}
    tower = core.encoder.tower
    original = tower.encode

    def counting(items):
        calls["pairs"] += len(items)
        return original(items)

    monkeypatch.setattr(tower, "encode", counting)
    pairs = [make_pair(i, T0 + 2 * i) for i in range(5)]
    core.set_context("c", pairs, 1)
    for q in ("one?", "two?", "three?"):
        core.ask("c", q, SamplingParams(max_new_tokens=2))
    assert calls["pairs"] == 5
    for version, extra in enumerate(range(5, 9), start=2):
        pairs = pairs[1:] + [make_pair(extra, T0 + 2 * extra)]
        core.set_context("c", pairs, version)
        core.ask("c", "again?", SamplingParams(max_new_tokens=2))
    assert calls["pairs"] == 9


def test_cancellation_stops_within_one_token(core: EngineCore) -> None:
    core.set_context("c", [make_pair(0, T0)], 1)
    seen: list[str] = []
    with pytest.raises(CancelledRequest):
        core.ask(
            "c", "Tell me everything.", SamplingParams(max_new_tokens=200, ignore_eos=True),
            on_text=seen.append, cancelled=lambda: len(seen) >= 3,
        )
    assert len(seen) == 3


def test_out_of_memory_fails_one_job_and_the_next_succeeds(core: EngineCore, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = [make_pair(i, T0 + 2 * i) for i in range(3)]
    core.set_context("c", pairs, 1)
    core.ask("c", "warm up", SamplingParams(max_new_tokens=2))
    from livewatch.engine import core as core_module

    real_forward = core_module.forward
    state = {"fail": True}

    def flaky_forward(*args, **kwargs):
        if state.pop("fail", False):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(core_module, "forward", flaky_forward)
    with pytest.raises(EngineError) as err:
        core.ask("c", "first", GREEDY)
    assert err.value.out_of_memory
    assert core.camera_stats("c")["cached_pairs"] == 0 and core.prefix_kv("c") is None  # caches freed
    m = check(core, "c", pairs, "second")
    assert m["cache_reused"] is False


def test_streamed_text_equals_the_answer(core: EngineCore) -> None:
    core.set_context("c", [make_pair(i, T0 + 2 * i) for i in range(2)], 1)
    pieces: list[str] = []
    answer = core.ask("c", "Stream it.", SamplingParams(max_new_tokens=20, ignore_eos=True), on_text=pieces.append)
    assert "".join(pieces) == answer.text
    assert answer.metrics["output_tokens"] == 20 and answer.finish_reason == "length"
    assert answer.text == core.lm.tokenizer.decode(list(answer.token_ids), skip_special_tokens=True)


def test_sampling_is_reproducible_with_a_seed(core: EngineCore) -> None:
    core.set_context("c", [make_pair(0, T0)], 1)
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.9, top_k=50, seed=7, ignore_eos=True)
    assert core.ask("c", "q", params).token_ids == core.ask("c", "q", params).token_ids


def test_requests_that_cannot_be_served(core: EngineCore) -> None:
    with pytest.raises(RequestError) as err:
        core.ask("nowhere", "q")
    assert err.value.code == "unknown_camera"
    core.set_context("empty", [], 1)
    with pytest.raises(RequestError) as err:
        core.ask("empty", "q")
    assert err.value.code == "no_frames"
    core.set_context("c", [make_pair(0, T0)], 1)
    with pytest.raises(RequestError) as err:
        core.ask("c", "q", SamplingParams(max_new_tokens=5000))
    assert err.value.code == "bad_request"


def test_missing_model_fails_fast_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelUnavailableError, match=r"'/nonexistent/model'.*no such directory.*--model"):
        load_model("/nonexistent/model", "cpu")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"Qwen/Qwen2.5-VL-3B-Instruct.*huggingface-cli download"):
        load_model("Qwen/Qwen2.5-VL-3B-Instruct", "cpu")
    # online but the Hub unreachable (a closed local port stands in for it): fails in seconds, not minutes
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    import time

    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError, match=r"not in the local Hugging Face cache and the Hub cannot be reached"):
        load_model("Qwen/Qwen2.5-VL-3B-Instruct", "cpu")
    assert time.monotonic() - t0 < 30
