"""The held-out renderer (tools/heldout_suite.py) shows what its classes claim, and its judge counts what it says:
checked on the pictures themselves, apart from any scorer."""

from __future__ import annotations

import cv2
import numpy as np

import heldout_suite as hs


def test_a_cloud_shadow_darkens_part_of_the_view_and_keeps_its_texture() -> None:
    scene = hs.Scene("s", "shadows", 60, 3, clouds=6.0)
    court = hs.Courtyard(scene)
    frames = [cv2.cvtColor(court.frame(float(t)), cv2.COLOR_RGB2GRAY).astype(np.float32) for t in range(60)]
    clear = np.median(np.stack(frames), axis=0)
    shaded = [f for f in frames if (f < 0.8 * clear).mean() > 0.1]
    assert shaded, "no frame has a tenth of the view in a shadow"
    f = shaded[0]
    region = f < 0.8 * clear
    a, b = f[region] - f[region].mean(), clear[region] - clear[region].mean()
    assert float((a * b).mean() / (a.std() * b.std())) > 0.5  # the paving's pattern is still there, darker


def test_the_ir_switch_is_monochrome_and_actors_cover_their_area() -> None:
    actor = hs.Actor("car", (0.6, 0.03, 0.03), 0.05, 0.5, 0.5, 0.6, 5.0, 4.0)
    scene = hs.Scene("s", "after-switch", 30, 4, events=(actor,), ir_switch=20.0, shake_px=0.0)
    court = hs.Courtyard(scene)
    empty, with_car = court.frame(4.0), court.frame(6.0)
    changed = np.abs(with_car.astype(np.int16) - empty.astype(np.int16)).max(axis=2) > 25
    assert 0.03 < changed.mean() < 0.07  # ~5% of the frame, wheels and outline included
    night = court.frame(22.0)
    assert np.abs(night[..., 0].astype(np.int16) - night[..., 1]).max() <= 2  # grey: no colour left


def test_the_judge_counts_recall_false_stars_and_kept_events_per_class() -> None:
    actor = hs.Actor("person", (0.1, 0.1, 0.1), 0.03, 0.5, 0.5, 0.6, 10.0, 3.0)
    scene = hs.Scene("b", "busy", 60, 1, events=(actor,))
    result = hs.Result(scene, stars=[[10.0, 11.0]], admissions=[(0.0, "reference"), (10.0, "free_slot"),
                                                                (40.0, "free_slot")])
    row = hs.judge([result])["busy"]
    assert row["recall"] == 1.0 and row["false_stars"] == 1 and row["kept"] == [1]
    assert row["false_per_hour"] == 60.0
