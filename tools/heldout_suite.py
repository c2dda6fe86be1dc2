"""A held-out check of the star memory: footage from a renderer written apart from the scorer and from
``tools/event_suite.py`` (whose scenes the scorer was tuned on), judged per class, never as one total.

The scene is a paved courtyard seen from above a doorway: square paving slabs with grout lines and per-slab albedo,
a wall with a door, windows and a drainpipe, planters, a bench; albedo in linear RGB (``grey`` scenes: concrete,
every albedo desaturated). Light is physical: sun irradiance on everything not shaded plus sky light, so a cloud's
shadow multiplies the sun term only (the sky term stays: shadows keep texture and darken unevenly), and a car's
headlights at night add a bright pool of light that sweeps across the paving. The camera: a slow auto-exposure
toward mid-grey, Poisson-Gaussian noise (photon shot noise at a full well of 6,000 electrons per 8-bit step of
signal, read noise 2 e-) amplified by the analog gain (x8 at night), the sRGB curve, 8-bit quantisation, a
sub-pixel shake of the whole picture (0.3 px, or up to 4 px in the shake class), and an infrared switch that
turns the picture monochrome with vegetation bright.

Events are people (body and head, clothing in any colour) and cars (body, windows, wheels) of 2-6% of the frame
(25% for the colourful object of the grey class) that walk or drive into view and stay 2-4 s. The classes, each
with its own clips and figures:

    shadows          cloud shadows sweeping the courtyard, no event            false stars per hour
    shadow-events    events while cloud shadows sweep                           recall
    headlights       night: headlight pools sweeping the paving, no event      false stars per hour
    headlight-events events right after a headlight sweep                      recall
    grey-colour      a grey scene; saturated objects (2-25%) come and go       recall
    after-switch     events 0.5-2 s after an IR switch or an exposure step     recall
    first-seconds    events in a camera's first 0.5-4 s                         recall (reference pair aside)
    exposure         exposure steps x0.4 .. x2.5, no event                      false stars per hour
    shake            4 px shake, no event                                       false stars per hour
    busy             12 distinct events in 160 s, 10 star pairs                 events still stars at the end

The frames go straight into a ``CameraMemory`` with the daemon's defaults (JPEG-compressed at quality 60, the
decode-free path of ``bench_memory``), at 1 fps; ``python tools/heldout_suite.py`` prints the table per class.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_memory import EPOCH, SAMPLE_FPS, NewScorer, _shows_event  # noqa: E402  (the same harness and clock)
from livewatch.frames import Frame  # noqa: E402

SIZE = (360, 640)  # rendered (height, width); the memory sees the model's cap of it


@dataclass(frozen=True)
class Actor:
    """An event: ``kind`` (person | car) of ``colour`` (linear RGB albedo) covering ``area`` of the frame, entering
    at ``start`` from ``x0`` towards ``x1`` (normalised), staying ``duration`` seconds."""

    kind: str
    colour: tuple[float, float, float]
    area: float
    x0: float
    x1: float
    y: float
    start: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Scene:
    name: str
    cls: str
    seconds: float
    seed: int
    events: tuple[Actor, ...] = ()
    grey: bool = False
    clouds: float = 0.0  # cloud shadows per minute crossing the view
    night: bool = False
    headlights: tuple[float, ...] = ()  # start times of headlight sweeps (2.5 s each)
    ir_switch: float | None = None  # time of the switch to infrared
    exposure_steps: tuple[tuple[float, float], ...] = ()  # (time, factor) steps of the scene's light
    shake_px: float = 0.3


# -- the renderer --------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    small = rng.random((max(2, h // scale), max(2, w // scale))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _desaturate(rgb: np.ndarray, keep: float) -> np.ndarray:
    grey = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return grey[..., None] + keep * (rgb - grey[..., None])


class Courtyard:
    """Albedo and the light of one scene; ``frame(t)`` renders the camera's sRGB picture at time t."""

    def __init__(self, scene: Scene) -> None:
        self.s = scene
        h, w = SIZE
        rng = np.random.default_rng(scene.seed)
        self.rng = np.random.default_rng(scene.seed + 7919)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.yy, self.xx = yy, xx
        albedo = np.zeros((h, w, 3), np.float32)
        wall_h = int(h * (0.28 + 0.08 * rng.random()))
        # the wall: rendered plaster with a door, windows and a drainpipe
        wall_tint = np.array([0.42, 0.36, 0.30], np.float32) * (0.8 + 0.4 * rng.random())
        albedo[:wall_h] = wall_tint * (0.85 + 0.3 * _smooth_noise(rng, wall_h, w, 6)[..., None])
        door_x = int(w * (0.35 + 0.3 * rng.random()))
        albedo[int(wall_h * 0.15):wall_h, door_x:door_x + w // 14] = np.array([0.10, 0.16, 0.24], np.float32)
        for i in range(4):
            wx = int(w * (0.05 + 0.23 * i)) + int(rng.integers(0, 20))
            if abs(wx - door_x) < w // 10:
                continue
            albedo[int(wall_h * 0.2):int(wall_h * 0.6), wx:wx + w // 16] = np.array([0.04, 0.05, 0.07], np.float32)
        pipe = int(w * rng.random())
        albedo[:wall_h, pipe:pipe + 4] = np.array([0.2, 0.2, 0.22], np.float32)
        # paving: slabs with grout, each its own shade, with fine grain
        slab = int(18 + rng.integers(0, 10))
        gy, gx = (yy[wall_h:] - wall_h) // slab, xx[wall_h:] // slab
        shade = np.random.default_rng(scene.seed + 1).random((h // slab + 2, w // slab + 2)).astype(np.float32)
        base = np.array([0.30, 0.28, 0.25], np.float32)
        paving = base * (0.75 + 0.5 * shade[gy.astype(int), gx.astype(int)])[..., None]
        grout = ((yy[wall_h:] - wall_h) % slab < 2) | (xx[wall_h:] % slab < 2)
        paving[grout] *= 0.55
        paving *= (0.9 + 0.2 * rng.random((h - wall_h, w)).astype(np.float32))[..., None]
        albedo[wall_h:] = paving
        # planters with plants, a bench
        self.vegetation = np.zeros((h, w), bool)
        for _ in range(2):
            px, pw = int(w * rng.random() * 0.8), int(w * 0.12)
            py = int(h * (0.55 + 0.35 * rng.random()))
            albedo[py:py + 20, px:px + pw] = np.array([0.25, 0.18, 0.12], np.float32)
            leaves = _smooth_noise(rng, 30, pw, 3) > 0.45
            region = albedo[py - 30:py, px:px + pw]
            region[leaves] = np.array([0.06, 0.20, 0.05], np.float32)
            self.vegetation[py - 30:py, px:px + pw] |= leaves
        bx, by = int(w * (0.1 + 0.6 * rng.random())), int(h * (0.45 + 0.1 * rng.random()))
        albedo[by:by + 10, bx:bx + w // 7] = np.array([0.35, 0.22, 0.10], np.float32)
        if scene.grey:
            albedo = _desaturate(albedo, 0.0)
        self.albedo = np.clip(albedo, 0.01, 0.95)
        self.wall_h = wall_h
        self.exposure: float | None = None
        self.last_t = 0.0
        self.clouds = [(float(rng.random()) * 60.0 / max(scene.clouds, 1e-6), float(0.2 + 0.6 * rng.random()),
                        float(0.25 + 0.25 * rng.random())) for _ in range(int(math.ceil(scene.clouds * scene.seconds
                                                                                       / 60.0)) + 1)]

    # light ---------------------------------------------------------------------------------------------------

    def _shadow(self, t: float) -> np.ndarray:
        """The sun's share at each pixel (1 in sun): soft-edged cloud shadows drifting across the view."""
        h, w = SIZE
        sun = np.ones((h, w), np.float32)
        if self.s.clouds <= 0:
            return sun
        period = 60.0 / self.s.clouds
        for i, (phase, cy, radius) in enumerate(self.clouds):
            start = phase + i * period
            u = (t - start) / 14.0  # crossing the view takes ~14 s
            if not -0.6 <= u <= 1.6:
                continue
            cx = (-0.5 + 2.0 * u) * w
            d = np.hypot((self.xx - cx) / (radius * w * 1.6), (self.yy - cy * h) / (radius * h * 1.2))
            sun *= 1.0 - 0.7 * np.clip((1.25 - d) / 0.5, 0.0, 1.0)
        return sun

    def _light(self, t: float) -> np.ndarray:
        """Irradiance (linear) per pixel and channel."""
        h, w = SIZE
        step = 1.0
        for at, factor in self.s.exposure_steps:
            if t >= at:
                step = factor
        if self.s.night:
            street = 0.05 + 0.03 * np.exp(-((self.xx - 0.8 * w) ** 2 + (self.yy - 0.2 * h) ** 2) / (0.3 * w) ** 2)
            irr = np.repeat(street[..., None], 3, axis=2) * np.array([1.0, 0.85, 0.6], np.float32)
            for t0 in self.s.headlights:
                u = (t - t0) / 2.5
                if 0.0 <= u <= 1.0:
                    cx, cy = (-0.2 + 1.4 * u) * w, (0.65 + 0.15 * math.sin(u * 3.0)) * h
                    pool = np.exp(-(((self.xx - cx) / (0.22 * w)) ** 2 + ((self.yy - cy) / (0.12 * h)) ** 2))
                    pool[: self.wall_h] *= 0.4
                    irr += (0.6 * pool)[..., None] * np.array([1.0, 0.97, 0.9], np.float32)
            return irr * step
        sun = self._shadow(t) * 0.85
        sky = 0.25
        irr = (sun[..., None] * np.array([1.0, 0.96, 0.88], np.float32) + sky * np.array([0.8, 0.9, 1.1], np.float32))
        return irr * step

    # actors --------------------------------------------------------------------------------------------------

    def _draw_actors(self, albedo: np.ndarray, t: float) -> None:
        h, w = SIZE
        for a in self.s.events:
            if not a.start <= t < a.end:
                continue
            u = min(1.0, (t - a.start) / max(a.duration, 1e-3) * 1.6)  # walks in, then stands
            cx = (a.x0 + (a.x1 - a.x0) * u) * w
            cy = a.y * h
            colour = np.asarray(a.colour, np.float32)
            if a.kind == "person":
                bh = math.sqrt(a.area * h * w / 0.33)  # an upright body about a third as wide as tall
                bw = 0.33 * bh
                body = (((self.xx - cx) / (bw / 2)) ** 2 + ((self.yy - cy) / (bh * 0.42)) ** 2) <= 1.0
                head = ((self.xx - cx) ** 2 + (self.yy - (cy - bh * 0.52)) ** 2) <= (bw * 0.32) ** 2
                albedo[body] = colour
                albedo[head] = np.array([0.45, 0.30, 0.22], np.float32)
            else:
                cw = math.sqrt(a.area * h * w / 0.45)
                ch = 0.45 * cw
                box = (np.abs(self.xx - cx) <= cw / 2) & (np.abs(self.yy - cy) <= ch / 2)
                albedo[box] = colour
                glass = (np.abs(self.xx - cx) <= cw * 0.3) & (np.abs(self.yy - (cy - ch * 0.2)) <= ch * 0.18)
                albedo[glass] = np.array([0.03, 0.04, 0.06], np.float32)
                for sx in (-0.32, 0.32):
                    wheel = ((self.xx - (cx + sx * cw)) ** 2 + (self.yy - (cy + ch / 2)) ** 2) <= (ch * 0.2) ** 2
                    albedo[wheel] = np.array([0.02, 0.02, 0.02], np.float32)

    # the camera ----------------------------------------------------------------------------------------------

    def frame(self, t: float) -> np.ndarray:
        albedo = self.albedo.copy()
        self._draw_actors(albedo, t)
        infrared = self.s.ir_switch is not None and t >= self.s.ir_switch
        if infrared:
            grey = albedo @ np.array([0.2, 0.5, 0.3], np.float32)
            grey = np.where(self.vegetation, 0.7, grey)  # leaves reflect near infrared
            h, w = SIZE
            lamp = 0.6 + 0.8 * np.exp(-((self.xx - w / 2) ** 2 + (self.yy - h / 2) ** 2) / (0.45 * w) ** 2)
            radiance = np.repeat((grey * lamp * 0.3)[..., None], 3, axis=2)
        else:
            radiance = albedo * self._light(t)
        # auto-exposure: slowly toward a mean of 0.18 in linear light (a scene's exposure steps are its light)
        target = 0.18 / max(float(radiance.mean()), 1e-4)
        dt = max(t - self.last_t, 0.0)
        self.last_t = t
        if self.exposure is None:
            self.exposure = target
        else:
            self.exposure += (target - self.exposure) * (1.0 - math.exp(-dt / 6.0))
        gain = 8.0 if (self.s.night or infrared) else 1.0
        signal = np.clip(radiance * self.exposure, 0.0, 1.2)
        if infrared:  # the ISP outputs one grey plane in infrared: one noise for all three channels
            signal = signal[..., :1]
        electrons = signal * 6000.0 / gain
        noisy = self.rng.poisson(electrons).astype(np.float32) + self.rng.normal(0.0, 2.0, electrons.shape)
        signal = np.clip(noisy * gain / 6000.0, 0.0, 1.0).astype(np.float32)
        if infrared:
            signal = np.repeat(signal, 3, axis=2)
        srgb = np.where(signal <= 0.0031308, 12.92 * signal, 1.055 * np.power(signal, 1 / 2.4) - 0.055)
        img = np.clip(srgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        shake = self.s.shake_px
        dx, dy = self.rng.uniform(-shake, shake, 2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(img, m, (SIZE[1], SIZE[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def frames(scene: Scene, jpeg_quality: int = 60) -> Iterator[Frame]:
    court = Courtyard(scene)
    n = int(scene.seconds * SAMPLE_FPS)
    for i in range(n):
        t = i / SAMPLE_FPS
        img = court.frame(t)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        assert ok
        img = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        yield Frame(i, EPOCH + t, t, img)


def write_scene(path: Path, scene: Scene, fps: int = 5) -> Path:
    """The scene as an MP4 (H.264, a keyframe a second, no B-frames, 400 kbit/s at 5 fps), for a file camera."""
    from clips import write_h264  # the one H.264 writer of the tests and the bench (tools/clips.py)

    court = Courtyard(scene)
    return write_h264(path, scene.seconds, fps, SIZE, gop=fps, preset="veryfast", b_frames=0, bitrate=80_000 * fps,
                      image=lambda i: court.frame(i / fps))


# -- the classes ---------------------------------------------------------------------------------------------------

_COLOURS = [(0.55, 0.04, 0.04), (0.03, 0.05, 0.35), (0.6, 0.45, 0.03), (0.03, 0.3, 0.06), (0.7, 0.7, 0.68),
            (0.03, 0.03, 0.035), (0.5, 0.15, 0.02), (0.35, 0.35, 0.37)]


def _actor(rng: np.random.Generator, start: float, area: float | None = None, duration: float | None = None,
           colour: tuple[float, float, float] | None = None, kind: str | None = None) -> Actor:
    kind = kind or ("person" if rng.random() < 0.6 else "car")
    x0 = float(rng.choice([-0.05, 1.05]))
    x1 = float(0.2 + 0.6 * rng.random())
    return Actor(kind, colour or _COLOURS[int(rng.integers(0, len(_COLOURS)))],
                 area if area is not None else float(0.02 + 0.04 * rng.random()), x0, x1,
                 float(0.55 + 0.3 * rng.random()), start, duration if duration is not None else float(2 + 2 * rng.random()))


def scenes(quick: bool) -> list[Scene]:
    """Every class's clips (``quick``: fewer and shorter, for the test run)."""
    rng = np.random.default_rng(20261207)
    reps = 2 if quick else 6
    out: list[Scene] = []
    for i in range(reps):
        seed = 1000 + i
        out.append(Scene(f"shadows-{i}", "shadows", 120 if quick else 300, seed, clouds=6.0))
        events = tuple(_actor(rng, 20 + 25 * k) for k in range(4))
        out.append(Scene(f"shadow-events-{i}", "shadow-events", 120, seed + 50, events=events, clouds=6.0))
        sweeps = tuple(10.0 + 12.0 * k for k in range(9 if quick else 24))
        out.append(Scene(f"headlights-{i}", "headlights", sweeps[-1] + 10, seed + 100, night=True, headlights=sweeps))
        lit = tuple(20.0 + 20.0 * k for k in range(4))
        out.append(Scene(f"headlight-events-{i}", "headlight-events", 110, seed + 150, night=True, headlights=lit,
                         events=tuple(_actor(rng, t + 2.5, colour=(0.7, 0.7, 0.68)) for t in lit)))
        grey_events = (_actor(rng, 20, area=0.25, duration=4.0, colour=(0.6, 0.03, 0.03), kind="car"),
                       *(_actor(rng, 45 + 20 * k, colour=_COLOURS[k % 4]) for k in range(3)))
        out.append(Scene(f"grey-colour-{i}", "grey-colour", 120, seed + 200, grey=True, events=grey_events))
        delay = [0.5, 1.0, 1.5, 2.0][i % 4]
        out.append(Scene(f"after-ir-{i}", "after-switch", 60, seed + 300, ir_switch=30.0,
                         events=(_actor(rng, 30.0 + delay, duration=3.0),)))
        factor = [0.4, 2.5, 0.5, 2.0][i % 4]
        out.append(Scene(f"after-exposure-{i}", "after-switch", 60, seed + 350, exposure_steps=((30.0, factor),),
                         events=(_actor(rng, 30.0 + delay, duration=3.0),)))
        out.append(Scene(f"first-seconds-{i}", "first-seconds", 30, seed + 400,
                         events=(_actor(rng, [0.5, 1.5, 2.5, 4.0][i % 4], duration=3.0),)))
        steps = tuple((15.0 + 15.0 * k, [0.4, 2.5, 1.0, 0.6, 1.8, 1.0][k % 6]) for k in range(7 if quick else 19))
        out.append(Scene(f"exposure-{i}", "exposure", steps[-1][0] + 15, seed + 500, exposure_steps=steps))
        out.append(Scene(f"shake-{i}", "shake", 120 if quick else 300, seed + 600, shake_px=4.0))
    for i in range(1 if quick else 3):
        busy = tuple(_actor(rng, 5.0 + 13.0 * k, duration=float(2.5 + 0.5 * (k % 2)),
                            colour=_COLOURS[k % len(_COLOURS)]) for k in range(12))
        out.append(Scene(f"busy-{i}", "busy", 165, 1900 + i, events=busy))
    return out


# -- running and judging -------------------------------------------------------------------------------------------


@dataclass
class Result:
    scene: Scene
    stars: list[list[float]] = field(default_factory=list)  # media times of the frames of each star at the end
    admissions: list[tuple[float, str]] = field(default_factory=list)
    cpu_s: float = 0.0
    pairs: int = 0


def run(scene: Scene) -> Result:
    scorer = NewScorer()
    for frame in frames(scene):
        scorer.add(frame)
    return Result(scene, scorer.finish(), list(scorer.admissions), scorer.cpu, scorer.scored)


def judge(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Per class: recall of events >= 2% lasting >= 2 s (admitted while they show), false stars (admissions of
    pairs that show no event, the scene's first pair aside) per hour, and for busy clips the events still stars
    at the end."""
    table: dict[str, dict[str, Any]] = {}
    for r in results:
        row = table.setdefault(r.scene.cls, {"clips": 0, "hours": 0.0, "events": 0, "recalled": 0,
                                             "false_stars": 0, "missed": [], "kept": [], "ms_per_pair": []})
        row["clips"] += 1
        row["hours"] += r.scene.seconds / 3600.0
        later = [t for t, _ in r.admissions if t >= 2.0 / SAMPLE_FPS]
        row["false_stars"] += sum(1 for t in later if not _shows_event(r.scene, t))
        for a in r.scene.events:
            if a.area < 0.02 or a.duration < 2.0:
                continue
            row["events"] += 1
            if any(a.start - 1.0 <= t < a.end for t in later):
                row["recalled"] += 1
            else:
                row["missed"].append(f"{r.scene.name}@{a.start:g}")
        if r.scene.cls == "busy":
            kept = sum(1 for a in r.scene.events if any(a.start - 1.0 <= t < a.end for s in r.stars for t in s))
            row["kept"].append(kept)
        if r.pairs:
            row["ms_per_pair"].append(1e3 * r.cpu_s / r.pairs)
    for row in table.values():
        row["recall"] = round(row["recalled"] / row["events"], 3) if row["events"] else None
        row["false_per_hour"] = round(row["false_stars"] / row["hours"], 1) if row["hours"] else 0.0
        row["ms_per_pair"] = round(float(np.mean(row["ms_per_pair"])), 2) if row["ms_per_pair"] else None
        row["hours"] = round(row["hours"], 3)
    return table


def markdown(table: dict[str, dict[str, Any]]) -> str:
    lines = ["| class | clips | minutes | events | recall | false stars | per hour | busy: kept of 12 | ms/pair |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cls, row in table.items():
        lines.append(f"| {cls} | {row['clips']} | {row['hours'] * 60:.1f} | {row['events']} | "
                     f"{row['recall'] if row['recall'] is not None else '-'} | {row['false_stars']} | "
                     f"{row['false_per_hour']} | {row['kept'] or '-'} | {row['ms_per_pair']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="every clip (slow); default: the quick subset")
    parser.add_argument("--classes", nargs="*", help="only these classes")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    parser.add_argument("--save", type=Path, help="write a PNG of each clip's frame at each event's start here")
    args = parser.parse_args(argv)
    chosen = [s for s in scenes(quick=not args.full) if not args.classes or s.cls in args.classes]
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for s in chosen:
            court = Courtyard(s)
            for k, t in enumerate([0.0] + [a.start + 1.0 for a in s.events] + [h + 1.2 for h in s.headlights[:1]]):
                cv2.imwrite(str(args.save / f"{s.name}-{k}.png"), cv2.cvtColor(court.frame(t), cv2.COLOR_RGB2BGR))
    t0 = time.time()
    results = [run(s) for s in chosen]
    table = judge(results)
    print(markdown(table))
    print(f"\n{len(chosen)} clips in {time.time() - t0:.0f} s")
    for cls, row in table.items():
        if row["missed"]:
            print(f"{cls}: missed {', '.join(row['missed'][:12])}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
