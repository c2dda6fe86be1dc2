"""The watch trigger policy (livewatch.watches.policy): generated evaluation sequences and explicit cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import assume, HealthCheck, given, settings
from hypothesis import strategies as st

from livewatch.watches.events import WatchSpec
from livewatch.watches.policy import Transition, Trigger, check_spec, in_active_hours

T0 = 1_700_000_000.0


def spec(**kw: object) -> WatchSpec:
    base: dict[str, object] = dict(name="door", camera="cam0", condition="a person is at the door",
                                   on=0.7, off=0.4, confirm=2, cooldown_s=60.0, active_hours=None)
    base.update(kw)
    return WatchSpec(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Step:
    now: float
    p: float
    hour: int


def run(trigger: Trigger, steps: list[Step]) -> list[Transition | None]:
    return [trigger.update(s.now, s.p, s.hour) for s in steps]


# ---------------------------------------------------------------------------------------------- generated cases

probs = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def specs(draw: st.DrawFn) -> WatchSpec:
    a, b = draw(probs), draw(probs)
    if a == b:
        a, b = (a, 1.0) if a < 1.0 else (0.0, 1.0)
    off, on = min(a, b), max(a, b)
    hours = draw(st.none() | st.tuples(st.integers(0, 23), st.integers(0, 24)).filter(lambda h: h[0] != h[1]))
    return spec(on=on, off=off, confirm=draw(st.integers(1, 5)),
                cooldown_s=draw(st.sampled_from([0.0, 5.0, 10.0, 60.0]) | st.floats(0.0, 300.0)), active_hours=hours)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[WatchSpec, list[Step]]:
    s = draw(specs())
    # thresholds themselves and a band value are drawn often, so the boundaries and the band get exercised
    band = (s.off + s.on) / 2
    p_values = st.sampled_from([s.off, s.on, band, 0.0, 1.0]) | probs
    # runs of equal evaluations (a condition persists for a while), so confirmations, cooldowns and hours interact
    raw = draw(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 2.0, 2.0, 30.0]) | st.floats(0.0, 400.0),
                                  p_values, st.sampled_from([0, 0, 0, 0, 1, 7]), st.integers(1, 10)), max_size=20))
    now, hour, steps = T0, draw(st.integers(0, 23)), []
    for dt, p, dh, repeat in raw:
        hour = (hour + dh) % 24
        for _ in range(repeat):
            now += dt
            steps.append(Step(now, p, hour))
    return s, steps


def active(s: WatchSpec, step: Step) -> bool:
    return in_active_hours(s.active_hours, step.hour)


def run_before(steps: list[Step], i: int, pred: object) -> int:
    """How many consecutive steps ending at index i satisfy pred."""
    n = 0
    while i - n >= 0 and pred(steps[i - n]):  # type: ignore[operator]
        n += 1
    return n


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_generated_sequences_obey_the_policy(case: tuple[WatchSpec, list[Step]]) -> None:
    s, steps = case
    trigger = Trigger(s)
    out: list[Transition | None] = []
    high = lambda st_: active(s, st_) and st_.p >= s.on  # noqa: E731
    low = lambda st_: active(s, st_) and st_.p <= s.off  # noqa: E731
    state, last_start = "off", None
    kinds = []
    for i, step in enumerate(steps):
        tr = trigger.update(step.now, step.p, step.hour)
        out.append(tr)
        if tr is not None:
            kinds.append(tr.kind)
            assert (tr.probability, tr.at) == (step.p, step.now)
            # no state change from an evaluation strictly inside the band (inside active hours)
            assert not (active(s, step) and s.off < step.p < s.on), (i, tr)
        if state == "off":
            confirmed = run_before(steps, i, high) >= s.confirm
            cooled = last_start is None or step.now - last_start >= s.cooldown_s
            if tr is not None:
                # started only after `confirm` consecutive high evaluations (in active hours), outside the cooldown
                assert tr.kind == "started", (i, tr)
                assert confirmed and cooled, (i, tr)
                last_start, state = step.now, "on"
            else:
                # ... and as soon as both hold (not a step later)
                assert not (confirmed and cooled), i
        else:
            # since the start, counted lows only (the start itself is high, so a run never reaches before it)
            must_end = not active(s, step) or run_before(steps, i, low) >= s.confirm
            assert (tr is not None) == must_end, (i, tr)
            if tr is not None:
                assert tr.kind == "ended", (i, tr)
                state = "off"
        assert trigger.state == state
    # events strictly alternate, starting with "started"
    assert kinds == ["started", "ended"] * (len(kinds) // 2) + ["started"] * (len(kinds) % 2)
    starts = [tr.at for tr in out if tr is not None and tr.kind == "started"]
    assert all(b - a >= s.cooldown_s for a, b in zip(starts, starts[1:]))
    assert trigger.evaluations == len(steps)
    assert trigger.events == len(kinds)
    assert trigger.last_probability == (steps[-1].p if steps else None)


@SETTINGS
@given(specs(), st.lists(st.floats(0.0, 1.0, allow_nan=False, exclude_min=True, exclude_max=True), max_size=40),
       st.lists(st.floats(0.0, 120.0), min_size=40, max_size=40))
def test_band_after_on_never_ends(s: WatchSpec, fractions: list[float], dts: list[float]) -> None:
    s = spec(on=s.on, off=s.off, confirm=s.confirm, cooldown_s=s.cooldown_s, active_hours=None)
    trigger = Trigger(s)
    now = T0
    for _ in range(s.confirm):
        now += 2.0
        last = trigger.update(now, s.on, 12)
    assert last == Transition("started", s.on, now)
    for frac, dt in zip(fractions, dts):
        p = s.off + frac * (s.on - s.off)
        if not s.off < p < s.on:  # rounding at tiny bands
            continue
        now += dt
        assert trigger.update(now, p, 12) is None
        assert trigger.state == "on"


@SETTINGS
@given(specs(), st.floats(0.5, 60.0), st.integers(0, 3), st.integers(0, 200))
def test_restart_fires_at_the_first_confirmed_evaluation_after_the_cooldown(
        s: WatchSpec, dt: float, band_steps: int, high_steps: int) -> None:
    # start, end, a few band values, then highs every dt: the restart is the first high that is both confirmed
    # and at least cooldown_s after the start, never later, never sooner
    s = spec(on=s.on, off=s.off, confirm=s.confirm, cooldown_s=s.cooldown_s, active_hours=None)
    band = (s.off + s.on) / 2
    assume(s.off < band < s.on or band_steps == 0)  # adjacent floats leave no band value in between
    ps = [s.on] * s.confirm + [s.off] * s.confirm + [band] * band_steps + [s.on] * high_steps
    steps = [Step(T0 + i * dt, p, 12) for i, p in enumerate(ps)]
    out = run(Trigger(s), steps)
    started = [i for i, tr in enumerate(out) if tr is not None and tr.kind == "started"]
    first = s.confirm - 1
    assert started[0] == first
    highs_from = 2 * s.confirm + band_steps
    due = [i for i in range(highs_from + s.confirm - 1, len(steps)) if steps[i].now - steps[first].now >= s.cooldown_s]
    assert started[1:] == due[:1]


# ---------------------------------------------------------------------------------------------- explicit cases


def test_confirm_two_fires_on_the_second_high_evaluation() -> None:
    t = Trigger(spec(confirm=2))
    assert t.update(T0, 0.9, 12) is None
    assert t.state == "off"
    assert t.update(T0 + 2, 0.8, 12) == Transition("started", 0.8, T0 + 2)
    assert t.state == "on"
    assert t.update(T0 + 4, 0.95, 12) is None  # already on: no second start


def test_confirm_one_fires_at_once_and_on_threshold_counts() -> None:
    t = Trigger(spec(confirm=1, on=0.7))
    assert t.update(T0, 0.7, 12) == Transition("started", 0.7, T0)


def test_dip_into_band_between_highs_resets_the_count() -> None:
    t = Trigger(spec(confirm=2))
    assert run(t, [Step(T0, 0.9, 12), Step(T0 + 2, 0.5, 12), Step(T0 + 4, 0.9, 12)]) == [None, None, None]
    assert t.state == "off"
    assert t.update(T0 + 6, 0.9, 12) is not None


def test_end_needs_confirm_lows_and_band_resets_that_count() -> None:
    t = Trigger(spec(confirm=2))
    run(t, [Step(T0, 0.9, 12), Step(T0 + 2, 0.9, 12)])
    assert t.state == "on"
    assert run(t, [Step(T0 + 4, 0.4, 12), Step(T0 + 6, 0.5, 12), Step(T0 + 8, 0.1, 12)]) == [None, None, None]
    assert t.state == "on"
    assert t.update(T0 + 10, 0.0, 12) == Transition("ended", 0.0, T0 + 10)
    assert t.state == "off"


def test_cooldown_defers_a_restart_until_it_passes() -> None:
    t = Trigger(spec(confirm=2, cooldown_s=60.0))
    run(t, [Step(T0, 0.9, 12), Step(T0 + 2, 0.9, 12)])  # started at T0 + 2
    run(t, [Step(T0 + 4, 0.1, 12), Step(T0 + 6, 0.1, 12)])  # ended
    assert t.state == "off"
    # confirmed again well inside the cooldown: no event, stays off, keeps counting
    assert run(t, [Step(T0 + 8, 0.9, 12), Step(T0 + 61.9, 0.9, 12)]) == [None] * 2
    assert t.state == "off"
    # first evaluation at the cooldown's end, still high: starts at once (the count was kept, not restarted)
    assert t.update(T0 + 62, 0.9, 12) == Transition("started", 0.9, T0 + 62)
    assert t.events == 3


def test_cooldown_dip_meanwhile_needs_a_fresh_confirmation() -> None:
    t = Trigger(spec(confirm=2, cooldown_s=60.0))
    run(t, [Step(T0, 0.9, 12), Step(T0 + 2, 0.9, 12), Step(T0 + 4, 0.1, 12), Step(T0 + 6, 0.1, 12)])
    assert run(t, [Step(T0 + 8, 0.9, 12), Step(T0 + 10, 0.9, 12), Step(T0 + 50, 0.5, 12),
                   Step(T0 + 70, 0.9, 12)]) == [None] * 4
    assert t.update(T0 + 72, 0.9, 12) == Transition("started", 0.9, T0 + 72)


@pytest.mark.parametrize("hours, inside, outside", [((9, 17), 9, 17), ((9, 17), 16, 8), ((22, 6), 23, 6),
                                                    ((22, 6), 0, 21), ((22, 6), 5, 12), ((0, 24), 23, None)])
def test_active_hours_block_starts_and_end_an_on_state(
        hours: tuple[int, int], inside: int, outside: int | None) -> None:
    assert in_active_hours(hours, inside)
    if outside is None:  # (0, 24): always active
        assert all(in_active_hours(hours, h) for h in range(24))
        return
    assert not in_active_hours(hours, outside)
    t = Trigger(spec(confirm=2, cooldown_s=0.0, active_hours=hours))
    # outside: highs never start, and do not count toward a start once inside
    assert run(t, [Step(T0 + i, 0.99, outside) for i in range(5)]) == [None] * 5
    assert t.update(T0 + 5, 0.99, inside) is None
    assert t.update(T0 + 6, 0.99, inside) == Transition("started", 0.99, T0 + 6)
    # leaving the active period ends an "on" watch at the first evaluation outside, whatever its probability
    assert t.update(T0 + 7, 0.99, outside) == Transition("ended", 0.99, T0 + 7)
    assert t.state == "off"


def test_reset_forgets_state_but_not_the_cooldown() -> None:
    t = Trigger(spec(confirm=2))
    assert t.update(T0, 0.9, 12) is None
    t.reset()  # the count goes too
    assert t.update(T0 + 2, 0.9, 12) is None
    assert t.update(T0 + 4, 0.9, 12) is not None
    t = Trigger(spec(confirm=1, cooldown_s=60.0))
    assert t.update(T0, 0.9, 12) is not None
    t.reset()
    assert t.state == "off"
    assert t.update(T0 + 2, 0.9, 12) is None  # inside the cooldown
    assert t.update(T0 + 60, 0.9, 12) == Transition("started", 0.9, T0 + 60)
    assert (t.evaluations, t.events, t.last_probability) == (3, 2, 0.9)


@pytest.mark.parametrize("kw", [dict(on=0.4, off=0.4), dict(on=0.3, off=0.5), dict(on=1.1), dict(off=-0.1),
                                dict(confirm=0), dict(cooldown_s=-1.0), dict(active_hours=(5, 5)),
                                dict(active_hours=(24, 3)), dict(active_hours=(3, 25))])
def test_bad_specs_are_rejected(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        check_spec(spec(**kw))
    with pytest.raises(ValueError):
        Trigger(spec(**kw))


def test_bad_local_hour_is_rejected() -> None:
    with pytest.raises(ValueError):
        Trigger(spec()).update(T0, 0.9, 24)
