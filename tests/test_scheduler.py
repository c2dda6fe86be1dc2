from __future__ import annotations

import threading

import pytest

from livewatch.engine.scheduler import AskJob, Scheduler
from livewatch.errors import RequestError


def ask(camera: str = "a") -> AskJob:
    return AskJob(camera=camera, question="q", params=None, received_at=0.0, cancelled=threading.Event())


def test_questions_outrank_encodes_and_keep_their_order() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True)
    s.push_context("b", [], 1, eager=True)
    first, second = ask("a"), ask("b")
    s.push_ask(first)
    s.push_ask(second)
    assert s.take_contexts().keys() == {"a", "b"}
    assert s.next_ask() is first
    assert s.next_ask() is second
    assert s.next_ask() is None
    assert s.next_encode() == "a"
    assert s.next_encode() == "b"
    assert s.next_encode() is None and not s.has_work()


def test_newest_context_wins_and_encodes_coalesce() -> None:
    s = Scheduler()
    for version in range(5):
        s.push_context("a", [], version, eager=True)
    pending = s.take_contexts()
    assert pending["a"].version == 4
    assert list(s.encodes) == ["a"]
    s.push_context("a", [], 5, eager=False)
    assert s.take_contexts()["a"].version == 5


def test_removal_supersedes_context_and_encode() -> None:
    s = Scheduler()
    s.push_context("a", [], 1, eager=True)
    s.push_remove("a")
    assert s.take_contexts() == {"a": None}
    assert s.next_ask() is None and s.next_encode() is None


def test_full_queue_answers_busy() -> None:
    s = Scheduler(max_queued=2)
    s.push_ask(ask())
    s.push_ask(ask())
    with pytest.raises(RequestError) as err:
        s.push_ask(ask())
    assert err.value.code == "busy"
    assert len(s.drain_asks()) == 2 and not s.has_work()
