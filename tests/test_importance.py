from __future__ import annotations

from memory_helpers import scene_image
from livewatch.memory.importance import importance, pair_signature


def sig(scene: int, seq: int, **kw):
    return pair_signature(scene_image(scene, seq, **kw), scene_image(scene, seq + 1, **kw))


def test_identical_pairs_score_near_zero() -> None:
    a = pair_signature(scene_image(0, 1), scene_image(0, 2))
    assert importance(a, a, [a]) < 0.01


def test_scene_cut_scores_above_threshold() -> None:
    assert importance(sig(1, 10), sig(0, 8), [sig(0, 2)]) > 0.6


def test_return_to_a_starred_scene_is_not_new() -> None:
    # Cut from scene 1 back to scene 0, which is already a star: novel against the previous pair only.
    score = importance(sig(0, 20), sig(1, 18), [sig(0, 2)])
    assert 0.3 < score < 0.6


def test_gradual_noise_stays_low() -> None:
    prev = sig(0, 0, noise=4)
    stars = [prev]
    for seq in range(2, 40, 2):
        s = sig(0, seq, noise=4 + seq // 4)  # noise grows slowly to +-14 grey levels
        assert importance(s, prev, stars) < 0.3
        prev = s


def test_moving_object_counts_as_change() -> None:
    still = sig(0, 0)
    moving = sig(0, 2, moving=True)
    assert importance(moving, still, [still]) > importance(sig(0, 2), still, [still]) + 0.02
