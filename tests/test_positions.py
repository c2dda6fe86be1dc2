from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_helpers import rope_index_reference, uniform_t_offsets
from livewatch.engine.prompting.layout import PairSlot, PrefixLayout, UpdateKind, plan_update
from livewatch.engine.prompting.positions import temporal_positions, text_positions

VIDEO, START = 99, 98


def full_positions(layout: PrefixLayout, suffix_len: int) -> np.ndarray:
    return np.concatenate([layout.positions(), text_positions(layout.next_position, suffix_len)], axis=1)


def prompt_ids(head_len: int, n_pairs: int, gh: int, gw: int, suffix_len: int) -> list[int]:
    return [1] * (head_len - 1) + [START] + [VIDEO] * (n_pairs * gh * gw) + [2] * suffix_len


@pytest.mark.parametrize("n_pairs,gh,gw", [(1, 8, 15), (4, 8, 15), (6, 3, 20), (3, 12, 2)])
def test_uniform_pairs_match_training_semantics(n_pairs: int, gh: int, gw: int) -> None:
    # Frames sampled at 1 fps: a pair spans 2 s (second_per_grid_t = 2), tokens_per_second = 2.
    times = [100.0 + 2 * i for i in range(n_pairs)]
    t_pos = temporal_positions(times, tokens_per_second=2, max_gap_s=60)
    assert t_pos == uniform_t_offsets(n_pairs, 2.0, 2)
    head = tuple(range(10)) + (START,)
    layout = PrefixLayout(head, tuple(PairSlot(i, t, gh, gw) for i, t in enumerate(t_pos)))
    ids = prompt_ids(len(head), n_pairs, gh, gw, 7)
    ref = rope_index_reference(ids, VIDEO, START, (n_pairs, 2 * gh, 2 * gw), t_pos)
    np.testing.assert_array_equal(full_positions(layout, 7), ref)


def test_non_uniform_times_follow_timestamps_and_text_starts_at_max_plus_one() -> None:
    # A star pair 10 minutes before three window pairs 2 s apart; max_gap_s large enough not to compress.
    times = [0.0, 600.0, 602.0, 604.0]
    t_pos = temporal_positions(times, tokens_per_second=2, max_gap_s=3600)
    assert t_pos == [0, 1200, 1204, 1208]
    layout = PrefixLayout((5, 6, START), tuple(PairSlot(i, t, 4, 5) for i, t in enumerate(t_pos)))
    pos = layout.positions()
    t_rows = pos[0, 3:].reshape(4, 20)
    assert (t_rows == (3 + np.array(t_pos))[:, None]).all()
    assert layout.next_position == 3 + 1208 + 1
    suffix = text_positions(layout.next_position, 3)
    assert suffix[:, 0].tolist() == [pos.max() + 1] * 3


def test_next_position_when_the_grid_is_wider_than_the_time_axis() -> None:
    layout = PrefixLayout((1, START), (PairSlot(0, 0, 8, 15),))
    assert layout.next_position == 2 + 14 + 1


def test_long_gaps_are_compressed() -> None:
    assert temporal_positions([0.0, 3600.0, 3602.0], tokens_per_second=2, max_gap_s=60) == [0, 120, 124]


def test_times_must_ascend() -> None:
    with pytest.raises(ValueError):
        temporal_positions([5.0, 4.0], 2, 60)


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=30))
def test_temporal_positions_are_monotonic_and_start_at_zero(deltas: list[float]) -> None:
    times = list(np.cumsum(deltas))
    t = temporal_positions(times, 2, 60)
    assert t[0] == 0
    assert all(b >= a for a, b in zip(t, t[1:]))
    assert t[-1] <= round(60 * 2 * (len(times) - 1)) + 1


def slots(*spec: tuple[int, int]) -> tuple[PairSlot, ...]:
    return tuple(PairSlot(pid, t, 2, 3) for pid, t in spec)


def test_plan_update_kinds() -> None:
    a = PrefixLayout((1, 2), slots((0, 0), (1, 4)))
    assert plan_update(None, a).kind is UpdateKind.REBUILD
    assert plan_update(a, a) == plan_update(a, PrefixLayout((1, 2), slots((0, 0), (1, 4))))
    assert plan_update(a, a).kind is UpdateKind.REUSE
    grown = PrefixLayout((1, 2), slots((0, 0), (1, 4), (2, 8)))
    plan = plan_update(a, grown)
    assert (plan.kind, plan.keep_tokens, plan.first_new_slot) == (UpdateKind.EXTEND, 2 + 12, 2)
    middle_removed = PrefixLayout((1, 2), slots((0, 0), (2, 8)))
    plan = plan_update(grown, middle_removed)
    assert (plan.kind, plan.keep_tokens, plan.first_new_slot) == (UpdateKind.PARTIAL, 2 + 6, 1)
    new_head = PrefixLayout((1, 3), slots((1, 0), (2, 4)))
    assert plan_update(grown, new_head) == plan_update(None, new_head)
    moved = PrefixLayout((1, 2), slots((0, 0), (1, 5)))
    assert plan_update(a, moved).first_new_slot == 1
