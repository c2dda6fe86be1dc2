"""Finding moments: which stretches of the cameras' memory and history show something (``find``).

Each camera's pairs of the range (memory and history) are cut into chunks of ``CHUNK_PAIRS`` consecutive pairs
(8 s at 1 fps). A chunk is scored like a watch: its pairs become a context of their own in the engine and P(yes) of
the query is read from the first answer position (``EngineWorker.score``); ``WAVE`` chunks are in the engine at
once, so they are encoded and evaluated together, at the priority of encodes and watches (questions first). A
progress message follows each wave; the result is the ``top`` chunks by P(yes), each a moment: camera, the time
range of its frames, P(yes), and the frame of its middle pair as evidence. Cancelling the request (``cancel``, or
the client going away) stops between two waves and drops the chunks in the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import Any

from livewatch.engine.results import TemporaryContext
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.errors import ErrorCode, RequestError, TimeRangeError
from livewatch.local.camera import CameraRuntime
from livewatch.server.watchproto import Find
from livewatch.timerange import parse_range

CHUNK_PAIRS = 4
WAVE = 8
_ids = itertools.count(1)


async def find(cameras: Mapping[str, CameraRuntime], worker: EngineWorker, tz: tzinfo | None, request: Find,
               progress: Callable[[int, int], None]) -> list[dict[str, Any]]:
    """The best moments of ``request`` over ``cameras`` (all of them when the request names none)."""
    try:
        since, until = parse_range(request.since, request.until, time.time(), tz)
    except TimeRangeError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, str(exc)) from None
    names = list(request.cameras) if request.cameras else sorted(cameras)
    unknown = [n for n in names if n not in cameras]
    if unknown:
        raise RequestError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {unknown[0]!r}")
    chunks: list[tuple[CameraRuntime, list[Any]]] = []
    for name in names:
        items = await cameras[name].range_items(since, until)
        chunks += [(cameras[name], items[i : i + CHUNK_PAIRS]) for i in range(0, len(items), CHUNK_PAIRS)]
    moments: list[dict[str, Any]] = []
    done = 0
    progress(done, len(chunks))
    for start in range(0, len(chunks), WAVE):
        wave = chunks[start : start + WAVE]
        moments += [m for m in await asyncio.gather(*(_score(worker, camera, items, request.query)
                                                      for camera, items in wave)) if m is not None]
        done += len(wave)
        progress(done, len(chunks))
    moments.sort(key=lambda m: -m["probability"])
    return moments[: request.top]


async def _score(worker: EngineWorker, camera: CameraRuntime, items: list[Any], query: str) -> dict[str, Any] | None:
    pairs = await camera.load_items(items)
    if not pairs:
        return None
    p = await worker.score(TemporaryContext(camera.name, "find", next(_ids)), pairs, query)
    middle = pairs[len(pairs) // 2]
    name = camera.name
    return {"camera": name, "since": pairs[0].time, "until": pairs[-1].end_time, "probability": round(p, 4),
            "frame_id": middle.id, "frame_url": f"/frames/{name}/{middle.id}.jpg"}
