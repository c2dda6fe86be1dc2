"""Bringing several cameras' prefixes up to date in one go: one vision call, one prefill forward.

A camera's encode is a ``EncodeJob``: the pairs of its new context, the layout plan (layout.plan_update) that
says which leading prefix entries stay valid, the kept entries themselves and the camera's vision embedding
store. ``Encoder.run`` takes the jobs of every camera the scheduler picked and

1. encodes every pair that has no embedding yet, of all cameras together (``VisionTower``: one batched,
   graph-captured computation per frame grid);
2. prefills every camera's new tokens in one forward (``Prefiller``: the tokens of all cameras packed, each
   camera attending to its own kept entries at its own positions).

The result per camera is its new prefix, equal (up to float rounding) to encoding that camera alone. On a GPU one
camera at a time is bound by kernel launches; together the launches are shared and the matrix products are
large enough to run near the GPU's rate.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from livewatch.engine.prompting.layout import PrefixLayout, UpdatePlan
from livewatch.engine.model.loading import LoadedModel
from livewatch.engine.model.prefill import Prefiller, PrefillItem
from livewatch.engine.prompting.preprocess import pair_input
from livewatch.engine.prompting.vision import SharedEmbeddings, VisionCache, shared_key
from livewatch.engine.model.visiontower import VisionTower
from livewatch.frames import FramePair

Stacked = tuple[torch.Tensor, torch.Tensor]  # (k, v): [layers, kv_heads, tokens, head_dim] each


@dataclass
class EncodeJob:
    camera: str
    pairs: tuple[FramePair, ...]  # the whole new context, time-ordered
    layout: PrefixLayout
    plan: UpdatePlan
    vision: VisionCache
    past: Stacked | None  # the kept entries (plan.keep_tokens of them)
    encoded: int = 0  # pairs this job sent through the vision tower (set by Encoder.run)

    @property
    def new_pairs(self) -> tuple[FramePair, ...]:
        return self.pairs[max(self.plan.first_new_slot, 0) :]

    @property
    def tokens(self) -> int:
        """New prefix tokens to compute."""
        return self.layout.n_tokens - self.plan.keep_tokens


@dataclass(frozen=True)
class EncodeTimes:
    vision_ms: float
    prefill_ms: float
    pairs_encoded: int  # vision tower work, all jobs together


# One tower per vision model and settings: its graphs (per frame grid) are captured once per process, whichever
# engine core (the daemon has one; the bench and the tests make many) asks for them.
_TOWERS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[bool, int], VisionTower]] = weakref.WeakKeyDictionary()


def shared_tower(lm: LoadedModel, use_graphs: bool, max_batch: int) -> VisionTower:
    towers = _TOWERS.setdefault(lm.visual, {})
    key = (use_graphs, max_batch)
    if key not in towers:
        towers[key] = VisionTower(lm.visual, lm.spec, lm.device, use_graphs=use_graphs, max_batch=max_batch)
    return towers[key]


class Encoder:
    def __init__(self, lm: LoadedModel, *, use_graphs: bool, vision_batch: int = 32, prefill_tokens: int = 8192,
                 fused: bool = False, history_bytes: int = 512 << 20) -> None:
        self.lm = lm
        self.tower = shared_tower(lm, use_graphs, vision_batch)
        self.prefiller = Prefiller(lm, fused=fused, max_tokens=prefill_tokens, graphs=use_graphs)
        self.history = SharedEmbeddings(history_bytes)  # history pairs' embeddings across temporary contexts

    def _sync(self) -> None:
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)

    @torch.inference_mode()
    def run(self, jobs: Sequence[EncodeJob]) -> tuple[list[Stacked], EncodeTimes]:
        """The new prefix of every job, in job order."""
        t0 = time.perf_counter()
        encoded = self._vision(jobs)
        self._sync()
        t1 = time.perf_counter()
        prefixes = self.prefiller.run([self._item(job) for job in jobs])
        self._sync()
        t2 = time.perf_counter()
        return prefixes, EncodeTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, encoded)

    def _vision(self, jobs: Sequence[EncodeJob]) -> int:
        todo: list[tuple[VisionCache, FramePair]] = []
        for job in jobs:
            job.vision.retain({p.id for p in job.pairs})
            camera = shared_key(job.camera)
            if camera is not None:
                self.history.fill(camera, job.vision, [p.id for p in job.new_pairs])
            missing = [p for p in job.new_pairs if p.id not in job.vision]
            job.encoded = len(missing)
            todo.extend((job.vision, p) for p in missing)
        if not todo:
            return 0  # (the shared embeddings already held them all)
        inputs = [pair_input(pair, self.lm.spec) for _, pair in todo]
        for (store, pair), embeds in zip(todo, self.tower.encode(inputs)):
            store.put(pair.id, embeds)
        for job in jobs:
            camera = shared_key(job.camera)
            if camera is not None:
                self.history.keep(camera, job.vision, [p.id for p in job.new_pairs])
        return len(todo)

    def _item(self, job: EncodeJob) -> PrefillItem:
        lm = self.lm
        parts = []
        if job.plan.first_new_slot < 0:  # the head is recomputed too
            head = torch.tensor(job.layout.head, dtype=torch.long, device=lm.device)
            parts.append(lm.embed_tokens(head))
            positions = job.layout.positions()
        else:
            positions = job.layout.positions(from_slot=job.plan.first_new_slot)
        parts.extend(job.vision.get(p.id).to(lm.dtype) for p in job.new_pairs)
        embeds = torch.cat(parts)
        return PrefillItem(job.past, embeds, torch.from_numpy(positions).to(lm.device))

    def describe(self) -> dict[str, object]:
        return {"vision": self.tower.describe(), "prefill": self.prefiller.describe()}
