"""Stored frame files: JPEG encoding, and the metadata each file carries about its pair.

Every JPEG the frame store writes carries its pair's metadata in a JPEG comment (COM) segment right after the SOI
marker: a small JSON object ``{"lw":1,"camera":..,"id":..,"seq":[..],"wall":[..],"mono":[..],"single":..,
"importance":..,"frame":0|1}``. Decoders ignore COM segments, so the pixels are unchanged, and the store's index
can be rebuilt from the files alone (``store.py``). Reading is defensive: a file is the attacker's too (anything
in the state directory may be corrupt), so anything that is not exactly what ``FrameMeta.to_json`` writes reads
as None. Pure: bytes in, bytes or values out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

META_MAX_BYTES = 1024  # a real payload is ~250 bytes (camera names are at most 64 characters)

_META_KEYS = {"lw", "camera", "id", "seq", "wall", "mono", "single", "importance", "frame"}
_SOI = b"\xff\xd8"
_COM = b"\xff\xfe"


@dataclass
class PairRecord:
    """One stored pair. ``jpegs`` holds the encoded frames (1 for a lone frame, else 2) until persisted."""

    id: int
    seq: tuple[int, int]
    wall: tuple[float, float]
    mono: tuple[float, float]
    single: bool
    importance: float
    in_window: bool
    is_star: bool
    jpegs: tuple[bytes, ...] = field(default=(), repr=False)
    why: str = ""  # a star's reason for being one (StarMemory's decision), else ""

    @property
    def nbytes(self) -> int:
        return sum(len(j) for j in self.jpegs)


@dataclass(frozen=True)
class FrameMeta:
    """The metadata one stored JPEG carries about its pair; ``frame`` is 0 or 1 (which file of the pair)."""

    camera: str
    id: int
    seq: tuple[int, int]
    wall: tuple[float, float]
    mono: tuple[float, float]
    single: bool
    importance: float
    frame: int

    @classmethod
    def of(cls, camera: str, record: PairRecord, frame: int) -> FrameMeta:
        return cls(camera, record.id, record.seq, record.wall, record.mono, record.single, record.importance, frame)

    def same_pair(self, other: FrameMeta) -> bool:
        return (self.camera, self.id, self.seq, self.wall, self.mono, self.single, self.importance) == (
            other.camera, other.id, other.seq, other.wall, other.mono, other.single, other.importance,
        )

    def to_json(self) -> bytes:
        """Compact JSON; raises ValueError when a value cannot be stored (non-finite) or it exceeds the bound."""
        payload = json.dumps(
            {"lw": 1, "camera": self.camera, "id": self.id, "seq": list(self.seq), "wall": list(self.wall),
             "mono": list(self.mono), "single": self.single, "importance": self.importance, "frame": self.frame},
            separators=(",", ":"), allow_nan=False, ensure_ascii=True,
        ).encode("ascii")
        if len(payload) > META_MAX_BYTES:
            raise ValueError(f"frame metadata is {len(payload)} bytes, over {META_MAX_BYTES}")
        return payload

    @classmethod
    def from_json(cls, payload: bytes) -> FrameMeta | None:
        """The metadata in ``payload``, or None for anything that is not exactly what ``to_json`` writes."""
        if len(payload) > META_MAX_BYTES:
            return None
        try:
            obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not isinstance(obj, dict) or not _META_KEYS <= obj.keys() or not _is_int(obj["lw"]) or obj["lw"] != 1:
            return None
        fields: dict[str, Any] = obj
        camera, pid, single, imp, frame = (fields[k] for k in ("camera", "id", "single", "importance", "frame"))
        seq, wall, mono = fields["seq"], fields["wall"], fields["mono"]
        if not (isinstance(camera, str) and 0 < len(camera) <= 255 and "/" not in camera):
            return None
        if not (_is_int(pid) and 0 <= pid < 2**62 and isinstance(single, bool) and _is_number(imp)):
            return None
        if not (_is_int(frame) and frame in (0, 1) and not (single and frame == 1)):
            return None
        if not (_pair_of(seq, _is_int) and all(abs(s) < 2**62 for s in seq)):
            return None
        if not (_pair_of(wall, _is_number) and _pair_of(mono, _is_number)):
            return None
        return cls(camera, pid, (seq[0], seq[1]), (float(wall[0]), float(wall[1])),
                   (float(mono[0]), float(mono[1])), single, float(imp), frame)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a stored value")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**62


def _pair_of(value: object, check: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(check(v) for v in value)


# -- JPEG comment segment -----------------------------------------------------------------------------------------


def add_jpeg_comment(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with a COM segment holding ``payload`` right after SOI, replacing one already there.

    Replacing makes it idempotent, so a retried write does not stack segments. Raises ValueError for data that
    does not start with SOI or a payload that does not fit a segment.
    """
    if not jpeg.startswith(_SOI):
        raise ValueError("not a JPEG (no SOI marker)")
    if len(payload) > 0xFFFF - 2:
        raise ValueError(f"a JPEG comment holds at most {0xFFFF - 2} bytes, not {len(payload)}")
    body = strip_jpeg_comment(jpeg)[2:]
    return _SOI + _COM + (len(payload) + 2).to_bytes(2, "big") + payload + body


def read_jpeg_comment(data: bytes) -> bytes | None:
    """The payload of a COM segment right after SOI, or None when there is none or its length is impossible."""
    if len(data) < 6 or not data.startswith(_SOI) or data[2:4] != _COM:
        return None
    length = int.from_bytes(data[4:6], "big")
    if length < 2 or 4 + length > len(data):
        return None
    return data[6 : 4 + length]


def strip_jpeg_comment(data: bytes) -> bytes:
    """``data`` without a COM segment right after SOI (unchanged when there is none)."""
    payload = read_jpeg_comment(data)
    return data if payload is None else _SOI + data[6 + len(payload) :]


def tag_jpeg(jpeg: bytes, meta: FrameMeta) -> bytes:
    return add_jpeg_comment(jpeg, meta.to_json())


def read_frame_meta(data: bytes) -> FrameMeta | None:
    """The store's metadata of a JPEG file's first bytes, or None (no segment, not ours, malformed)."""
    payload = read_jpeg_comment(data)
    return None if payload is None else FrameMeta.from_json(payload)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


MAX_DECODED_PIXELS = 4096 * 4096  # the largest frame the model's pixel cap allows (model.max_pixels' bound)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding; None when there is none."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def decode_jpeg(data: bytes) -> np.ndarray | None:
    """RGB pixels, or None for data that is not a JPEG or declares a picture over MAX_DECODED_PIXELS (a 600-byte
    file can declare gigabytes: the size is read from the header before anything is allocated)."""
    size = jpeg_size(data) if data.startswith(_SOI) else None
    if size is None or size[0] * size[1] > MAX_DECODED_PIXELS:
        return None
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def thumbnail(data: bytes, max_side: int, quality: int = 85) -> bytes | None:
    """A JPEG scaled down to fit ``max_side`` (never up), without the store's metadata; None if not decodable."""
    image = decode_jpeg(data)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return encode_jpeg(image, quality)
