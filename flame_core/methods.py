"""The training methods behind one interface (DESIGN.md section 6).

Every method is an ``nn.Module`` with
- ``loss(batch) -> (loss, logs)``: the training loss of a batch ``(inputs (B, L), targets (B,))`` and
  detached scalars to log;
- ``scores(seq) -> (B, I+1)``: inference scores (column 0, padding, is -inf);
- ``views(seq) -> (names, (V, B, D))``: the representations an analysis compares (members or paths), and
  ``view_tables() -> (V, I+1, D)``: the item table that scores each view;
- ``start_epoch(epoch)``: sets the epoch's alignment weight lambda_e.

Hooks with defaults, for methods that need more than a loss:
- ``pretrained_specs()`` / ``set_pretrained(nets)`` / ``pretrained_nets()``: the Single SASRecs a method
  needs pretrained and frozen before training (FLAME's anchor, ckd's teachers); `experiments.build`
  pretrains (or finds in the cache) and sets them;
- ``prepare(split)``: called once at the start of `engine.train` (also on resume); must be deterministic;
- ``epoch_indices(epoch, num_samples, gen) -> (S',)``: the epoch's training samples in order (default: all,
  shuffled with the engine's generator);
- ``report(split) -> dict``: extra figures for results.json (default: none).

| method             | networks                     | inference            |
| single             | 1 learnable                  | that network         |
| ensemble_scratch   | N learnable, seeds s..s+N-1  | mean of members      |
| ensemble_guide     | frozen + learnable, 1 module | learnable only       |
| flame              | frozen + learnable, M modules| learnable only       |
| emkd (emkd.py)     | N learnable, seeds s..s+N-1  | sum of members       |
| canet (canet.py)   | sliced supernet + router     | routed submodel      |
| ckd (ckd.py)       | K frozen teachers + student  | student only         |
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

from flame_core.backbone import Layout, SASRecStack, make_layout
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Split
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
        """Packed on the CPU, padded on a GPU unless `packed` says otherwise: on an H100 the padded FLAME step
        took half the packed one's time (bench/results/speed-amazon-toys-cuda.json), whose bucketing waits
        on the device for the batch's lengths."""
        packed = self.cfg.packed if self.cfg.packed is not None else seq.device.type == "cpu"
        return make_layout(seq, packed)

    @property
    def p(self) -> float:
        """Dropout probability of the learnable networks in the current mode."""
        return self.model_cfg.dropout if self.training else 0.0

    def num_parameters(self) -> dict:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "frozen": sum(p.numel() for p in self.parameters()) - trainable}

    def view_tables(self) -> Tensor:
        """The item table scoring each view of `views`: (V, I+1, D)."""
        return self.learn.item_emb

    def pretrained_specs(self) -> list[tuple[str, ModelConfig, TrainConfig]]:
        """(name, model, settings) of each Single SASRec this method needs pretrained before training."""
        return []

    def set_pretrained(self, nets: list[SASRecStack]) -> None:
        """Copy the pretrained 1-network stacks of `pretrained_specs` (in its order) into the method."""
        if nets:
            raise ValueError(f"{self.cfg.method} uses no pretrained networks")

    def pretrained_nets(self) -> list[SASRecStack]:
        """The method's copies of its pretrained networks, in the order of `pretrained_specs`."""
        return []

    def prepare(self, split: Split) -> None:
        """Called once at the start of training (also on resume); deterministic, uses no random numbers."""

    def epoch_indices(self, epoch: int, num_samples: int, gen: torch.Generator) -> Tensor:
        """The training samples of epoch `epoch` in the order they are batched: (S',) int64 on the CPU."""
        return torch.randperm(num_samples, generator=gen)  # (S,)

    def report(self, split: Split) -> dict:
        """Extra figures of the selected weights for results.json (JSON-serialisable); default none."""
        return {}


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
    """N randomly initialised SASRecs in one stack: each L_rec plus weighted pairwise L_align among members.

    `members` overrides train.members (subclasses with their own setting).
    """

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig, members: int | None = None):
        super().__init__(num_items, model, train)
        members = members or train.members
        self.members = SASRecStack(members, num_items, model, seeds=[train.seed + k for k in range(members)])

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

    def combine(self, member_scores: Tensor) -> Tensor:
        """The served scores (B, I+1) from the members' (N, B, I+1): their mean."""
        return member_scores.mean(0)

    def scores(self, seq: Tensor) -> Tensor:
        return self.combine(self.member_scores(seq))  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        names = [f"member{k}" for k in range(self.members.num_nets)]
        return names, self.members.encode(self.layout(seq), self.p)  # (N, B, D)

    def view_tables(self) -> Tensor:
        return self.members.item_emb  # (N, I+1, D)


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

    def pretrained_specs(self) -> list[tuple[str, ModelConfig, TrainConfig]]:
        return [("anchor", self.model_cfg, self.cfg)]  # a Single with the same model and settings

    def set_pretrained(self, nets: list[SASRecStack]) -> None:
        (anchor,) = nets
        self.set_frozen(anchor)

    def pretrained_nets(self) -> list[SASRecStack]:
        return [self.frozen]

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

    def view_tables(self) -> Tensor:
        """Each path is scored with the table of the network of its embedding module (tied embeddings)."""
        tables = torch.cat([self.learn.item_emb, self.frozen.item_emb])  # (2, I+1, D)
        return tables[[path[0] for path in all_paths(len(self.plan))]]  # (P, I+1, D)


METHODS = {"single": Single, "ensemble_scratch": EnsembleScratch, "ensemble_guide": Flame, "flame": Flame}
RELATED = {"emkd": "flame_core.emkd:EMKD", "canet": "flame_core.canet:CANet", "ckd": "flame_core.ckd:CKD"}


def method_class(name: str) -> type[Method]:
    """The class of method `name`; the related methods' modules import this one, so they load on first use."""
    if name in METHODS:
        return METHODS[name]
    module, cls = RELATED[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(num_items: int, model: ModelConfig, train: TrainConfig) -> Method:
    """Instantiate `train.method`; ensemble_guide is FLAME with the whole network as its only module."""
    if train.method == "ensemble_guide":
        train = train.replace(split="net", path_attention="independent", num_paths=None)
    return method_class(train.method)(num_items, model, train)


def needs_anchor(method: str) -> bool:
    return method in ("ensemble_guide", "flame")
