"""Watch evaluation (livewatch.engine.model.watcheval): P(yes) read from the first answer position of a yes/no question on
the camera's shared prefix equals the same prompt run from scratch, and many watches over several cameras in one
forward equal each alone (tiny model, float32, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine_helpers import T0, make_pair, reference_first_logits
from livewatch.engine.core import EngineCore
from livewatch.engine.model.loading import load_model
from livewatch.engine.prompting.prompt import watch_question
from livewatch.engine.model.watcheval import WatchEvaluator

CONDITIONS = ["a person is standing at the door", "the garage door is open", "a package lies on the step"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


@pytest.fixture(scope="module")
def setup(lm):
    core = EngineCore(lm, timezone="UTC")
    contexts = {
        "door": [make_pair(i, T0 + 2 * i) for i in range(3)],
        "garage": [make_pair(10 + i, T0 + 50 + 2 * i, size=(480, 640)) for i in range(2)],
    }
    for camera, pairs in contexts.items():
        core.set_context(camera, pairs, 1)
    core.encode_many(list(contexts))
    return core, contexts, WatchEvaluator(lm)


def p_yes(evaluator: WatchEvaluator, logits: torch.Tensor) -> float:
    picked = logits[evaluator.yes_ids + evaluator.no_ids].double()
    return float(torch.softmax(picked, 0)[: len(evaluator.yes_ids)].sum())


def test_one_watch_equals_the_prompt_run_from_scratch(setup) -> None:
    core, contexts, evaluator = setup
    for camera, pairs in contexts.items():
        (p,) = evaluator.probabilities([core.watch_query(camera, CONDITIONS[0])])
        expected = p_yes(evaluator, reference_first_logits(core, camera, pairs, watch_question(CONDITIONS[0]), bare=True))
        assert 0.0 < p < 1.0 and abs(p - expected) < 1e-4, (camera, p, expected)


def test_watches_batched_over_cameras_equal_each_alone(setup) -> None:
    core, contexts, evaluator = setup
    queries = [core.watch_query(camera, c) for c in CONDITIONS for camera in contexts]  # interleaved cameras
    queries.append(core.watch_query("door", "x"))  # a much shorter suffix: padding
    alone = [evaluator.probabilities([q])[0] for q in queries]
    forwards = evaluator.forwards
    together = evaluator.probabilities(queries)
    assert evaluator.forwards == forwards + 1  # both cameras' watches in one forward
    assert max(abs(a - b) for a, b in zip(alone, together)) < 1e-5
    assert len({round(a, 6) for a in alone}) > 2, "the conditions must change the answer, or this proves little"
    split = WatchEvaluator(core.lm, max_cells=1)  # one watch per forward
    assert max(abs(a - b) for a, b in zip(alone, split.probabilities(queries))) < 1e-5
    assert split.forwards == len(queries)


def test_yes_and_no_are_single_tokens(setup) -> None:
    _, _, evaluator = setup
    tok = evaluator.lm.tokenizer
    assert {tok.decode([i]).strip().lower() for i in evaluator.yes_ids} == {"yes"}
    assert {tok.decode([i]).strip().lower() for i in evaluator.no_ids} == {"no"}


def test_the_engine_step_evaluates_watches_once_per_context_version(lm) -> None:
    from livewatch.engine.batch import BatchDecoder
    from livewatch.engine.scheduling.loop import EngineLoop

    core = EngineCore(lm, timezone="UTC")
    loop = EngineLoop(core, BatchDecoder(core, 2, 2048, use_graphs=False))
    pairs = [make_pair(i, T0 + 2 * i) for i in range(2)]
    loop.scheduler.set_watches("door", {"person": CONDITIONS[0], "parcel": CONDITIONS[2]})
    loop.scheduler.push_context("door", pairs, 1, eager=False)  # lazy mode: a watched camera is encoded anyway

    def run() -> list:
        seen = []
        while loop.has_work():
            seen += loop.step().watches
        return seen

    first = run()
    assert sorted(r.watch for r in first) == ["parcel", "person"] and {r.version for r in first} == {1}
    assert first[0].frame_id == pairs[-1].id and first[0].frame_time == pairs[-1].end_time
    assert run() == [] and loop.step().watches == []  # nothing new: no evaluation
    loop.scheduler.push_context("door", pairs + [make_pair(5, T0 + 10)], 2, eager=False)
    assert {(r.watch, r.version) for r in run()} == {("person", 2), ("parcel", 2)}
    loop.scheduler.set_watches("door", {"person": CONDITIONS[0]})  # a changed set is evaluated at once
    assert [(r.watch, r.version) for r in loop.step().watches] == [("person", 2)]
    loop.scheduler.set_watches("door", {})
    loop.scheduler.push_context("door", pairs, 3, eager=False)
    assert run() == [] and core.needs_encode("door")  # unwatched and lazy: not encoded, not evaluated


def test_many_watches_are_evaluated_a_bounded_batch_a_step_round_robin_across_cameras(lm) -> None:
    """A step evaluates at most ``watch_batch`` watches, so a question waits for one bounded forward; the rest run
    in the next steps (the loop says it has work), cameras taking turns; a camera whose context moves on before
    all its watches were evaluated carries on with the ones that waited longest."""
    from livewatch.engine.batch import BatchDecoder
    from livewatch.engine.scheduling.loop import EngineLoop

    core = EngineCore(lm, timezone="UTC")
    loop = EngineLoop(core, BatchDecoder(core, 2, 2048, use_graphs=False), watch_batch=3)
    door = {f"d{i}": f"{CONDITIONS[i % 3]} ({i})" for i in range(5)}
    loop.scheduler.set_watches("door", door)
    loop.scheduler.set_watches("yard", {"y0": CONDITIONS[0]})
    loop.scheduler.push_context("door", [make_pair(i, T0 + 2 * i) for i in range(2)], 1, eager=False)
    loop.scheduler.push_context("yard", [make_pair(20 + i, T0 + 2 * i) for i in range(2)], 1, eager=False)
    steps = []
    while loop.has_work():
        watches = loop.step().watches
        if watches:
            steps.append([(r.camera, r.watch) for r in watches])
    assert all(len(s) <= 3 for s in steps)
    assert steps[0][:2] == [("door", "d0"), ("yard", "y0")]  # cameras take turns
    assert sorted(w for s in steps for _, w in s) == sorted([*door, "y0"])  # each once for version 1
    # version 2 arrives after one chunk of it: the rest of version 2 goes on with the watches not yet evaluated
    loop.scheduler.push_context("door", [make_pair(i, T0 + 2 * i) for i in range(3)], 2, eager=False)
    first = [r.watch for r in loop.step().watches]
    assert len(first) == 3 and loop.has_work()
    loop.scheduler.push_context("door", [make_pair(i, T0 + 2 * i) for i in range(4)], 3, eager=False)
    second = []
    while loop.has_work():
        second += [r.watch for r in loop.step().watches if r.version == 3]
    assert second[:2] == [w for w in door if w not in first]  # those that waited go first
    assert sorted(second) == sorted(door)
