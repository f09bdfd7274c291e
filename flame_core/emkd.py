"""EMKD (Du et al., SIGIR 2023, "Ensemble Modeling with Contrastive Knowledge Distillation for Sequential
Recommendation"), adapted to our SASRec backbone.

N = ``emkd_members`` SASRec members live in one `SASRecStack` (seeds s..s+N-1), like ensemble_scratch. Per
batch, each sequence gets one augmented view (`augment.augment`: a crop keeping ``emkd_crop`` of its items,
or item masking as deletion of ``emkd_mask`` of them, with probability 1/2 each); the members encode the
original and the augmented sequences in one call. The loss is

    sum_n L_rec(member n, original)                                  next-item cross-entropy
    + emkd_distill_weight  * symmetric_kl(members' scores, T)        logit distillation, T = emkd_temperature
    + emkd_contrast_weight * (intra + cross)                         contrastive distillation, tau = emkd_tau

with intra = InfoNCE between a member's original and augmented representations and cross = InfoNCE between
member x's original and member y's augmented representation (x != y), in-batch negatives, as the paper's
intra- and cross-network contrastive learning describe (`losses.emkd_contrast`). Inference: the sum of the
members' scores; views: the members.

Differences from the paper, by design: EMKD's members are BERT4Rec networks trained by masked-item
prediction; ours are the same SASRec as every other method here (next-item cross-entropy), so the
comparison isolates the training scheme. EMKD's attribute prediction task is omitted: our datasets carry
no item attributes. Augmentation follows CL4SRec (crop, and masking as deletion since SASRec has no mask
token); the contrast weight 0.1 follows CL4SRec-style work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flame_core.augment import augment
from flame_core.config import ModelConfig, TrainConfig
from flame_core.losses import emkd_contrast, rec_loss, symmetric_kl
from flame_core.methods import EnsembleScratch


class EMKD(EnsembleScratch):
    """N SASRec members with next-item CE, logit distillation and intra-/cross-network contrast."""

    stackable = False

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__(num_items, model, train, members=train.emkd.emkd_members)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        seq, target = batch
        cfg, B = self.cfg.emkd, seq.shape[0]
        views = torch.cat([seq, augment(seq, cfg.emkd_crop, cfg.emkd_mask)])  # (2B, L): originals, then views
        z = self.members.encode(self.layout(views), self.p)  # (N, 2B, D)
        original, augmented = z[:, :B], z[:, B:]  # (N, B, D) each
        scores = self.members.item_scores(original)  # (N, B, I+1)
        N = scores.shape[0]
        rec = rec_loss(scores.flatten(0, 1), target.repeat(N)) * N  # sum over members
        distill = symmetric_kl(scores, cfg.emkd_temperature)
        intra, cross = emkd_contrast(original, augmented, cfg.emkd_tau)
        loss = rec + cfg.emkd_distill_weight * distill + cfg.emkd_contrast_weight * (intra + cross)
        logs = {"rec": rec.detach(), "distill": distill.detach(), "intra": intra.detach(), "cross": cross.detach()}
        return loss, logs

    def combine(self, member_scores: Tensor) -> Tensor:
        """The sum of the members' scores (..., N, B, I+1) -> (..., B, I+1), as EMKD serves them."""
        return member_scores.sum(-3)
