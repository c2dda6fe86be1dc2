from __future__ import annotations

from memory_helpers import scene_image
from livewatch.memory.importance import importance, pair_signature
from livewatch.memory.star import StarMemory


def sig(scene: int, seq: int):
    return pair_signature(scene_image(scene, seq), scene_image(scene, seq + 1))


def test_long_sequence_capacity_duplicates_later_events_and_order() -> None:
    stars = StarMemory(capacity=4, threshold=0.6, half_life_s=300)
    prev = None
    admitted = []
    t = 0.0
    # 6 scenes visited in turn, each for 20 pairs, then the cycle repeats: 240 pairs, 1 pair / 2 s.
    for pid in range(240):
        scene = (pid // 20) % 6
        s = sig(scene, pid * 2)
        score = importance(s, prev, stars.signatures())
        prev = s
        decision = stars.offer(pid, t, score, s)
        if decision.admitted:
            admitted.append((pid, scene, decision.reason))
        assert len(stars) <= 4
        times = [e.time for e in stars.entries]
        assert times == sorted(times)
        t += 2.0
    # near-duplicates never fill it: the stars are pairwise distinct scenes
    scenes_in_memory = {(e.pair_id // 20) % 6 for e in stars.entries}
    assert len(scenes_in_memory) == len(stars) == 4
    # later important events entered after it was full
    assert any(pid >= 120 for pid, _, _ in admitted)
    # the first minutes do not own it
    assert min(e.time for e in stars.entries) > 60.0


def test_below_threshold_and_zero_capacity() -> None:
    s = sig(0, 0)
    assert not StarMemory(4, 0.6).offer(1, 0.0, 0.5, s).admitted
    assert not StarMemory(0, 0.6).offer(1, 0.0, 0.9, s).admitted


def test_duplicate_replaces_only_when_stronger() -> None:
    stars = StarMemory(4, 0.6, half_life_s=100)
    assert stars.offer(1, 0.0, 0.9, sig(0, 0)).admitted
    decision = stars.offer(2, 10.0, 0.65, sig(0, 10))  # same scene, weaker than the fresh star
    assert not decision.admitted and decision.reason == "duplicate"
    decision = stars.offer(3, 500.0, 0.7, sig(0, 20))  # same scene, the old star has aged
    assert decision.admitted and decision.evicted == 1 and stars.ids() == [3]


def test_full_memory_evicts_the_weakest_effective() -> None:
    stars = StarMemory(2, 0.6, half_life_s=100)
    stars.offer(1, 0.0, 0.95, sig(0, 0))
    stars.offer(2, 50.0, 0.7, sig(1, 0))
    # at t=100: effective 0.475 and 0.49; a 0.8 candidate replaces star 1
    decision = stars.offer(3, 100.0, 0.8, sig(2, 0))
    assert decision.evicted == 1 and stars.ids() == [2, 3]
    assert not stars.offer(4, 100.0, 0.45, sig(3, 0)).admitted
