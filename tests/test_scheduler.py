"""The engine's policy (livewatch.engine.scheduler) as plain code: no model, no threads."""

from __future__ import annotations

import pytest

from livewatch.engine.scheduler import AskJob, Plan, Route, Scheduler, route
from livewatch.errors import ErrorCode, RequestError


def ask(camera: str = "a", client: str = "", question: str = "q") -> AskJob:
    return AskJob(camera=camera, question=question, params=None, received_at=0.0, client=client)  # type: ignore[arg-type]


def drain(s: Scheduler, free_slots: int = 1, decoding: bool = False) -> list[Plan]:
    plans = []
    while s.has_work():
        plans.append(s.plan(free_slots, decoding))
    return plans


def test_contexts_come_first_then_questions_then_encodes() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True)
    s.push_context("b", [], 1, eager=True)
    first, second = ask("a", "c1"), ask("b", "c2")
    s.push_ask(first)
    s.push_ask(second)
    plan = s.plan(free_slots=8, decoding=False)
    assert plan.contexts.keys() == {"a", "b"} and plan.admit == (first, second) and plan.encode is None
    plan = s.plan(free_slots=8, decoding=True)  # answers are decoding: the encodes wait
    assert plan == Plan({}, (), None)
    assert [p.encode for p in drain(s)] == ["a", "b"] and not s.has_work()


def test_admissions_fill_free_slots_only() -> None:
    s = Scheduler()
    jobs = [ask(client=f"c{i}") for i in range(5)]
    for job in jobs:
        s.push_ask(job)
    assert s.plan(free_slots=2, decoding=True).admit == tuple(jobs[:2])
    assert s.plan(free_slots=0, decoding=True).admit == ()
    assert s.plan(free_slots=8, decoding=True).admit == tuple(jobs[2:])


def test_round_robin_across_clients() -> None:
    s = Scheduler(max_queued=100)
    for n in range(5):
        s.push_ask(ask(client="greedy", question=f"greedy{n}"))
    s.push_ask(ask(client="polite", question="polite0"))
    s.push_ask(ask(client="other", question="other0"))
    order = [job.question for plan in drain(s) for job in plan.admit]
    assert order == ["greedy0", "polite0", "other0", "greedy1", "greedy2", "greedy3", "greedy4"]
    assert s.queued == 0


def test_newest_context_wins_and_encodes_coalesce() -> None:
    s = Scheduler()
    for version in range(5):
        s.push_context("a", [], version, eager=True)
    plan = s.plan(1, False)
    assert plan.contexts["a"].version == 4 and plan.encode is None  # encoded from the context applied first
    assert s.plan(1, False).encode == "a" and not s.has_work()
    s.push_context("a", [], 5, eager=False)  # lazy mode: no encode queued
    assert s.plan(1, False).contexts["a"].version == 5 and not s.has_work()


def test_removal_supersedes_context_and_encode() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True)
    s.push_remove("a")
    assert s.plan(1, False) == Plan({"a": None}, (), None) and not s.has_work()


def test_encodes_are_not_starved_by_answers_streaming_back_to_back() -> None:
    s = Scheduler(max_encode_wait=3)
    s.push_context("a", [], 1, eager=True)
    s.plan(1, decoding=True)  # applies the context
    waited = [s.plan(1, decoding=True).encode for _ in range(4)]
    assert waited == [None, None, None, "a"]  # after max_encode_wait decode steps it runs between two
    assert s.encode_waited == 0
    s.push_context("b", [], 1, eager=True)
    s.plan(1, decoding=True)
    s.push_ask(ask())
    assert s.plan(1, decoding=False).encode is None  # an admission is work too: questions first
    assert s.plan(1, decoding=False).encode == "b"  # idle: at once


def test_full_queue_answers_busy() -> None:
    s = Scheduler(max_queued=2)
    s.push_ask(ask())
    s.push_ask(ask())
    with pytest.raises(RequestError) as err:
        s.push_ask(ask())
    assert err.value.code is ErrorCode.BUSY
    assert len(s.drain_asks()) == 2 and not s.has_work()


@pytest.mark.parametrize("prefix,question,answer,slot,expected", [
    (2400, 40, 256, 4096, Route.BATCHED),
    (4000, 40, 56, 4096, Route.BATCHED),  # exactly full
    (4000, 40, 57, 4096, Route.UNBATCHED),
    (720, 10, 4, 512, Route.UNBATCHED),
])
def test_questions_that_do_not_fit_a_slot_take_the_unbatched_path(prefix, question, answer, slot, expected) -> None:
    assert route(prefix, question, answer, slot) is expected
