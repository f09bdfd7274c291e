"""Multi-teacher knowledge distillation with a curriculum, after CKD-MDSR (`ckd`).

Teachers: K = ``ckd_teachers`` Single SASRecs of different seeds and sizes, teacher k with hidden size
``ckd_teacher_hidden[k % len]`` and seed s+1+k. Each is pretrained and selected on validation by
`anchor.pretrain_anchor` (cached by dataset, model and settings, like FLAME's anchor; `experiments.build`
pretrains or finds them through `pretrained_specs`), then frozen: no gradients, not in the optimiser, run
without dropout. The student is the default SASRec (seed s) and the only network used at inference.

Loss = L_rec(student) + ``ckd_distill_weight`` * distillation. The distillation is restricted to the batch's
targets as candidates: row b scores the B targets of the batch (its own on the diagonal), for the student
and every teacher, softened by T = ``ckd_temperature``; the per-sample KL to each teacher is weighted by a
softmax over teachers of confidence (the teacher's probability of the true target among the candidates)
plus agreement (minus its KL to the teachers' mean distribution): `losses.teacher_weights`,
`losses.weighted_distill`.

Curriculum from easy to hard: `prepare` computes once the difficulty of every training sample, the
teachers' mean full-ranking cross-entropy of its target. Epoch e (from 1) trains on the easiest share
c(e) = min(1, c0 + (1 - c0) * e / E) of the samples (c0 = ``ckd_curriculum_start``, default 0.3, so the
first epochs see the most predictable prefixes; E = ``ckd_curriculum_epochs``, default 20), shuffled with the
engine's seeded generator; such epochs have fewer steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flame_core.backbone import SASRecStack
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Split
from flame_core.losses import rec_loss, teacher_weights, weighted_distill
from flame_core.methods import Method


class CKD(Method):
    """A student SASRec distilled from K frozen pretrained teachers, easy samples first."""

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__(num_items, model, train)
        self.learn = SASRecStack(1, num_items, model, seeds=[train.seed])
        self.teachers = nn.ModuleList(
            SASRecStack(1, num_items, spec_model, seeds=[spec_cfg.seed]).requires_grad_(False)
            for _, spec_model, spec_cfg in self.pretrained_specs()
        )
        self.has_teachers = False
        self.easy_order: Tensor | None = None  # (X,) training samples from easiest to hardest, set by prepare

    def pretrained_specs(self) -> list[tuple[str, ModelConfig, TrainConfig]]:
        cfg, hidden = self.cfg, self.cfg.ckd.ckd_teacher_hidden
        models = [self.model_cfg.replace(hidden=hidden[k % len(hidden)]) for k in range(cfg.ckd.ckd_teachers)]
        return [(f"teacher{k}", m, cfg.replace(method="single", seed=cfg.seed + 1 + k)) for k, m in enumerate(models)]

    def set_pretrained(self, nets: list[SASRecStack]) -> None:
        if len(nets) != len(self.teachers):
            raise ValueError(f"ckd: expected {len(self.teachers)} teachers, got {len(nets)}")
        for teacher, net in zip(self.teachers, nets):
            teacher.load_state_dict(net.state_dict())
        self.has_teachers = True

    def pretrained_nets(self) -> list[SASRecStack]:
        return list(self.teachers)

    def _check_teachers(self, where: str) -> None:
        if not self.has_teachers:
            raise RuntimeError(f"CKD.{where}: no teachers set; call set_pretrained() (experiments.build does)")

    @torch.no_grad()
    def prepare(self, split: Split) -> None:
        """The teachers' mean cross-entropy of every training sample, sorted once: easiest first."""
        self._check_teachers("prepare")
        inputs, targets, step = split.train_inputs, split.train_targets, self.cfg.eval_batch_size
        difficulty = []
        for start in range(0, inputs.shape[0], step):
            layout, target = self.layout(inputs[start : start + step]), targets[start : start + step]
            scores = [t.item_scores(t.encode(layout, 0.0))[0] for t in self.teachers]  # K x (b, I+1)
            difficulty.append(torch.stack([F.cross_entropy(s, target, reduction="none") for s in scores]).mean(0))
        self.easy_order = torch.cat(difficulty).argsort(stable=True).cpu()  # (X,)

    def sample_share(self, epoch: int) -> float:
        """c(e) = min(1, c0 + (1 - c0) * e / E), the share of training samples epoch e trains on."""
        c0, horizon = self.cfg.ckd.ckd_curriculum_start, self.cfg.ckd.ckd_curriculum_epochs
        return min(1.0, c0 + (1.0 - c0) * epoch / horizon)

    def epoch_indices(self, epoch: int, num_samples: int, gen: torch.Generator) -> Tensor:
        """The easiest ceil(c(epoch) * X) samples, shuffled: (X',)."""
        if self.easy_order is None or self.easy_order.shape[0] != num_samples:
            raise RuntimeError("CKD.epoch_indices: call prepare(split) first (engine.train does)")
        size = math.ceil(self.sample_share(epoch) * num_samples)
        return self.easy_order[:size][torch.randperm(size, generator=gen)]  # (X',)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        self._check_teachers("loss")
        seq, target = batch
        cfg, layout = self.cfg.ckd, self.layout(seq)
        scores = self.learn.item_scores(self.learn.encode(layout, self.p))[0]  # (B, I+1)
        rec = rec_loss(scores, target)
        student = scores[:, target]  # (B, B): [b, c] = sample b's score of sample c's target
        with torch.no_grad():
            reps = [t.encode(layout, 0.0)[0] for t in self.teachers]  # K x (B, D_k)
            teacher = torch.stack([z @ t.item_emb[0, target].T for z, t in zip(reps, self.teachers)])  # (K, B, B)
            weights = teacher_weights(teacher, cfg.ckd_temperature)  # (K, B)
        distill = weighted_distill(student, teacher, weights, cfg.ckd_temperature)
        loss = rec + cfg.ckd_distill_weight * distill
        return loss, {"rec": rec.detach(), "distill": distill.detach()}

    def scores(self, seq: Tensor) -> Tensor:
        return self.learn.item_scores(self.learn.encode(self.layout(seq), self.p))[0]  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        return ["student"], self.learn.encode(self.layout(seq), self.p)  # (1, B, D)
