"""The training methods behind one interface (DESIGN.md section 6).

Every method is an ``nn.Module`` with
- ``loss(batch) -> (loss, logs)``: the training loss of a batch ``(inputs (B, L), targets (B,))`` and
  detached scalars to log;
- ``scores(seq) -> (B, I+1)``: inference scores (column 0, padding, is -inf);
- ``views(seq) -> (names, (V, B, D))``: the representations an analysis compares (members or paths);
- ``start_epoch(epoch)``: sets the epoch's alignment weight lambda_e.

| method             | networks                     | inference            |
| single             | 1 learnable                  | that network         |
| ensemble_scratch   | N learnable, seeds s..s+N-1  | mean of members      |
| ensemble_guide     | frozen + learnable, 1 module | learnable only       |
| flame              | frozen + learnable, M modules| learnable only       |
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flame_core.backbone import Layout, SASRecStack, make_layout
from flame_core.config import ModelConfig, TrainConfig
from flame_core.losses import align_loss, lambda_schedule, rec_loss
from flame_core.paths import all_paths, evaluate_paths, module_plan, path_name, sample_paths


class Method(nn.Module):
    """Shared plumbing: configs, the epoch's lambda, the layout of a batch."""

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__()
        self.num_items, self.model_cfg, self.cfg = num_items, model, train
        self.lam = lambda_schedule(1, train.epochs, train.lambda_0, train.lambda_R)

    def start_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        self.lam = lambda_schedule(epoch, cfg.epochs, cfg.lambda_0, cfg.lambda_R) if cfg.anneal else cfg.lambda_0

    def layout(self, seq: Tensor):
        return make_layout(seq, self.cfg.packed)

    @property
    def p(self) -> float:
        """Dropout probability of the learnable networks in the current mode."""
        return self.model_cfg.dropout if self.training else 0.0

    def num_parameters(self) -> dict:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "frozen": sum(p.numel() for p in self.parameters()) - trainable}


class Single(Method):
    """One SASRec trained with next-item cross-entropy."""

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__(num_items, model, train)
        self.learn = SASRecStack(1, num_items, model, seeds=[train.seed])

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        seq, target = batch
        z = self.learn.encode(self.layout(seq), self.p)  # (1, B, D)
        loss = rec_loss(self.learn.item_scores(z)[0], target)
        return loss, {"rec": loss.detach()}

    def scores(self, seq: Tensor) -> Tensor:
        return self.learn.item_scores(self.learn.encode(self.layout(seq), self.p))[0]  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        return ["L"], self.learn.encode(self.layout(seq), self.p)  # (1, B, D)


class EnsembleScratch(Method):
    """N randomly initialised SASRecs in one stack: each L_rec plus weighted pairwise L_align among members."""

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__(num_items, model, train)
        seeds = [train.seed + k for k in range(train.members)]
        self.members = SASRecStack(train.members, num_items, model, seeds=seeds)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        seq, target = batch
        z = self.members.encode(self.layout(seq), self.p)  # (N, B, D)
        scores = self.members.item_scores(z)  # (N, B, I+1)
        rec = rec_loss(scores.flatten(0, 1), target.repeat(z.shape[0])) * z.shape[0]  # sum over members
        align, _ = align_loss(z, self.cfg.tau, self.cfg.pair_weighting)
        loss = rec + self.lam * align
        return loss, {"rec": rec.detach(), "align": align.detach()}

    def member_scores(self, seq: Tensor) -> Tensor:
        return self.members.item_scores(self.members.encode(self.layout(seq), self.p))  # (N, B, I+1)

    def scores(self, seq: Tensor) -> Tensor:
        return self.member_scores(seq).mean(0)  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        names = [f"member{k}" for k in range(self.members.num_nets)]
        return names, self.members.encode(self.layout(seq), self.p)  # (N, B, D)


class Flame(Method):
    """A frozen anchor and a learnable network cut into M modules, aligned over their modular paths.

    ``ensemble_guide`` is this class with split "net" (two paths: the learnable and the frozen network).
    Call `set_frozen` with the pretrained anchor before training.
    """

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__(num_items, model, train)
        self.learn = SASRecStack(1, num_items, model, seeds=[train.seed])
        self.frozen = SASRecStack(1, num_items, model).requires_grad_(False)
        self.plan = module_plan(train.split, model.layers)
        self.has_anchor = False
        if train.num_paths and train.path_sampling == "fixed":
            self.fixed_paths = sample_paths(len(self.plan), train.num_paths, torch.Generator().manual_seed(train.seed))

    def set_frozen(self, anchor: SASRecStack) -> None:
        """Copy a pretrained 1-network stack into the frozen network (its weights never get gradients)."""
        self.frozen.load_state_dict(anchor.state_dict())
        self.has_anchor = True

    @property
    def path_names(self) -> list[str]:
        return [path_name(p) for p in all_paths(len(self.plan))]

    def path_representations(self, layout: Layout, paths=None) -> Tensor:
        """(P, B, D) for `paths` (default all 2^M), prefix-shared."""
        p_frozen = self.p if self.cfg.frozen_dropout else 0.0
        paths = paths or all_paths(len(self.plan))
        shared = self.cfg.path_attention == "shared"
        return evaluate_paths(self.learn, self.frozen, self.plan, layout, paths, self.p, p_frozen, shared)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        if not self.has_anchor:
            raise RuntimeError("Flame.loss: no frozen anchor set; call set_frozen() (the CLI pretrains or loads one)")
        seq, target = batch
        k = self.cfg.num_paths
        if k and self.cfg.path_sampling == "fixed":
            paths = self.fixed_paths
        else:
            paths = sample_paths(len(self.plan), k) if k else None  # the pure learnable path is always first
        layout = self.layout(seq)
        z = self.path_representations(layout, paths)  # (P, B, D)
        if self.cfg.rec_from == "path":
            z_rec = z[:1]  # (1, B, D)
        else:
            z_rec = self.learn.encode(layout, self.p)  # (1, B, D), its own dropout
        rec = rec_loss(self.learn.item_scores(z_rec)[0], target)
        align, _ = align_loss(z, self.cfg.tau, self.cfg.pair_weighting)
        loss = rec + self.lam * align
        return loss, {"rec": rec.detach(), "align": align.detach()}

    def scores(self, seq: Tensor) -> Tensor:
        return self.learn.item_scores(self.learn.encode(self.layout(seq), self.p))[0]  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        return self.path_names, self.path_representations(self.layout(seq))


METHODS = {"single": Single, "ensemble_scratch": EnsembleScratch, "ensemble_guide": Flame, "flame": Flame}


def build_method(num_items: int, model: ModelConfig, train: TrainConfig) -> Method:
    """Instantiate `train.method`; ensemble_guide is FLAME with the whole network as its only module."""
    if train.method == "ensemble_guide":
        train = train.replace(split="net", path_attention="independent", num_paths=None)
    return METHODS[train.method](num_items, model, train)


def needs_anchor(method: str) -> bool:
    return method in ("ensemble_guide", "flame")
