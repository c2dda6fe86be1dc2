"""Synthetic camera footage with known events and known distractors, generated at run time (no downloads).

Used by ``tests/test_importance.py``, ``tests/test_event_suite.py``, ``tests/test_star_daemon.py`` and
``tools/bench_memory.py``. Independent of livewatch (numpy, OpenCV, PyAV only), so the scenes mean the same thing
to any scorer measured on them.

A scene is built once per clip from its seed: a sky gradient, buildings with windows, a textured verge, a road
with lane marks, a tree with fine leaf texture, a smooth vignette; all in linear light. Each frame then goes
through a small camera model: exposure gain (and its steps and drift) in linear light, a gamma-2.2 encode, an
optional brightness offset in grey levels, sensor noise of sigma 1.2 grey levels (+-2 for most pixels; sigma 3.5
in night mode) and clipping to 8 bits. Written to disk, the frames are H.264 (libx264, ``veryfast``) at a
camera-like bitrate: 400 kbit/s for 640x360 at 5 fps with a 1 s GOP, i.e. about 10 KB a frame, the bits per
pixel of a 1080p25 main stream at 4 Mbit/s on its keyframes (tests write 2 fps at the same bits per frame).

Events (``Thing``) are objects that appear at a place, stay ``duration`` seconds drifting slightly, and leave:
people (dark or bright clothing), cars (any colour), vans, boxes, 1-30% of the frame. Distractors are the
nuisances a camera sees all day: ``noise`` (always present), ``exposure`` (gain steps of x1.3 / x0.77 and
brightness steps of +-15 / +-30 grey levels every 12 s), ``drift`` (exposure swinging +-35% over 10 minutes and a
light gradient sweeping the scene), ``foliage`` (the tree's leaves swaying and jittering every frame), ``rain``
(streaks and a darker scene), ``fan`` (a rotating three-blade fan, 1.5% of the frame, aliased at 1 fps), and
``night`` (the camera's switch to infrared monochrome half-way: grey image, vegetation bright, IR-lamp hot spot,
more noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

CLIP_SIZE = (360, 640)  # (height, width) of written clips: a camera's substream
CLIP_FPS = 5
BITS_PER_FRAME = 80_000  # 400 kbit/s at 5 fps: ~10 KB a frame
MEMORY_SIZE = (224, 420)  # the default model cap (100,352 pixels) of a 16:9 frame: what the memory sees
NOISE_SIGMA = 1.2
NIGHT_NOISE_SIGMA = 3.5


def _lin(rgb: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(rgb, dtype=np.float32) / 255.0) ** 2.2


# colours of event objects (sRGB); every one differs from the road and verge in luma or in chroma
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (190, 30, 35),
    "white": (235, 235, 230),
    "dark": (35, 35, 40),
    "blue": (30, 60, 170),
    "yellow": (230, 190, 40),
    "silver": (170, 172, 178),
    "green": (40, 120, 60),
    "orange": (220, 110, 30),
}


@dataclass(frozen=True)
class Thing:
    """An event: an object that appears at (x, y) (normalised centre) at ``start`` and leaves ``duration`` s later."""

    kind: str  # person | car | van | box
    colour: str
    area: float  # fraction of the frame it covers
    x: float
    y: float
    start: float
    duration: float
    drift: tuple[float, float] = (0.0, 0.0)  # normalised units per second

    @property
    def end(self) -> float:
        return self.start + self.duration

    def visible(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Clip:
    name: str
    seconds: float
    seed: int = 0
    events: tuple[Thing, ...] = ()
    distractors: tuple[str, ...] = ("noise",)

    def describe(self) -> str:
        return f"{self.name} ({self.seconds:g} s, {len(self.events)} events, {'+'.join(self.distractors)})"


# -- the scene ---------------------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((max(cells * h // w, 2), cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _fractal(rng: np.random.Generator, h: int, w: int, octaves: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for cells in octaves:
        out += amp * _value_noise(rng, h, w, cells)
        amp *= 0.55
    return out / max(float(np.abs(out).max()), 1e-6)


def _sprite(kind: str, colour: str, area_px: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rgb linear float32, alpha float32) of an object whose alpha sums to about ``area_px``."""
    aspect = {"person": 0.38, "car": 2.2, "van": 1.5, "box": 1.0}[kind]  # width / height
    for _ in range(3):
        hgt = max(int(round(math.sqrt(area_px / aspect) * 1.08)), 4)
        wid = max(int(round(hgt * aspect)), 3)
        alpha = np.zeros((hgt, wid), np.float32)
        body = np.ones((hgt, wid, 3), np.float32) * _lin(COLOURS[colour])
        if kind == "person":
            head = max(hgt // 7, 1)
            cv2.ellipse(alpha, (wid // 2, head), (max(wid // 4, 1), head), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
            cv2.ellipse(alpha, (wid // 2, int(hgt * 0.42)), (max(wid // 2 - 1, 1), int(hgt * 0.28)), 0, 0, 360, 1.0,
                        -1, cv2.LINE_AA)
            cv2.rectangle(alpha, (wid // 5, int(hgt * 0.55)), (wid - 1 - wid // 5, hgt - 1), 1.0, -1)
            body[: 2 * head] = _lin((200, 160, 130))  # face
            body[int(hgt * 0.6):] *= 0.55  # trousers darker than the jacket
        else:
            radius = max(min(hgt, wid) // 6, 1)
            cv2.rectangle(alpha, (radius, 0), (wid - 1 - radius, hgt - 1), 1.0, -1)
            cv2.rectangle(alpha, (0, radius), (wid - 1, hgt - 1 - radius), 1.0, -1)
            if kind in ("car", "van"):
                top = int(hgt * (0.45 if kind == "car" else 0.3))
                body[int(hgt * 0.12): top, int(wid * 0.15): int(wid * 0.85)] = _lin((40, 50, 60))  # windows
                body[int(hgt * 0.78):] *= 0.35  # bumper, wheels' shadow
                wheel = max(hgt // 6, 1)
                for cx in (int(wid * 0.22), int(wid * 0.78)):
                    cv2.circle(body, (cx, hgt - wheel), wheel, tuple(float(v) for v in _lin((20, 20, 20))), -1)
        shade = np.linspace(1.1, 0.75, hgt, dtype=np.float32)[:, None, None]
        texture = 1.0 + 0.08 * _value_noise(rng, hgt, wid, max(wid // 3, 2))[..., None]
        body = body * shade * texture
        alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
        got = float(alpha.sum())
        if abs(got - area_px) < 0.05 * area_px:
            break
        area_px *= area_px / max(got, 1.0)
    return body, alpha


class Renderer:
    """Frames of one clip at one size: ``frame(t)`` is the camera's picture at media time ``t``."""

    def __init__(self, clip: Clip, size: tuple[int, int] = CLIP_SIZE) -> None:
        self.clip = clip
        self.size = size
        h, w = size
        rng = np.random.default_rng(clip.seed)
        self.rng = np.random.default_rng(clip.seed + 1_000_003)
        yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        xx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
        horizon = 0.42 + 0.04 * rng.standard_normal()
        img = np.empty((h, w, 3), np.float32)
        sky = np.clip(yy / horizon, 0, 1)[..., None]
        img[:] = (1 - sky) * _lin((110, 150, 210)) + sky * _lin((200, 210, 225))
        clouds = np.clip(_fractal(rng, h, w, (4, 9)), 0, 1)[..., None] * 0.25
        img = img + clouds * (yy < horizon)[..., None]
        # buildings along the horizon
        x0 = 0.0
        while x0 < 1.0:
            bw = float(rng.uniform(0.08, 0.2))
            top = horizon - float(rng.uniform(0.08, 0.3))
            colour = _lin(tuple(int(c) for c in rng.choice([(150, 90, 70), (170, 165, 155), (200, 190, 160),
                                                              (120, 120, 130)])))
            xa, xb, ya, yb = int(x0 * w), int(min(x0 + bw, 1.0) * w), int(top * h), int(horizon * h) + 1
            img[ya:yb, xa:xb] = colour * (0.9 + 0.1 * _fractal(rng, yb - ya, max(xb - xa, 1), (6,))[..., None])
            for wy in range(ya + 4, yb - 4, max(h // 40, 4)):
                for wx in range(xa + 3, xb - 3, max(w // 60, 4)):
                    img[wy: wy + max(h // 90, 2), wx: wx + max(w // 160, 2)] = _lin((50, 60, 75))
            x0 += bw + float(rng.uniform(0.0, 0.05))
        # ground: textured verge, a road with lane marks
        ground = yy >= horizon
        verge = _lin((95, 110, 70)) * (0.8 + 0.35 * _fractal(rng, h, w, (8, 24, 64))[..., None])
        img = np.where(ground[..., None], verge, img)
        road_top, road_bottom = horizon + 0.1, 0.92
        road = (yy >= road_top) & (yy < road_bottom)
        asphalt = _lin((92, 92, 96)) * (0.9 + 0.15 * _fractal(rng, h, w, (16, 60))[..., None])
        img = np.where((road & (xx >= 0))[..., None], asphalt, img)
        lane_y = int((road_top + road_bottom) / 2 * h)
        for lx in range(0, w, w // 8):
            img[lane_y - max(h // 180, 1): lane_y + max(h // 180, 1), lx: lx + w // 16] = _lin((220, 220, 210))
        # a tree on the left: trunk and a crown of fine leaf texture (the part that sways with ``foliage``)
        self.tree_box = (int(0.02 * h), int(0.62 * h), int(0.0 * w), int(0.26 * w))  # y0, y1, x0, x1
        ty0, ty1, tx0, tx1 = self.tree_box
        th, tw = ty1 - ty0, tx1 - tx0
        crown = np.zeros((th, tw), np.float32)
        cv2.ellipse(crown, (tw // 2, int(th * 0.4)), (int(tw * 0.45), int(th * 0.38)), 0, 0, 360, 1.0, -1,
                    cv2.LINE_AA)
        leaves = _lin((45, 95, 35)) * (0.55 + 0.9 * np.clip(0.5 + _fractal(rng, th, tw, (12, 40, 90)), 0, 1))[..., None]
        trunk = np.zeros((th, tw), np.float32)
        cv2.rectangle(trunk, (int(tw * 0.45), int(th * 0.6)), (int(tw * 0.55), th - 1), 1.0, -1)
        tree = img[ty0:ty1, tx0:tx1].copy()
        tree = np.where(trunk[..., None] > 0, _lin((70, 50, 35)), tree)
        self.tree_bg = tree
        self.leaves = leaves.astype(np.float32)
        self.crown = crown
        img[ty0:ty1, tx0:tx1] = tree * (1 - crown[..., None]) + leaves * crown[..., None]
        self.vignette = (1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2).astype(np.float32)
        self.base = (img * self.vignette[..., None]).astype(np.float32)
        self.vegetation = ((ground & ~road) | np.zeros((h, w), bool)).astype(np.float32)
        self.vegetation[ty0:ty1, tx0:tx1] = np.maximum(self.vegetation[ty0:ty1, tx0:tx1], crown)
        self.sprites = [_sprite(e.kind, e.colour, e.area * h * w, rng) for e in clip.events]
        self.fan_centre = (int(0.82 * w), int(0.2 * h))
        self.fan_radius = int(math.sqrt(0.015 * h * w / math.pi))
        self.noise_bank = [rng.standard_normal((h, w, 3)).astype(np.float32) for _ in range(4)]
        self.lut = np.clip(np.linspace(0, 1, 4096, dtype=np.float32) ** (1 / 2.2) * 255.0, 0, 255).astype(np.float32)

    # -- per frame --------------------------------------------------------------------------------------------

    def _exposure(self, t: float) -> tuple[float, float]:
        """(gain in linear light, offset in grey levels) at time ``t``."""
        gain, offset = 1.0, 0.0
        d = self.clip.distractors
        if "exposure" in d:
            step = int(t // 12.0)
            pattern = [(1.0, 0.0), (1.3, 0.0), (1.0, 15.0), (0.77, 0.0), (1.0, 30.0), (1.0, -15.0), (1.3, 15.0),
                       (1.0, -30.0)]
            g, o = pattern[step % len(pattern)]
            gain, offset = gain * g, offset + o
        if "drift" in d:
            gain *= 1.0 + 0.35 * math.sin(2 * math.pi * t / 600.0)
        if "rain" in d:
            gain *= 0.75
        return gain, offset

    def frame(self, t: float) -> np.ndarray:
        h, w = self.size
        d = self.clip.distractors
        lin = self.base.copy()
        if "foliage" in d:
            ty0, ty1, tx0, tx1 = self.tree_box
            th, tw = ty1 - ty0, tx1 - tx0
            sway = 0.012 * w * math.sin(2 * math.pi * t / 3.7) + 0.004 * w * float(self.rng.standard_normal())
            yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
            bend = (1.0 - yy / th) ** 1.5  # the crown's top moves most
            flutter = 0.003 * w * np.sin(yy / 3.0 + 7.0 * t) * np.cos(xx / 4.0 - 5.0 * t)
            mx = (xx - sway * bend - flutter).astype(np.float32)
            leaves = cv2.remap(self.leaves, mx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            crown = cv2.remap(self.crown, mx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
            lin[ty0:ty1, tx0:tx1] = (self.tree_bg * (1 - crown) + leaves * crown) * self.vignette[ty0:ty1, tx0:tx1,
                                                                                                   None]
        for thing, (body, alpha) in zip(self.clip.events, self.sprites):
            if not thing.visible(t):
                continue
            age = t - thing.start
            cx = (thing.x + thing.drift[0] * age) * w
            cy = (thing.y + thing.drift[1] * age) * h
            sh, sw = alpha.shape
            y0, x0 = int(round(cy - sh / 2)), int(round(cx - sw / 2))
            ya, yb, xa, xb = max(y0, 0), min(y0 + sh, h), max(x0, 0), min(x0 + sw, w)
            if ya >= yb or xa >= xb:
                continue
            a = alpha[ya - y0: yb - y0, xa - x0: xb - x0, None]
            lin[ya:yb, xa:xb] = lin[ya:yb, xa:xb] * (1 - a) + body[ya - y0: yb - y0, xa - x0: xb - x0] * a
        if "fan" in d:
            cx, cy = self.fan_centre
            r = self.fan_radius
            cv2.circle(lin, (cx, cy), r, tuple(float(v) for v in _lin((60, 60, 64))), -1, cv2.LINE_AA)
            angle = 2 * math.pi * 2.37 * t
            for k in range(3):
                a0 = angle + k * 2 * math.pi / 3
                pts = np.array([[cx, cy], [cx + r * 0.95 * math.cos(a0), cy + r * 0.95 * math.sin(a0)],
                                [cx + r * 0.95 * math.cos(a0 + 0.7), cy + r * 0.95 * math.sin(a0 + 0.7)]], np.int32)
                cv2.fillConvexPoly(lin, pts, tuple(float(v) for v in _lin((225, 225, 220))), cv2.LINE_AA)
        if "rain" in d:
            n = int(0.0006 * h * w)
            xs = self.rng.integers(0, w, n)
            ys = self.rng.integers(0, h, n)
            length = max(h // 30, 3)
            streaks = np.zeros((h, w), np.float32)
            for x, y in zip(xs, ys):
                cv2.line(streaks, (int(x), int(y)), (int(x) + 2, int(y) + length), 1.0, 1, cv2.LINE_AA)
            lin = lin * (1 - 0.35 * streaks[..., None]) + 0.35 * streaks[..., None] * 0.6
        gain, offset = self._exposure(t)
        night = "night" in d and t >= self.clip.seconds / 2
        if night:
            ir = lin @ np.array([0.45, 0.35, 0.2], np.float32)
            ir = ir * (1.0 + 1.6 * self.vegetation)  # chlorophyll reflects near infrared
            yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
            xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
            ir = ir * (1.3 * np.exp(-(xx ** 2 + yy ** 2) / 0.9) + 0.15)  # the IR lamp's hot spot
            lin = np.repeat(ir[..., None], 3, axis=2)
        elif "drift" in d:
            # a light gradient sweeping across the scene (sun and shade moving over minutes)
            phase = 2 * math.pi * t / 900.0
            xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
            yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
            lin = lin * (1.0 + 0.2 * (math.cos(phase) * xx + math.sin(phase) * yy))[..., None]
        idx = np.clip(lin * gain * 4095.0, 0, 4095).astype(np.int32)
        out = self.lut[idx]
        sigma = NIGHT_NOISE_SIGMA if night else NOISE_SIGMA
        noise = self.noise_bank[int(self.rng.integers(0, len(self.noise_bank)))]
        shift = (int(self.rng.integers(0, h)), int(self.rng.integers(0, w)))
        noise = np.roll(noise, shift, axis=(0, 1))
        if night:
            noise = np.repeat(noise[..., :1], 3, axis=2)
        out = out + offset + sigma * noise
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def frames(self, fps: float) -> Iterator[tuple[float, np.ndarray]]:
        for i in range(int(self.clip.seconds * fps)):
            t = i / fps
            yield t, self.frame(t)


# -- writing clips ----------------------------------------------------------------------------------------------


def write_clip(path: Path, clip: Clip, size: tuple[int, int] = CLIP_SIZE, fps: int = CLIP_FPS,
               bitrate: int | None = None) -> Path:
    """The clip as an MP4: H.264, a keyframe every second, no B-frames (like most cameras), ``bitrate`` bit/s
    (default BITS_PER_FRAME x fps, so a lower frame rate for speed keeps each sampled keyframe's quality)."""
    from clips import write_h264  # the one H.264 writer of the tests and the bench (tools/clips.py)

    renderer = Renderer(clip, size)
    return write_h264(path, clip.seconds, fps, size, gop=fps, preset="veryfast", b_frames=0,
                      bitrate=bitrate or BITS_PER_FRAME * fps, image=lambda i: renderer.frame(i / fps))


# -- the suite ---------------------------------------------------------------------------------------------------

# Places for events, spread over the road, the verge and the buildings' feet (never inside the tree), so that two
# events of one clip never share a place and every event is new to the star memory.
PLACES = [(0.36, 0.62), (0.62, 0.6), (0.86, 0.64), (0.48, 0.78), (0.74, 0.8), (0.3, 0.84), (0.9, 0.86),
          (0.56, 0.5), (0.4, 0.7), (0.7, 0.7)]
KINDS = [("person", "dark"), ("car", "red"), ("person", "white"), ("car", "blue"), ("van", "white"),
         ("box", "red"), ("car", "yellow"), ("person", "orange"), ("car", "silver"), ("person", "green")]


def event_clip(name: str, seed: int, areas: list[float], durations: list[float], lead_s: float = 12.0,
               gap_s: float = 10.0, tail_s: float = 24.0, distractors: tuple[str, ...] = ("noise",)) -> Clip:
    """Events one after another on a quiet scene: ``lead_s`` of warm-up, ``gap_s`` between events, and a tail long
    enough for a 10-pair window (20 s at 1 fps) to move past the last event."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(PLACES))
    events = []
    t = lead_s + float(rng.uniform(0.0, 0.9))
    for i, (area, duration) in enumerate(zip(areas, durations)):
        kind, colour = KINDS[(seed + i) % len(KINDS)]
        x, y = PLACES[int(order[i % len(PLACES)])]
        # big objects sit lower in the frame (closer to the camera) and must stay inside it
        y = min(y, 0.95 - math.sqrt(area) * 0.8) if area > 0.08 else y
        x = min(max(x, math.sqrt(area) * 0.9), 1 - math.sqrt(area) * 0.9)
        drift = (float(rng.uniform(-0.004, 0.004)), 0.0)
        events.append(Thing(kind, colour, area, x, y, round(t, 2), duration, drift))
        t += duration + gap_s + float(rng.uniform(0.0, 0.9))
    return Clip(name, math.ceil(t - gap_s + tail_s), seed, tuple(events), distractors)


def suite(quick: bool) -> tuple[list[Clip], list[Clip]]:
    """(event clips, distractor-only clips). Events: 1-30% of the frame, 1-10 s. ``quick``: the default test run's
    subset (every size class >= 2% with 2 s or more, one distractor clip of each kind, shorter)."""
    if quick:
        events = [
            event_clip("events-small", 11, [0.02, 0.03, 0.05, 0.02], [2.0, 3.0, 2.0, 4.0]),
            event_clip("events-large", 12, [0.1, 0.25, 0.3, 0.15], [2.0, 4.0, 3.0, 2.0], distractors=("noise",
                                                                                                       "foliage")),
        ]
        distractors = [
            Clip("exposure", 100, 21, distractors=("noise", "exposure")),
            Clip("foliage-fan", 60, 22, distractors=("noise", "foliage", "fan")),
            Clip("night", 60, 23, distractors=("noise", "drift", "night")),
        ]
        return events, distractors
    areas = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3]
    durations = [1.0, 2.0, 4.0, 6.0, 10.0]
    events = []
    seed = 100
    for i, extra in enumerate([("noise",), ("noise", "foliage"), ("noise", "exposure"), ("noise", "rain"),
                               ("noise", "fan", "drift")]):
        a = [areas[(i + k) % len(areas)] for k in range(7)]
        d = [durations[(i + 2 * k) % len(durations)] for k in range(7)]
        events.append(event_clip(f"events-{'+'.join(extra[1:]) or 'quiet'}", seed + i, a, d, distractors=extra))
    distractors = [
        Clip("noise", 180, 31, distractors=("noise",)),
        Clip("exposure", 200, 32, distractors=("noise", "exposure")),
        Clip("drift", 240, 33, distractors=("noise", "drift")),
        Clip("foliage", 180, 34, distractors=("noise", "foliage")),
        Clip("rain", 120, 35, distractors=("noise", "rain")),
        Clip("fan", 120, 36, distractors=("noise", "fan")),
        Clip("night", 180, 37, distractors=("noise", "drift", "night")),
    ]
    return events, distractors


@dataclass
class Outcome:
    """What a scorer kept from one clip: star pair times, and the moments it should have kept."""

    clip: Clip
    star_frames: list[list[float]] = field(default_factory=list)  # media times of each star pair's frames
    admitted: int = 0  # admissions to the star memory over the clip (churn)
    evicted: int = 0
    admissions: list[tuple[float, str]] = field(default_factory=list)  # (pair media time, reason)
    stats: dict = field(default_factory=dict)  # the scorer's own figures at the end (the memory's status)
    pairs: int = 0
    score_s: float = 0.0  # CPU seconds spent scoring

    def recalled(self, thing: Thing, slack: float = 0.0) -> bool:
        return any(thing.start - slack <= t < thing.end + slack for times in self.star_frames for t in times)

    def false_stars(self) -> int:
        """Stars whose frames show no event (a second's slack either side, the sampling period)."""
        return sum(1 for times in self.star_frames
                   if not any(e.start - 1.0 <= t < e.end + 1.0 for e in self.clip.events for t in times))
