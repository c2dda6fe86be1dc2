"""The batched decode path (eager on the CPU) against the unbatched reference path, with the tiny model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine_helpers import T0, make_pair
from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import load_model
from livewatch.engine.scheduling.loop import EngineLoop, answer_all
from livewatch.engine.scheduling.scheduler import AskJob, Scheduler
from livewatch.engine.scheduling.warmup import CAMERA as WARM_UP_CAMERA
from livewatch.engine.scheduling.warmup import warm_up
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.errors import CancelledRequest

GREEDY = SamplingParams(max_new_tokens=10)


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


@pytest.fixture()
def core(lm) -> EngineCore:
    core = EngineCore(lm, timezone="UTC")
    core.set_context("a", [make_pair(i, T0 + 2 * i) for i in range(3)], 1)
    core.set_context("b", [make_pair(20 + i, T0 + 90 + 2 * i, size=(480, 640)) for i in range(2)], 1)
    return core


def run_batch(core: EngineCore, decoder: BatchDecoder, requests, params=GREEDY, cancel_after=None):
    """Every request through the engine's own step (EngineLoop) until all have ended; returns {key: Outcome}."""
    loop = EngineLoop(core, decoder, Scheduler(max_queued=100))
    jobs = []
    for key, camera, question in requests:
        seen: list[str] = []
        job = AskJob(camera, question, params, time.perf_counter(), client=key)

        def on_text(text: str, seen=seen, job=job, key=key) -> None:
            seen.append(text)
            if cancel_after is not None and key in cancel_after and len(seen) >= cancel_after[key]:
                job.cancelled.set()

        job.on_text = on_text
        jobs.append(job)
    outcomes = answer_all(loop, jobs)
    return {requests[i][0]: outcome for i, outcome in outcomes.items()}


def test_batched_answers_equal_the_unbatched_path(core: EngineCore) -> None:
    requests = [("q1", "a", "What is here?"), ("q2", "b", "Anyone?"), ("q3", "a", "And the door?"),
                ("q4", "b", "Describe it."), ("q5", "a", "Colors?")]
    expected = {key: core.ask(cam, q, GREEDY).token_ids for key, cam, q in requests}
    decoder = BatchDecoder(core, slots=3, max_len=2048, use_graphs=False)  # fewer slots than requests: rows rotate
    outcomes = run_batch(core, decoder, requests)
    assert {k: o.answer.token_ids for k, o in outcomes.items()} == expected
    stats = decoder.stats()
    assert stats["mean_batch"] > 1.5 and stats["active_answers"] == 0 and stats["mode"] == "eager"


def test_prefix_copy_is_reused_by_a_slot_and_refreshed_after_a_new_batch(core: EngineCore) -> None:
    decoder = BatchDecoder(core, slots=2, max_len=2048, use_graphs=False)
    first = run_batch(core, decoder, [("x", "a", "first?")])["x"].answer.token_ids
    assert decoder.held_prefixes()[0] is not None
    again = run_batch(core, decoder, [("y", "a", "first?")])["y"].answer.token_ids
    assert again == first
    core.set_context("a", [make_pair(i, T0 + 2 * i) for i in range(4)], 2)  # a new frame batch
    fresh = run_batch(core, decoder, [("z", "a", "first?")])["z"].answer.token_ids
    assert fresh == core.ask("a", "first?", GREEDY).token_ids


def test_cancelling_one_answer_leaves_the_others_untouched(core: EngineCore) -> None:
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    requests = [("keep1", "a", "one?"), ("stop", "b", "two?"), ("keep2", "a", "three?")]
    expected = {key: core.ask(cam, q, params).token_ids for key, cam, q in requests}
    decoder = BatchDecoder(core, slots=4, max_len=2048, use_graphs=False)
    outcomes = run_batch(core, decoder, requests, params, cancel_after={"stop": 3})
    assert isinstance(outcomes["stop"].error, CancelledRequest)
    assert outcomes["keep1"].answer.token_ids == expected["keep1"]
    assert outcomes["keep2"].answer.token_ids == expected["keep2"]


def test_sampled_and_greedy_rows_share_a_batch(core: EngineCore) -> None:
    sampled = SamplingParams(max_new_tokens=8, temperature=0.9, top_k=40, seed=3, ignore_eos=True)
    decoder = BatchDecoder(core, slots=4, max_len=2048, use_graphs=False)
    reference = core.ask("a", "sample?", sampled).token_ids
    prepared = core.prepare("a", "sample?", 8)
    out = decoder.admit("s", prepared, sampled, None, lambda: False)
    prepared_g = core.prepare("b", "greedy?", 10)
    decoder.admit("g", prepared_g, GREEDY, None, lambda: False)
    outcomes = {}
    while decoder.active:
        for o in decoder.step():
            outcomes[o.key] = o
    assert out is None and outcomes["s"].answer.token_ids == reference
    assert outcomes["g"].answer.token_ids == core.ask("b", "greedy?", GREEDY).token_ids


def test_a_question_longer_than_a_slot_uses_the_unbatched_path(lm) -> None:
    async def scenario() -> None:
        core = EngineCore(lm, timezone="UTC")
        worker = EngineWorker(core, EngineOptions(slots=2, max_len=512, cuda_graphs=False))
        worker.start()
        try:
            worker.publish("big", [make_pair(i, T0 + 2 * i) for i in range(6)], 1)  # 720 visual tokens > 512
            answer = await worker.ask("big", "fits?", SamplingParams(max_new_tokens=4, ignore_eos=True))
            assert answer.metrics["visual_tokens"] == 720 and answer.metrics["output_tokens"] == 4
            assert worker.stats()["decoder"]["decode_steps"] == 0
        finally:
            worker.stop()

    asyncio.run(scenario())


def test_concurrent_questions_are_decoded_together_through_the_worker(lm) -> None:
    async def scenario() -> None:
        core = EngineCore(lm, timezone="UTC")
        worker = EngineWorker(core, EngineOptions(slots=4, max_len=2048, cuda_graphs=False))
        worker.start()
        try:
            worker.publish("a", [make_pair(i, T0 + 2 * i) for i in range(3)], 1)
            worker.publish("b", [make_pair(20 + i, T0 + 90 + 2 * i) for i in range(2)], 1)
            params = SamplingParams(max_new_tokens=16, ignore_eos=True)
            answers = await asyncio.gather(*(
                worker.ask("a" if i % 2 else "b", f"question {i}?", params, client=f"c{i}") for i in range(6)
            ))
            assert all(a.metrics["output_tokens"] == 16 for a in answers)
            decoder = worker.stats()["decoder"]
            assert decoder["mean_batch"] > 1.5  # rows really shared decode steps
        finally:
            worker.stop()
        assert answers[0].token_ids == core.ask("b", "question 0?", params).token_ids  # worker thread has ended

    asyncio.run(scenario())


def test_padded_question_prefill_equals_exact_prefill(core: EngineCore) -> None:
    """What the captured prefill graphs do on a GPU (pad the question to a bucket), checked eagerly."""
    import torch

    decoder = BatchDecoder(core, slots=2, max_len=2048, use_graphs=False)
    prepared = core.prepare("a", "Is the padding invisible?", 8)
    runner = decoder.runner
    results = []
    for slot, pad in ((0, None), (1, 128)):
        runner.cache.load(slot, *core.stacked_prefix("a"))
        logits, token = runner.prefill(slot, prepared.suffix, prepared.next_position, prepared.prefix_tokens, pad)
        results.append((logits, token))
    assert len(prepared.suffix) < 128
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    assert results[0][1] == results[1][1]
    # both slots then decode the same tokens: the padding's cache entries are masked, then overwritten
    write = prepared.prefix_tokens + len(prepared.suffix)
    position = prepared.next_position + len(prepared.suffix)
    runner.set_rows(2, {0: (results[0][1], position, write), 1: (results[1][1], position, write)})
    _, tokens = runner.decode(2, 6)
    assert [row[0] for row in tokens] == [row[1] for row in tokens]


def test_removing_a_camera_mid_answer_finishes_the_answer(lm) -> None:
    async def scenario() -> None:
        core = EngineCore(lm, timezone="UTC")
        worker = EngineWorker(core, EngineOptions(slots=2, max_len=2048, cuda_graphs=False))
        worker.start()
        try:
            worker.publish("gone", [make_pair(i, T0 + 2 * i) for i in range(2)], 1)
            got: list[str] = []
            task = asyncio.create_task(
                worker.ask("gone", "long?", SamplingParams(max_new_tokens=60, ignore_eos=True), got.append)
            )
            while not got:
                await asyncio.sleep(0.01)
            worker.remove_camera("gone")
            answer = await task
            assert answer.metrics["output_tokens"] == 60
            assert worker.alive
            worker.publish("next", [make_pair(9, T0)], 1)
            nxt = await worker.ask("next", "ok?", SamplingParams(max_new_tokens=2, ignore_eos=True))
            assert nxt.metrics["output_tokens"] == 2 and nxt.metrics["frames_in_context"] == 2
        finally:
            worker.stop()

    asyncio.run(scenario())


def test_warm_up_runs_every_path_and_leaves_no_trace(core: EngineCore) -> None:
    expected = core.ask("a", "What is here?", GREEDY).token_ids
    decoder = BatchDecoder(core, slots=2, max_len=2048, use_graphs=False)
    report = warm_up(core, decoder)
    assert report["prefix_updates"] == ["rebuild", "extend", "partial"]
    assert {"batched_answer", "unbatched_answer"} <= set(report) and report["seconds"] > 0
    assert WARM_UP_CAMERA not in core.cameras()
    assert decoder.held_prefixes() == [None, None] and not decoder.active and decoder.steps == 0
    assert run_batch(core, decoder, [("q", "a", "What is here?")])["q"].answer.token_ids == expected


def test_stop_strings_end_answers_alike_on_both_paths(core: EngineCore) -> None:
    """A stop string taken from the greedy answer: both paths end before it, with finish_reason stop, and the
    streamed pieces add up to the answer's text (none of the stop string was streamed)."""
    full = core.ask("a", "What is here?", SamplingParams(max_new_tokens=12, ignore_eos=True))
    assert len(full.text) >= 6
    stop = full.text[3:6]
    params = SamplingParams(max_new_tokens=12, ignore_eos=True, stop=(stop, "never-seen"))
    expected = full.text[: full.text.find(stop)]
    streamed: list[str] = []
    reference = core.ask("a", "What is here?", params, on_text=streamed.append)
    assert reference.text == "".join(streamed) == expected and reference.finish_reason == "stop"
    decoder = BatchDecoder(core, slots=2, max_len=2048, use_graphs=False)
    batched = run_batch(core, decoder, [("s", "a", "What is here?")], params=params)["s"].answer
    assert batched.text == expected and batched.token_ids == reference.token_ids
    assert batched.metrics["finish_reason"] == "stop"
