"""Local light on the held-out renderer's courtyard (tools/heldout_suite.py): a headlight's pool sweeping the
paving at night and a cloud's shadow crossing it are light, not change, while an object in the pool or the shadow,
and a flat-coloured car on smooth ground, stay change. (The per-class rates: README, "Held out, per class".)"""

from __future__ import annotations

import cv2
import numpy as np

import heldout_suite as hs
from livewatch.memory.cells import cell_means
from livewatch.memory.importance import Importance, ImportanceModel
from livewatch.memory.locallight import light_cells, without_light

H, W = 224, 420
THRESHOLD = 0.6


def scores(scene: hs.Scene) -> list[tuple[float, Importance]]:
    """The pairs (t, t+1) of the scene at 1 fps as the memory sees them (the model's cap)."""
    court = hs.Courtyard(scene)
    model = ImportanceModel()
    out = []
    for t in range(0, int(scene.seconds) - 1, 2):
        a, b = (cv2.resize(court.frame(float(u)), (W, H), interpolation=cv2.INTER_AREA) for u in (t, t + 1))
        out.append((float(t), model.score_pair(a, float(t), b, float(t + 1), [])))
    return out


def test_headlight_pools_sweeping_the_paving_are_light() -> None:
    sweeps = (12.0, 24.0, 36.0)
    pairs = scores(hs.Scene("night", "headlights", 48.0, 1101, night=True, headlights=sweeps))
    during = [s for t, s in pairs if any(h - 1 <= t <= h + 3 for h in sweeps)]
    assert len(during) >= 6 and max(s.score for s in during) < THRESHOLD, [round(s.score, 2) for s in during]
    assert max(s.change_area for _, s in pairs) < 0.01  # the pool's clipped centre included


def test_an_object_in_a_headlight_pool_stays_change() -> None:
    car = hs.Actor("car", (0.7, 0.7, 0.68), 0.03, 0.5, 0.5, 0.72, 24.5, 3.0)  # stops where the pool sweeps
    pairs = scores(hs.Scene("night", "headlight-events", 36.0, 1102, night=True, headlights=(23.0,), events=(car,)))
    assert max(s.score for t, s in pairs if 24 <= t <= 27) > 0.8


def test_a_cloud_shadow_crossing_is_light_and_a_person_under_it_is_not() -> None:
    person = hs.Actor("person", (0.05, 0.1, 0.4), 0.03, 0.4, 0.4, 0.7, 20.0, 4.0)
    scene = hs.Scene("cloud", "shadow-events", 44.0, 1106, clouds=2.0, events=(person,))  # shadow over 13-27 s
    court = hs.Courtyard(scene)
    shaded = [t for t in range(44) if (court._shadow(float(t)) < 0.8).mean() > 0.1]
    assert any(19 <= t <= 23 for t in shaded)  # the person walks in under the shadow
    pairs = scores(scene)
    quiet = [s for t, s in pairs if t in shaded and not 18 <= t <= 25]
    assert len(quiet) >= 3 and max(s.change_area for s in quiet) < 0.012, [round(s.change_area, 4) for s in quiet]
    assert max(s.score for t, s in pairs if 20 <= t <= 23) > 0.8


def test_a_flat_coloured_car_on_smooth_ground_stays_change() -> None:
    """What says little (a uniform car over a smooth surface: no texture to correlate) is not light."""
    rng = np.random.default_rng(5)
    ground = np.clip(cv2.GaussianBlur(rng.normal(120, 2, (H, W)).astype(np.float32), (0, 0), 3), 0, 255)
    model = ImportanceModel()
    out = []
    for t in range(0, 20, 2):
        frames = []
        for u in (t, t + 1):
            img = ground + rng.normal(0, 1.2, (H, W)).astype(np.float32)
            if u >= 12:
                img[130:170, 150:240] = 95.0 + rng.normal(0, 1.2, (40, 90))  # a grey car, 3.8% of the frame
            frames.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
        out.append(model.score_pair(frames[0], float(t), frames[1], float(t + 1), []))
    assert out[6].score > 0.8 and out[6].change_area > 0.03


# -- the rules on synthetic planes (85x160 analysis luma, cells of 5x5) ------------------------------------------

def _texture(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Ground grain at the analysis size: blurred noise of ``amplitude`` grey levels (std over the plane; within a
    cell, without its plane, about two thirds of it)."""
    t = cv2.GaussianBlur(rng.normal(0.0, 1.0, (85, 160)).astype(np.float32), (0, 0), 0.8)
    return t * np.float32(amplitude / float(t.std()))


def test_faint_grain_that_a_pool_brings_out_is_light_not_new_edges() -> None:
    rng = np.random.default_rng(11)
    bg = np.float32(40.0) + _texture(rng, 1.6)  # a dark background: its grain (~1.1 a cell) under the floor (1.5)
    frame = bg * np.float32(3.0) + rng.normal(0.0, 0.3, bg.shape).astype(np.float32)  # the pool: x3, grain ~3.3
    clip = np.zeros_like(bg)
    raw = np.zeros(bg.shape, np.uint8)
    raw[20:60, 40:120] = 1
    lit, covered, flat, edged, gain = light_cells(frame, bg, clip, cell_means(raw.astype(np.float32)))
    inside = np.zeros(lit.shape, bool)
    inside[4:12, 8:24] = True
    assert lit[inside].mean() > 0.8 and not edged[inside].any() and not covered[inside].any()
    assert np.allclose(gain[inside], 3.0, atol=0.1)
    assert not without_light(raw, frame, bg, clip).any()
    # an object over the same dark ground brings edges of its own: not light
    frame[30:50, 60:100] = 160.0 + _texture(rng, 12.0)[30:50, 60:100]
    assert without_light(raw, frame, bg, clip)[30:50, 60:100].mean() > 0.9


def test_a_flat_region_is_light_only_beside_a_light_that_changed_the_same_way() -> None:
    rng = np.random.default_rng(12)
    bg = np.float32(100.0) + rng.normal(0.0, 0.2, (85, 160)).astype(np.float32)
    bg[:, :80] += _texture(rng, 6.0)[:, :80]  # textured paving on the left, smooth plaster on the right
    clip = np.zeros_like(bg)

    def judged(right_gain: float, gap: int) -> np.ndarray:
        frame = bg.copy()
        frame[20:60, 30:75] *= np.float32(1.6)  # the pool on the paving: texture vouches for it
        frame[20:60, 75 + gap:120] *= np.float32(right_gain)  # and beyond, on the plaster
        raw = np.zeros(bg.shape, np.uint8)
        raw[20:60, 30:75] = 1
        raw[20:60, 75 + gap:120] = 1
        return without_light(raw, frame, bg, clip)[20:60, 75 + gap:120]

    assert not judged(1.6, gap=5).any()  # 1 cell apart, brighter too: the same light
    assert judged(0.6, gap=5).mean() > 0.9  # darker where the light made the paving brighter: something else
    assert judged(1.6, gap=20).mean() > 0.9  # 4 cells away: nothing vouches for it
