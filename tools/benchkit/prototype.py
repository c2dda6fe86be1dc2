"""The prototype's method, as the baseline: all frames re-encoded at native size for the first question after a
batch, then HF generate.

At the full plan: 48 frames at 1092x1932, uncapped (grid 24x78x138 = 64,584 visual tokens), where livewatch
holds 20 pairs at the default pixel cap (120 visual tokens a pair) and encodes each pair once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchkit.common import QUESTION, Clock, Plan, free, peak_gib, peak_reset
from livewatch.engine.core import EngineCore
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.prompting.preprocess import patchify
from livewatch.engine.synthetic import image


@torch.inference_mode()
def run(lm: LoadedModel, plan: Plan) -> dict[str, Any]:
    """All frames re-encoded at native size for the first question after a batch, then HF generate."""
    clock = Clock(lm.device)
    model = lm.model
    template = EngineCore(lm, timezone="UTC").template  # livewatch's prompt, so only the method differs
    frames = np.stack([image(100 + i, plan.proto_size) for i in range(plan.proto_frames)])
    rows, grid = patchify(frames, lm.spec)
    n_visual = grid[0] * grid[1] * grid[2] // 4
    head = lm.tokenizer(template.head("You are a helpful assistant."), add_special_tokens=False)["input_ids"]
    tail = lm.tokenizer(template.tail(QUESTION), add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([head + [lm.video_token_id] * n_visual + tail], device=lm.device)
    pixels = rows.to(lm.device, lm.dtype)
    grid_t = torch.tensor([grid], device=lm.device)
    spg = torch.tensor([2.0], device=lm.device)  # 1 fps sampling: 2 s per temporal grid
    del frames, rows
    peak_reset(lm.device)

    t0 = clock.now()
    model.model.visual(pixels, grid_thw=grid_t)
    vision_s = clock.now() - t0
    t0 = clock.now()
    model(input_ids=input_ids, pixel_values_videos=pixels, video_grid_thw=grid_t, second_per_grid_ts=spg,
          use_cache=True, logits_to_keep=1)
    ttft_s = clock.now() - t0
    free(lm.device)
    n = plan.answer_tokens
    t0 = clock.now()
    out = model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values_videos=pixels,
        video_grid_thw=grid_t, second_per_grid_ts=spg, max_new_tokens=n, min_new_tokens=n, do_sample=False,
    )
    total_s = clock.now() - t0
    produced = int(out.shape[1] - input_ids.shape[1])
    decode_s = max(total_s - ttft_s, 1e-9)
    result = {
        "frames": plan.proto_frames,
        "frame_size": f"{plan.proto_size[1]}x{plan.proto_size[0]}",
        "grid_thw": list(grid),
        "visual_tokens": n_visual,
        "context_tokens": int(input_ids.shape[1]),
        "vision_ms": round(vision_s * 1e3, 1),
        "ttft_ms": round(ttft_s * 1e3, 1),
        "answer_tokens": produced,
        "answer_total_ms": round(total_s * 1e3, 1),
        "decode_tokens_per_s": round((produced - 1) / decode_s, 2),
        "peak_gib": peak_gib(lm.device),
    }
    del out, input_ids, pixels
    free(lm.device)
    return result
