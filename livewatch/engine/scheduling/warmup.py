"""Start-up warm-up: one synthetic camera through every engine path before the daemon says it is ready.

On a GPU the first call of each kernel costs far more than later ones (module loading, cuBLAS heuristics,
allocator growth): measured on an H100, a cold daemon took 4.3 s to encode its first 7 frame pairs and 1.3 s for
the next batch, against ~80 ms warm. So the worker runs, at start-up, a camera of synthetic 16:9 frames (the
shape of 720p and 1080p cameras after the pixel cap; from ``engine.synthetic``, as the tests' and the bench's)
through a full prefix build, an in-place extension, a partial rebuild (the window sliding), a batched answer and
an unbatched one, then forgets it. Before that, the vision tower checks and captures its graphs for that frame
grid at every batch size (other grids are checked and captured when a camera of that size first arrives). The camera's name cannot be a user camera's (names have no spaces).
"""

from __future__ import annotations

import time
from typing import Any

from livewatch.engine.batch import BatchDecoder
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.scheduling.loop import EngineLoop, answer_now
from livewatch.engine.prompting.preprocess import target_size
from livewatch.engine.synthetic import pairs as synthetic_pairs

CAMERA = "warm up"
FRAME_SIZE = (720, 1280)  # (height, width)


def warm_up(core: EngineCore, batch: BatchDecoder, tokens: int = 4) -> dict[str, Any]:
    """Run the synthetic camera through the engine's paths; returns the seconds of each step and the kinds of
    prefix update it went through. Leaves no trace: the camera is dropped, no decode slot keeps its prefix, the
    decode counters start from zero."""
    pairs = synthetic_pairs(5, FRAME_SIZE)
    params = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
    steps: dict[str, float] = {}

    kinds: list[str] = []

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        steps[name] = round(time.perf_counter() - t0, 3)

    def encode() -> None:
        kinds.append(core.encode(CAMERA).kind.value)

    loop = EngineLoop(core, batch)  # the daemon's own step, with a scheduler of its own

    def batched_answer() -> None:
        answer_now(loop, CAMERA, "What happens?", params)

    spec = core.lm.spec
    h, w = target_size(*FRAME_SIZE, spec)
    # the vision tower's check and CUDA graphs for the grid of 720p/1080p cameras, every batch size
    timed("vision_graphs", lambda: core.encoder.tower.prepare((1, h // spec.patch_size, w // spec.patch_size)))
    # a lone camera's prefix-update graphs, every token bucket (else the first update of each size pays its capture)
    timed("prefill_graphs", core.encoder.prefiller.prepare_graphs)
    try:
        core.set_context(CAMERA, pairs[:3], 1)
        timed("build", encode)
        core.set_context(CAMERA, pairs[:4], 2)
        timed("extend", encode)
        core.set_context(CAMERA, pairs[:1] + pairs[2:5], 3)  # a pair leaves the middle: the rest is recomputed
        timed("rebuild", encode)
        timed("batched_answer", batched_answer)
        timed("unbatched_answer", lambda: core.ask(CAMERA, "And now?", params))
    finally:
        core.drop_camera(CAMERA)
        batch.forget_prefixes()
        batch.reset_counters()  # status counts the users' decode steps only
    return {**steps, "seconds": round(sum(steps.values()), 3), "prefix_updates": kinds}
