"""The event suite (tools/event_suite.py) through the real capture -> memory path: H.264 files played by the
daemon's CameraReader into a CameraMemory, as tools/bench_memory.py measures it.

The default run plays the quick subset (8 events of 2-30% of the frame lasting 2-4 s, on a quiet scene and
beside swaying foliage; exposure steps, foliage with a fan, a night-mode switch after light drift) at 2 fps
(same bits per keyframe as 5 fps), plus 15 minutes of distractor footage rendered straight into the memory.
The whole suite (35 events, 1-30%, 1-10 s, seven distractor clips, an hour of distractor footage) is slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_memory import long_distractors, rendered_frames, run_capture, score_frames, summarise
from event_suite import Outcome, suite


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Outcome], list[Outcome]]:
    events, distractors = suite(quick=True)
    played = [r["new"] for r in run_capture(events + distractors, tmp_path_factory.mktemp("suite"), legacy=False,
                                            fps=2)]
    return played[: len(events)], played[len(events):]


def test_events_are_recalled_at_their_moments(quick: tuple[list[Outcome], list[Outcome]]) -> None:
    events, _ = quick
    summary = summarise(events)
    assert summary["events_must"] == 8
    assert summary["recall_must"] >= 0.95, summary["missed_must"]
    assert summary["false_stars"] == 0
    for outcome in events:
        # one star per event, each at the event's moment, plus the scene's reference pair at the start
        assert [reason for _, reason in outcome.admissions] == ["reference"] + ["free_slot"] * len(outcome.clip.events)
        starts = sorted(t for t, reason in outcome.admissions if reason != "reference")
        for thing, t in zip(outcome.clip.events, starts):
            assert thing.start - 1.0 <= t < thing.end
        assert outcome.stats["stars_admitted"] == {"reference": 1, "free_slot": len(outcome.clip.events)}
        assert outcome.stats["star_times"][1:] == pytest.approx([1_800_000_000.0 + t for t in starts])


def test_distractors_make_no_stars(quick: tuple[list[Outcome], list[Outcome]]) -> None:
    _, distractors = quick
    summary = summarise(distractors)
    assert summary["false_stars"] == 0 and summary["admissions"] == 0
    assert [o.clip.name for o in distractors] == ["exposure", "foliage-fan", "night"]
    for outcome in distractors:
        assert outcome.stats["stars_admitted"] == {"reference": 1}


def test_an_exposure_step_is_not_a_star(quick: tuple[list[Outcome], list[Outcome]]) -> None:
    exposure = next(o for o in quick[1] if o.clip.name == "exposure")
    assert exposure.clip.seconds >= 96  # steps at 12 s intervals: gain x1.3, +15, x0.77, +30 grey levels, ...
    assert exposure.stats["stars_rejected"]["below_threshold"] >= 45
    assert len(exposure.stats["star_times"]) == 1  # the reference only


def test_distractor_footage_quarter_hour_makes_no_star() -> None:
    """15 minutes (rendered straight into the memory, JPEG-compressed): <= 1 false star per hour means none."""
    outcomes = [score_frames(c, rendered_frames(c), legacy=False)["new"] for c in long_distractors(15.0)]
    summary = summarise(outcomes)
    assert summary["hours"] == pytest.approx(0.25, abs=0.01)
    assert summary["false_stars"] == 0 and summary["admissions"] == 0


@pytest.mark.slow
def test_the_whole_suite(tmp_path: Path) -> None:
    events, distractors = suite(quick=False)
    played = [r["new"] for r in run_capture(events + distractors, tmp_path, legacy=False)]
    on_events, on_distractors = summarise(played[: len(events)]), summarise(played[len(events):])
    assert on_events["recall_must"] >= 0.95, on_events["missed_must"]
    assert on_events["false_stars"] == 0
    long = summarise([score_frames(c, rendered_frames(c), legacy=False)["new"] for c in long_distractors(60.0)])
    hours = on_distractors["hours"] + long["hours"]
    assert (on_distractors["false_stars"] + long["false_stars"]) / hours <= 1.0
