"""An answer's evidence (livewatch.engine.model.evidence): every pair that was in context, ranked by the attention the
answer's tokens put on its visual tokens; the ranking equals the same attention computed from scratch by
transformers' own eager attention over the whole prompt (tiny model, float32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine_helpers import T0, make_pair, reference_inputs
from livewatch.engine.core import EngineCore
from livewatch.engine.results import SamplingParams
from livewatch.engine.model.loading import load_model

QUESTION = "What happened at the door?"


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), "cpu", "float32")


@torch.inference_mode()
def reference_shares(eager_lm, core: EngineCore, pairs, answer: list[int]) -> list[float]:
    inputs, ids, pos = reference_inputs(core, "door", pairs, QUESTION)
    n_prompt = len(ids)
    full = ids + answer[:-1]  # the positions whose outputs are the answer: the prompt's last, then the answer's
    pos = np.concatenate([pos, pos.max() + 1 + np.tile(np.arange(len(answer) - 1), (3, 1))], axis=1)
    out = eager_lm.model(input_ids=torch.tensor([full]), pixel_values_videos=inputs["pixel_values_videos"],
                         video_grid_thw=inputs["video_grid_thw"], position_ids=torch.from_numpy(pos).unsqueeze(1),
                         output_attentions=True)
    rows = slice(n_prompt - 1, len(full))
    mass = sum(a[0, :, rows].sum((0, 1)) for a in out.attentions)  # [S]: over layers, heads and answer rows
    video = [i for i, t in enumerate(ids) if t == core.lm.video_token_id]
    per_pair = len(video) // len(pairs)
    blocks = [float(mass[video[i * per_pair]: video[i * per_pair] + per_pair].sum()) for i in range(len(pairs))]
    return [b / sum(blocks) for b in blocks]


def test_attention_ranking_equals_transformers_eager_attention(lm, tiny_model_dir: Path) -> None:
    core = EngineCore(lm, timezone="UTC")
    pairs = [make_pair(i, T0 + 2 * i) for i in range(4)]
    core.set_context("door", pairs, 1)
    answer = core.ask("door", QUESTION, SamplingParams(max_new_tokens=6, ignore_eos=True))
    assert len(answer.token_ids) == 6
    layout = core.layout_for("door", pairs)
    shares = core.ranker.shares("door", core.stacked_prefix("door"), layout, core.question_ids("door", QUESTION),
                                list(answer.token_ids))
    eager = load_model(str(tiny_model_dir), "cpu", "float32", "eager")
    expected = reference_shares(eager, core, pairs, list(answer.token_ids))
    assert max(abs(a - b) for a, b in zip(shares, expected)) < 1e-4, (shares, expected)
    assert abs(sum(shares) - 1.0) < 1e-6 and max(shares) - min(shares) > 1e-4  # not uniform: it measures something
    # the answer carries it: every pair once, with its times from the frames, most relied on first
    evidence = answer.evidence
    assert sorted(e["frame_id"] for e in evidence) == [p.id for p in pairs]
    assert [e["attention"] for e in evidence] == sorted((e["attention"] for e in evidence), reverse=True)
    assert [e["relied_on"] for e in evidence] == [True, True, True, False]
    by_id = {p.id: p for p in pairs}
    assert all(e["time"] == by_id[e["frame_id"]].time and e["end_time"] == by_id[e["frame_id"]].end_time
               for e in evidence)
    top = max(range(4), key=lambda i: expected[i])
    assert evidence[0]["frame_id"] == pairs[top].id and evidence[0]["url"] == f"/frames/door/{pairs[top].id}.jpg"


def test_evidence_survives_a_new_context_arriving_during_the_answer(lm) -> None:
    core = EngineCore(lm, timezone="UTC")
    pairs = [make_pair(i, T0 + 2 * i) for i in range(3)]
    core.set_context("door", pairs, 1)
    prepared = core.prepare("door", QUESTION, 4)
    core.set_context("door", pairs[1:] + [make_pair(9, T0 + 20)], 2)
    core.encode("door")  # the prefix moves on while the answer is decoded
    answer = core.run_prepared(prepared, SamplingParams(max_new_tokens=4, ignore_eos=True))
    assert sorted(e["frame_id"] for e in answer.evidence) == [0, 1, 2]  # the pairs the answer saw
    assert all(e["attention"] is not None for e in answer.evidence)


def test_ranking_can_be_turned_off(lm) -> None:
    core = EngineCore(lm, timezone="UTC", evidence_ranking=False)
    core.set_context("door", [make_pair(i, T0 + 2 * i) for i in range(2)], 1)
    answer = core.ask("door", QUESTION, SamplingParams(max_new_tokens=3, ignore_eos=True))
    assert [e["attention"] for e in answer.evidence] == [None, None]
    assert [e["frame_id"] for e in answer.evidence] == [0, 1] and not any(e["relied_on"] for e in answer.evidence)
