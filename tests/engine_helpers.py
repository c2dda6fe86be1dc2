"""Test helpers for the engine: synthetic frames (the engine's own maker) and an independent from-scratch reference.

The reference shares nothing with livewatch's cached path but the frames and the prompt text: HF's processor
tokenizes the whole prompt and lays out the video patches, the model's own forward embeds and scatters the video,
positions come from a separate implementation of the model's training semantics (transformers 4.57
get_rope_index, extended to per-pair timestamps), and every step recomputes the whole sequence with no cache.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from livewatch.engine import synthetic
from livewatch.engine.prompting.preprocess import target_size
from livewatch.frames import Frame, FramePair, resize

T0 = synthetic.START


def make_frame(seq: int, t: float, size: tuple[int, int] = (360, 640), seed: int | None = None) -> Frame:
    """A synthetic scene (``livewatch.engine.synthetic``): gradients, a block that moves with the seed, noise."""
    return synthetic.frame(seq, t, size, seed=seed, start=T0)


def make_pair(index: int, t: float, size: tuple[int, int] = (360, 640)) -> FramePair:
    return synthetic.pair(index, t, size, start=T0)


def rope_index_reference(
    input_ids: list[int], video_token_id: int, vision_start_id: int, grid: tuple[int, int, int], t_offsets: list[int]
) -> np.ndarray:
    """(3, S) positions of one prompt holding one video (grid T x H x W in patches, merge 2), training semantics."""
    t_grids, gh, gw = grid[0], grid[1] // 2, grid[2] // 2
    pos = np.zeros((3, len(input_ids)), dtype=np.int64)
    start = input_ids.index(vision_start_id) + 1
    pos[:, :start] = np.arange(start)
    for g in range(t_grids):
        for r in range(gh):
            for c in range(gw):
                i = start + g * gh * gw + r * gw + c
                assert input_ids[i] == video_token_id
                pos[:, i] = (start + t_offsets[g], start + r, start + c)
    end = start + t_grids * gh * gw
    nxt = pos[:, :end].max() + 1
    pos[:, end:] = np.arange(nxt, nxt + len(input_ids) - end)
    return pos


def uniform_t_offsets(n: int, second_per_grid: float, tokens_per_second: float) -> list[int]:
    """4.57's t_index: (arange(T) * second_per_grid_t * tokens_per_second).long()."""
    return [math.floor(g * second_per_grid * tokens_per_second) for g in range(n)]


@torch.inference_mode()
def reference_greedy(core, camera: str, pairs: list[FramePair], question: str, n_tokens: int) -> list[int]:
    """Greedy tokens from a from-scratch forward at every step (no cache, no cached vision, joint encode)."""
    out: list[int] = []
    for logits in _reference_steps(core, camera, pairs, question, n_tokens):
        token = int(torch.argmax(logits))
        if token in core.lm.stop_token_ids:
            break
        out.append(token)
    return out


@torch.inference_mode()
def reference_first_logits(core, camera: str, pairs: list[FramePair], question: str,
                           bare: bool = False) -> torch.Tensor:
    """The first answer position's logits of the prompt, from scratch (``bare``: the question without the frame
    times sentence, as a watch asks it)."""
    return next(_reference_steps(core, camera, pairs, question, 1, bare))


def reference_inputs(core, camera: str, pairs: list[FramePair], question: str, bare: bool = False):
    """(HF processor inputs, token ids, (3, S) positions) of the whole prompt, built from scratch."""
    lm = core.lm
    spec = lm.spec
    size = target_size(*pairs[0].first.size, spec)
    frames = np.stack([resize(f.image, size) for p in pairs for f in (p.first, p.second)])
    from livewatch.engine.prompting.positions import temporal_positions
    from livewatch.engine.prompting.prompt import question_text, system_text

    first, last = pairs[0].time, pairs[-1].end_time
    head = core.template.head(system_text(camera, first, core.tz))
    tail = core.template.tail(question if bare else question_text(question, first, last, 2 * len(pairs), core.tz))
    inputs = lm.processor(
        text=[head + "<|video_pad|>" + tail],
        videos=[frames],
        return_tensors="pt",
        videos_kwargs={"do_resize": False, "do_sample_frames": False},
    )
    ids = inputs["input_ids"][0].tolist()
    grid = tuple(inputs["video_grid_thw"][0].tolist())
    offsets = temporal_positions([p.time for p in pairs], lm.tokens_per_second, core.max_gap_s)
    vision_start = lm.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    pos = rope_index_reference(ids, lm.video_token_id, vision_start, grid, offsets)
    return inputs, ids, pos


def _reference_steps(core, camera: str, pairs: list[FramePair], question: str, n_tokens: int, bare: bool = False):
    """Each step's last logits, the step's greedy token appended to the prompt before the next one."""
    lm = core.lm
    inputs, ids, pos = reference_inputs(core, camera, pairs, question, bare)
    for _ in range(n_tokens):
        logits = lm.model(
            input_ids=torch.tensor([ids]),
            pixel_values_videos=inputs["pixel_values_videos"],
            video_grid_thw=inputs["video_grid_thw"],
            position_ids=torch.from_numpy(pos).unsqueeze(1),
        ).logits[0, -1]
        yield logits
        ids.append(int(torch.argmax(logits)))
        pos = np.concatenate([pos, np.full((3, 1), pos.max() + 1)], axis=1)
