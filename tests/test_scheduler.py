"""The engine's policy (livewatch.engine.scheduling.scheduler) as plain code: no model, no threads."""

from __future__ import annotations

import pytest

from livewatch.engine.scheduling.scheduler import AskJob, Plan, Route, Scheduler, route
from livewatch.errors import ErrorCode, RequestError


def ask(camera: str = "a", client: str = "", question: str = "q") -> AskJob:
    return AskJob(camera=camera, question=question, params=None, received_at=0.0, client=client)  # type: ignore[arg-type]


def drain(s: Scheduler, free_slots: int = 1, decoding: bool = False) -> list[Plan]:
    plans = []
    while s.has_work():
        plans.append(s.plan(free_slots, decoding))
    return plans


def cams(plan: Plan) -> list[str]:
    return [camera for camera, _ in plan.encode]


def test_contexts_come_first_then_questions_then_encodes() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True, now=1.0)
    s.push_context("b", [], 1, eager=True, now=2.0)
    first, second = ask("a", "c1"), ask("b", "c2")
    s.push_ask(first)
    s.push_ask(second)
    plan = s.plan(free_slots=8, decoding=False)
    assert plan.contexts.keys() == {"a", "b"} and plan.admit == (first, second) and plan.encode == ()
    plan = s.plan(free_slots=8, decoding=True)  # answers are decoding: the encodes wait
    assert plan == Plan({}, (), ())
    plan = s.plan(free_slots=8, decoding=False)  # idle: both in one step, oldest first, with their stale times
    assert plan.encode == (("a", 1.0), ("b", 2.0)) and not s.has_work()


def test_encodes_are_batched_oldest_lag_first_within_the_batch_size() -> None:
    s = Scheduler(encode_batch=3)
    for i, camera in enumerate("edcba"):
        s.push_context(camera, [], 1, eager=True, now=float(i))
    s.push_context("e", [], 2, eager=True, now=9.0)  # a newer frame batch keeps e's place and its age
    assert cams(s.plan(1, False)) == ["e", "d", "c"]
    assert cams(s.plan(1, False)) == ["b", "a"] and not s.has_work()


def test_an_encode_over_the_step_budget_keeps_its_place_and_age() -> None:
    s = Scheduler(encode_batch=2)
    for i, camera in enumerate("abc"):
        s.push_context(camera, [], 1, eager=True, now=float(i))
    plan = s.plan(1, False)
    assert plan.encode == (("a", 0.0), ("b", 1.0))
    s.push_context("b", [], 2, eager=True, now=5.0)  # b's next batch arrives while the step runs
    s.requeue([("b", 1.0)])  # the step ran a only: b goes back to the front, older than its new context
    assert s.plan(1, False).encode == (("b", 1.0), ("c", 2.0))


def test_a_camera_removed_during_the_step_is_not_requeued() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True)
    s.plan(1, False)
    s.push_remove("a")
    s.requeue([("a", 0.0)])
    assert s.plan(1, False) == Plan({"a": None}, (), ()) and not s.has_work()


def test_no_camera_starves_when_the_gpu_falls_behind() -> None:
    """Every camera publishes every step, the engine encodes 2 per step: each is encoded every few steps,
    in turn, with equal waits (lag grows evenly, nothing piles up: one pending encode per camera)."""
    s = Scheduler(encode_batch=2)
    names = [f"cam{i}" for i in range(6)]
    served: dict[str, list[int]] = {n: [] for n in names}
    for step in range(30):
        for n in names:
            s.push_context(n, [], step, eager=True, now=float(step))
        assert len(s.encodes) == len(names)
        for camera in cams(s.plan(1, False)):
            served[camera].append(step)
    gaps = {n: {b - a for a, b in zip(steps, steps[1:])} for n, steps in served.items()}
    assert all(g == {3} for g in gaps.values()), gaps


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
    plan = s.plan(1, False)  # the step applies the newest context, then encodes from it
    assert plan.contexts["a"].version == 4 and cams(plan) == ["a"] and not s.has_work()
    s.push_context("a", [], 5, eager=False)  # lazy mode: no encode queued
    assert s.plan(1, False).contexts["a"].version == 5 and not s.has_work()


def test_removal_supersedes_context_and_encode() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True)
    s.push_remove("a")
    assert s.plan(1, False) == Plan({"a": None}, (), ()) and not s.has_work()


def test_encodes_are_not_starved_by_answers_streaming_back_to_back() -> None:
    s = Scheduler(max_encode_wait=3)
    s.push_context("a", [], 1, eager=True)
    s.plan(1, decoding=True)  # applies the context
    waited = [cams(s.plan(1, decoding=True)) for _ in range(3)]
    assert waited == [[], [], ["a"]]  # after max_encode_wait decode steps it runs between two
    assert s.encode_waited == 0
    s.push_context("b", [], 1, eager=True)
    s.plan(1, decoding=True)
    s.push_ask(ask())
    assert cams(s.plan(1, decoding=False)) == []  # an admission is work too: questions first
    assert cams(s.plan(1, decoding=False)) == ["b"]  # idle: at once


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


def test_encodes_gather_for_a_while_then_run_together() -> None:
    """Cameras publish at their own moments: the first pending encode waits encode_gather_s so that the cameras
    going stale meanwhile share its step; a full batch runs at once; questions never wait for it."""
    s = Scheduler(encode_batch=3, encode_gather_s=0.25)
    s.push_context("a", [], 1, eager=True, now=10.0)
    assert s.plan(1, False, now=10.0).encode == () and s.encode_due(10.0) == 10.25
    s.push_context("b", [], 1, eager=True, now=10.1)
    assert s.plan(1, False, now=10.1).encode == ()  # b's context applied; its encode gathers with a's
    assert not s.has_work(now=10.2)  # nothing due yet: the worker sleeps until 10.25
    s.push_ask(ask("b"))
    plan = s.plan(1, False, now=10.2)
    assert plan.admit and plan.encode == ()  # the question runs at once (its own camera's encode with it)
    assert cams(s.plan(1, False, now=10.25)) == ["a", "b"]
    for i, camera in enumerate("cde"):
        s.push_context(camera, [], 1, eager=True, now=20.0 + i / 100)
    assert cams(s.plan(1, False, now=20.03)) == ["c", "d", "e"]  # a full batch does not wait


# -- which watches a step evaluates -------------------------------------------------------------------------------

def test_watch_rounds_bound_each_step_take_turns_and_carry_over_versions() -> None:
    from livewatch.engine.scheduling.scheduler import WatchRounds

    rounds = WatchRounds(batch=3)
    watches = {"door": {f"d{i}": "c" for i in range(4)}, "yard": {"y0": "c"}}
    versions = {"door": 1, "yard": 1}

    def encoded(camera: str):
        return (versions[camera], (versions[camera] * 10, 0.0)) if camera in versions else None

    first = rounds.due(watches, encoded)
    assert [(d.camera, d.watch) for d in first] == [("door", "d0"), ("yard", "y0"), ("door", "d1")]
    assert first[0].end == (10, 0.0) and first[0].version == 1
    rounds.evaluated(first, watches)
    assert rounds.pending  # d2, d3 of version 1 wait
    second = rounds.due(watches, encoded)
    assert [(d.camera, d.watch) for d in second] == [("door", "d2"), ("door", "d3")]
    rounds.evaluated(second, watches)
    assert not rounds.pending and rounds.due(watches, encoded) == []  # every watch saw version 1

    versions["door"] = 2  # a new version: the longest unevaluated first (d0, d1 were evaluated before d2, d3)
    third = rounds.due(watches, encoded)
    assert [d.watch for d in third] == ["d0", "d1", "d2"]
    versions["door"] = 3  # moved on before d3 saw version 2: version 3 starts with d3, which waited longest
    rounds.evaluated(third, watches)
    assert [d.watch for d in rounds.due(watches, encoded)][:1] == ["d3"]


def test_watch_rounds_evaluate_a_changed_set_at_once_and_skip_a_failed_version() -> None:
    from livewatch.engine.scheduling.scheduler import WatchRounds

    rounds = WatchRounds(batch=8)
    watches = {"door": {"a": "c"}}

    def encoded(camera: str):
        return (1, (1, 0.0))

    rounds.evaluated(rounds.due(watches, encoded), watches)
    assert rounds.due(watches, encoded) == []
    changed = {"door": {"a": "c", "b": "c2"}}
    assert [d.watch for d in rounds.due(changed, encoded)] == ["a", "b"]  # same version, a new set: at once
    rounds.failed()  # a model failure: version 1 goes unevaluated, nothing is pending
    assert rounds.due(changed, encoded) == [] and not rounds.pending
    assert rounds.due({}, encoded) == [] and rounds.versions == {}  # unwatched cameras are forgotten
