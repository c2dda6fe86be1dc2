"""The star memory's rules on arrays: candidates, duplicates, age-aware eviction, the scene reference, order; and
the scorer and the rules together over a long day of events."""

from __future__ import annotations

import numpy as np

from event_suite import MEMORY_SIZE, Clip, Renderer, Thing
from livewatch.memory.importance import ImportanceModel, PairSignature
from livewatch.memory.star import StarMemory

PLACES = [(0.3, 0.62), (0.55, 0.6), (0.8, 0.64), (0.45, 0.8), (0.72, 0.8), (0.25, 0.84), (0.9, 0.86), (0.6, 0.72),
          (0.4, 0.7), (0.85, 0.75), (0.65, 0.88), (0.35, 0.92)]
LOOKS = [("person", "dark"), ("car", "red"), ("car", "blue"), ("van", "white"), ("person", "orange"),
         ("box", "yellow"), ("car", "silver"), ("person", "green"), ("car", "green"), ("person", "white"),
         ("van", "yellow"), ("box", "blue")]


def signatures(*events: Thing, times: list[float], seed: int = 3) -> list[PairSignature]:
    """The signatures the scorer gives the pairs (t, t+1) for each t in ``times`` of a scene with ``events``."""
    r = Renderer(Clip("s", 10_000, seed, events), MEMORY_SIZE)
    model = ImportanceModel()
    out = []
    t = 0.0
    for target in sorted(times):
        while t < target:
            model.score_pair(r.frame(t), t, r.frame(t + 1), t + 1, [])
            t += 2.0
        out.append(model.score_pair(r.frame(t), t, r.frame(t + 1), t + 1, []).signature)
        t += 2.0
    return out


def test_below_threshold_and_zero_capacity() -> None:
    (s,) = signatures(Thing("car", "red", 0.05, 0.5, 0.7, 10.0, 5.0), times=[10.0])
    assert not StarMemory(4, 0.6).offer(1, 0.0, 0.5, s).admitted
    assert StarMemory(4, 0.6).offer(1, 0.0, 0.5, s).reason == "below_threshold"
    assert not StarMemory(0, 0.6).offer(1, 0.0, 0.9, s).admitted


def test_duplicate_replaces_only_when_stronger() -> None:
    car = Thing("car", "red", 0.05, 0.5, 0.7, 10.0, 1000.0)
    a, b, c = signatures(car, times=[10.0, 20.0, 40.0])  # the same car, three times before it becomes background
    stars = StarMemory(4, 0.6, half_life_s=100)
    assert stars.offer(1, 0.0, 0.9, a).admitted
    decision = stars.offer(2, 10.0, 0.65, b)  # same moment, weaker than the fresh star
    assert not decision.admitted and decision.reason == "duplicate"
    decision = stars.offer(3, 500.0, 0.7, c)  # same moment, the old star has aged
    assert decision.admitted and decision.evicted == 1 and decision.reason == "replaced_duplicate"
    assert stars.ids() == [3]


def test_full_memory_evicts_the_weakest_effective() -> None:
    things = [Thing(k, c, 0.04, x, y, 10.0, 100.0) for (k, c), (x, y) in zip(LOOKS[:4], PLACES[:4])]
    sigs = [signatures(t, times=[10.0])[0] for t in things]
    stars = StarMemory(2, 0.6, half_life_s=100)
    stars.offer(1, 0.0, 0.95, sigs[0])
    stars.offer(2, 50.0, 0.7, sigs[1])
    # at t=100: effective 0.475 and 0.49; a 0.8 candidate replaces star 1
    decision = stars.offer(3, 100.0, 0.8, sigs[2])
    assert decision.evicted == 1 and decision.reason == "replaced_weaker" and stars.ids() == [2, 3]
    assert stars.offer(4, 100.0, 0.45, sigs[3]).reason == "below_threshold"
    # effective now 0.49 and 0.8: a 0.62 candidate beats the first, not a fresher 0.95
    assert stars.offer(5, 100.0, 0.62, sigs[3]).reason == "replaced_weaker"
    stars = StarMemory(2, 0.6, half_life_s=100)
    stars.offer(1, 0.0, 0.95, sigs[0])
    stars.offer(2, 0.0, 0.9, sigs[1])
    assert stars.offer(3, 0.0, 0.8, sigs[2]).reason == "weaker_than_all"


def test_a_full_memory_lets_the_second_star_of_an_event_go_before_a_distinct_event() -> None:
    """Rule 4b: a person caught walking in (episode 1) and standing (episode 1 again) hold two places while there
    is room; when a new event needs one, the later of the two goes (the arrival stays), not the oldest star; a
    later pair clearly more important than the arrival keeps its place instead; a candidate that is itself the
    second of a star's event does not take a place."""
    things = [Thing(k, c, 0.04, x, y, 10.0, 100.0) for (k, c), (x, y) in zip(LOOKS[:6], PLACES[:6])]
    sigs = [signatures(t, times=[10.0])[0] for t in things]
    stars = StarMemory(3, 0.6, half_life_s=600)
    assert stars.offer(1, 0.0, 0.9, sigs[0], episode=1).reason == "free_slot"
    assert stars.offer(2, 2.0, 0.92, sigs[1], episode=1).reason == "free_slot"  # room: both stay for now
    assert stars.offer(3, 20.0, 0.8, sigs[2], episode=2).reason == "free_slot"
    decision = stars.offer(4, 40.0, 0.85, sigs[3], episode=3)
    assert decision.reason == "replaced_same_event" and decision.evicted == 2 and stars.ids() == [1, 3, 4]
    assert [e.why for e in stars.entries] == ["free_slot", "free_slot", "replaced_same_event"]
    # the second pair of a star's event, not clearly more important: refused; clearly more: it replaces it
    assert stars.offer(5, 42.0, 0.9, sigs[4], episode=3).reason == "same_event"
    decision = stars.offer(6, 42.0, 0.97, sigs[5], episode=3)
    assert decision.reason == "replaced_same_event" and decision.evicted == 4 and stars.ids() == [1, 3, 6]


def test_a_full_memory_lets_the_nearer_of_two_similar_stars_go_before_the_oldest() -> None:
    """Rule 4c, with the distance given: stars 2 and 3 are two views of one moment (0.3 apart), so the less
    important of them leaves for a distinct candidate, though star 1 is the oldest and weakest; without such a
    pair the weakest effective star leaves (rule 4d)."""
    table = {frozenset((2, 3)): 0.3}
    sigs = {i: signatures(Thing(*LOOKS[i], 0.04, *PLACES[i], 10.0, 100.0), times=[10.0])[0] for i in range(1, 6)}
    ids = {id(v): k for k, v in sigs.items()}

    def distance(a, b) -> float:
        return table.get(frozenset((ids[id(a)], ids[id(b)])), 0.95)

    stars = StarMemory(3, 0.6, half_life_s=600, distance=distance)
    for i, (t, imp) in enumerate([(0.0, 0.7), (100.0, 0.9), (104.0, 0.85)], start=1):
        stars.offer(i, t, imp, sigs[i])
    decision = stars.offer(4, 200.0, 0.8, sigs[4])
    assert decision.reason == "replaced_nearest" and decision.evicted == 3 and stars.ids() == [1, 2, 4]
    decision = stars.offer(5, 300.0, 0.8, sigs[5])
    assert decision.reason == "replaced_weaker" and decision.evicted == 1


def test_the_scene_reference_holds_a_place_only_until_an_event_needs_it() -> None:
    quiet, = signatures(times=[10.0])
    event, = signatures(Thing("car", "red", 0.05, 0.5, 0.7, 10.0, 5.0), times=[10.0])
    stars = StarMemory(1, 0.6)
    assert stars.offer_reference(1, 0.0, quiet).reason == "reference" and stars.ids() == [1]
    assert stars.offer_reference(2, 1.0, quiet).reason == "not_empty"
    decision = stars.offer(3, 2.0, 0.61, event)
    assert decision.admitted and decision.evicted == 1 and stars.ids() == [3]
    assert StarMemory(0, 0.6).offer_reference(1, 0.0, quiet).reason == "not_empty"


def test_a_day_of_events_capacity_novelty_later_events_and_order() -> None:
    """Twelve distinct events (a place and a look each), each lasting 6 s, one every 30 s, then the last four
    again: every distinct event enters once, repeats of an event that is a star do not, later events displace
    the oldest stars once the memory is full, and the stars stay in time order."""
    events = []
    for i in range(12):
        kind, colour = LOOKS[i]
        x, y = PLACES[i]
        events.append(Thing(kind, colour, 0.03, x, y, 20.0 + 30.0 * i, 6.0))
    for i in range(4):  # the last four events come back, same place and look, while they are still stars
        e = events[8 + i]
        events.append(Thing(e.kind, e.colour, e.area, e.x, e.y, 400.0 + 30.0 * i, 6.0))
    r = Renderer(Clip("day", 600, 5, tuple(events)), MEMORY_SIZE)
    model = ImportanceModel()
    stars = StarMemory(capacity=8, threshold=0.6, half_life_s=300)
    admitted: list[tuple[float, str]] = []
    for t in np.arange(0.0, 540.0, 2.0):
        t = float(t)
        scored = model.score_pair(r.frame(t), t, r.frame(t + 1), t + 1, stars.signatures())
        decision = stars.offer(int(t), t, scored.score, scored.signature)
        if decision.admitted:
            admitted.append((t, decision.reason))
        assert len(stars) <= 8
        times = [e.time for e in stars.entries]
        assert times == sorted(times)
    starts = [e.start for e in events[:12]]
    # each of the twelve events entered exactly once, at its first pair
    assert [t for t, _ in admitted] == [2.0 * int(s // 2.0) for s in starts]
    # the returns of events 8-11 (still stars) were not admitted again
    assert all(t < 400.0 for t, _ in admitted)
    # later events displaced the oldest once the memory was full: the stars are the eight latest events
    assert [e.time for e in stars.entries] == [2.0 * int(s // 2.0) for s in starts[4:]]
    assert [reason for _, reason in admitted] == ["free_slot"] * 8 + ["replaced_weaker"] * 4
