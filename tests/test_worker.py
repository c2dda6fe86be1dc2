"""The engine worker thread with the tiny model: hand-off to asyncio, modes, cancellation, failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine_helpers import T0, make_pair
from livewatch.engine.core import EngineCore
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import load_model
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.errors import CancelledRequest, ErrorCode, RequestError


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


def make_worker(lm, mode: str, **kw) -> EngineWorker:
    worker = EngineWorker(EngineCore(lm, timezone="UTC"), EngineOptions(encode_mode=mode, **kw))
    worker.start()
    return worker


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_lazy_mode_encodes_on_the_first_question_and_streams(lm) -> None:
    async def scenario() -> None:
        worker = make_worker(lm, "lazy")
        try:
            worker.publish("cam", [make_pair(i, T0 + 2 * i) for i in range(3)], 1)
            pieces: list[str] = []
            answer = await worker.ask("cam", "What?", SamplingParams(max_new_tokens=8, ignore_eos=True), pieces.append)
            assert "".join(pieces) == answer.text
            assert answer.metrics["cache_reused"] is False and answer.metrics["encode_ms"] > 0
            again = await worker.ask("cam", "And?", SamplingParams(max_new_tokens=4))
            assert again.metrics["cache_reused"] is True
            stats = worker.stats()
            assert stats["cameras"]["cam"]["encode_count"] == 1 and stats["alive"]
        finally:
            assert worker.stop()

    asyncio.run(scenario())


def test_eager_mode_has_the_prefix_ready_before_the_question(lm) -> None:
    async def scenario() -> None:
        worker = make_worker(lm, "eager")
        try:
            worker.publish("cam", [make_pair(i, T0 + 2 * i) for i in range(3)], 1)
            await wait_for(lambda: worker.stats()["cameras"].get("cam", {}).get("cache_valid"))
            answer = await worker.ask("cam", "What?", SamplingParams(max_new_tokens=4))
            assert answer.metrics["cache_reused"] is True and answer.metrics["encode_ms"] == 0
        finally:
            worker.stop()

    asyncio.run(scenario())


def test_cancelling_the_awaiting_task_stops_generation(lm) -> None:
    async def scenario() -> None:
        worker = make_worker(lm, "lazy")
        try:
            worker.publish("cam", [make_pair(0, T0)], 1)
            got: list[str] = []
            task = asyncio.create_task(
                worker.ask("cam", "Long?", SamplingParams(max_new_tokens=1000, ignore_eos=True), got.append)
            )
            await wait_for(lambda: len(got) >= 2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_for(lambda: worker.stats()["busy_s"] == 0.0 and worker.stats()["queued_questions"] == 0)
            assert worker.stats()["jobs_done"] == 0  # the generation stopped early, it did not finish
            answer = await worker.ask("cam", "Short?", SamplingParams(max_new_tokens=2, ignore_eos=True))
            assert answer.metrics["output_tokens"] == 2 and worker.stats()["jobs_done"] == 1
        finally:
            worker.stop()

    asyncio.run(scenario())


def test_errors_reach_the_caller_and_the_worker_keeps_serving(lm) -> None:
    async def scenario() -> None:
        worker = make_worker(lm, "lazy")
        try:
            with pytest.raises(RequestError) as err:
                await worker.ask("ghost", "?")
            assert err.value.code is ErrorCode.UNKNOWN_CAMERA
            worker.publish("cam", [make_pair(0, T0)], 1)
            assert (await worker.ask("cam", "?", SamplingParams(max_new_tokens=2))).metrics["frames_in_context"] == 2
            worker.remove_camera("cam")
            with pytest.raises(RequestError):
                await worker.ask("cam", "?")
        finally:
            worker.stop()

    asyncio.run(scenario())


def test_stop_fails_waiting_questions(lm) -> None:
    async def scenario() -> None:
        worker = make_worker(lm, "lazy", max_queued=8)
        worker.publish("cam", [make_pair(0, T0)], 1)
        streaming = asyncio.Event()
        tasks = [
            asyncio.create_task(worker.ask("cam", "?", SamplingParams(max_new_tokens=1000, ignore_eos=True),
                                           lambda _: streaming.set()))
            for _ in range(4)
        ]
        await asyncio.wait_for(streaming.wait(), 60)  # every question submitted, one generating: stop cuts them all
        assert await asyncio.to_thread(worker.stop)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, CancelledRequest) for r in results)
        with pytest.raises(CancelledRequest):
            await worker.ask("cam", "?")

    asyncio.run(scenario())
