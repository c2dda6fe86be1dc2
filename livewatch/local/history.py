"""Questions about a time range of a camera's past (``ask`` with ``since``/``until``).

The pairs of the range come from the camera's memory and its history on disk (memory.range_pairs: all of them if
they fit the live context's size, else the most important half and the rest spread evenly), with their real
timestamps (long gaps shortened as for live contexts). They become a temporary context of its own in the engine,
under a name no camera can have, encoded and answered like a live one, then dropped: the camera's live prefix is
never touched, so its next question still reuses it. The answer's metrics say which range and how many pairs;
its evidence names the camera's own frame URLs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import tzinfo

from livewatch.engine.results import SamplingParams, TemporaryContext
from livewatch.engine.scheduling.worker import EngineWorker
from livewatch.errors import ErrorCode, RequestError, TimeRangeError
from livewatch.local.camera import CameraRuntime
from livewatch.server.protocol import Answered, Ask
from livewatch.timerange import parse_range

_ids = itertools.count(1)


async def ask_history(runtime: CameraRuntime, worker: EngineWorker, request: Ask, params: SamplingParams,
                      on_text: Callable[[str], None], client: str, tz: tzinfo | None, max_pairs: int) -> Answered:
    """Answer ``request`` over at most ``max_pairs`` pairs of the camera's range."""
    try:
        since, until = parse_range(request.since, request.until, time.time(), tz)
    except TimeRangeError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, str(exc)) from None
    camera = runtime.name
    pairs = await runtime.range_pairs(since, until, max_pairs)
    if not pairs:
        raise RequestError(ErrorCode.NO_FRAMES, f"camera {camera!r} has no frames between those times")
    temporary = TemporaryContext(camera, "history", next(_ids))
    worker.publish(temporary, pairs, 1)
    try:
        answer = await worker.ask(temporary, request.question, params, on_text, str(request.id), client)
    finally:
        worker.remove_camera(temporary)
    metrics = {**answer.metrics, "range": {"since": since, "until": until, "pairs": len(pairs),
                                           "first_frame_time": pairs[0].time, "last_frame_time": pairs[-1].end_time}}
    evidence = [{**item, "url": f"/frames/{camera}/{item['frame_id']}.jpg"} for item in answer.evidence]
    return Answered(answer.text, metrics, evidence)
