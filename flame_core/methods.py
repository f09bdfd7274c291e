"""The training methods behind one interface (README, "The command line": the methods table).

Every method is an ``nn.Module`` with
- ``loss(batch) -> (loss, logs)``: the training loss of a batch ``(inputs (B, L), targets (B,))`` and
  detached values to log; a method with S stacked replicas takes ``((S, B, L), (S, B))``, one batch per
  replica, and returns (S,) losses and logs (their sum is what the optimiser minimises, so the replicas are
  independent problems); a scalar counts as one replica;
- ``scores(seq) -> (B, I+1)``: inference scores of one replica (column 0, padding, is -inf);
- ``eval_views(seq, members) -> (S, V, B, I+1)``: what validation ranks, per replica the served scores first,
  then each member's (`eval_view_names`);
- ``views(seq) -> (names, (V, B, D))``: the representations an analysis compares (members or paths), and
  ``view_tables() -> (V, I+1, D)``: the item table that scores each view;
- ``start_epoch(epoch)``: sets the epoch's alignment weight lambda_e.

Hooks with defaults, for methods that need more than a loss:
- ``pretrained_specs()`` / ``set_pretrained(nets)`` / ``pretrained_nets()``: the Single SASRecs a method
  needs pretrained and frozen before training (FLAME's anchor, ckd's teachers); `experiments.build`
  pretrains (or finds in the cache) and sets them;
- ``prepare(split)``: called once at the start of `engine.train` (also on resume); must be deterministic;
- ``epoch_indices(epoch, num_samples, gen) -> (X',)``: the epoch's training samples in order (default: all,
  shuffled with the engine's generator);
- ``report(split) -> dict``: extra figures for results.json (default: none).

Stacked seeds (``stackable``: single, ensemble_scratch, ensemble_guide, flame): S replicas live in the
same stacks (replica-major rows), so their networks run in the same batched calls; `replica_state` and
`load_replica_state` move one replica's weights in and out.

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

import torch
from torch import Tensor, nn

from flame_core.backbone import Layout, SASRecStack, StackedLayout, make_layout
from flame_core.config import ConfigError, ModelConfig, TrainConfig
from flame_core.data import Split
from flame_core.losses import align_loss, item_cross_entropy, lambda_schedule
from flame_core.paths import all_paths, evaluate_paths, module_plan, path_name, sample_paths
from flame_core.registry import REGISTRY, method_class


class Method(nn.Module):
    """Shared plumbing: configs, the replicas' seeds, the epoch's lambda, the layout of a batch.

    Capabilities a method declares (the engine asks these, never the method's class):
    - ``stackable``: S replicas train as one stacked model (`seeds`); its loss and logs are then (S,) vectors;
    - ``graph_safe``: its training step runs on static shapes without host synchronisation, so on CUDA the
      engine captures it as one CUDA graph.
    """

    stackable = False
    graph_safe = True

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig, seeds: tuple[int, ...] | None = None):
        super().__init__()
        self.num_items, self.model_cfg, self.cfg = num_items, model, train
        self.seeds = tuple(seeds) if seeds else (train.seed,)
        self.lam = 0.0
        self.register_buffer("lam_weight", torch.zeros(()), persistent=False)  # lambda_e on the device
        self.start_epoch(1)

    @property
    def replicas(self) -> int:
        """S, the independent replicas trained side by side (one per seed)."""
        return len(self.seeds)

    def start_epoch(self, epoch: int) -> None:
        """Set lambda_e of epoch `epoch`; the loss reads it from a device tensor, so a captured step sees it."""
        a = self.cfg.align
        self.lam = lambda_schedule(epoch, a.anneal_epochs, a.lambda_0, a.lambda_R) if a.anneal else a.lambda_0
        self.lam_weight.fill_(self.lam)

    def layout(self, seq: Tensor) -> Layout | StackedLayout:
        """Packed on the CPU, padded on a GPU unless `packed` says otherwise: on an H100 the padded FLAME step
        took half the packed one's time (bench/results/speed-amazon-toys-cuda.json), whose bucketing waits
        on the device for the batch's lengths. seq (B, L), or (S, B, L): one batch per replica."""
        return make_layout(seq, self.packed(seq.device))

    def packed(self, device: torch.device) -> bool:
        return self.cfg.packed if self.cfg.packed is not None else device.type == "cpu"

    @property
    def p(self) -> float:
        """Dropout probability of the learnable networks in the current mode."""
        return self.model_cfg.dropout if self.training else 0.0

    def num_parameters(self) -> dict:
        """Trainable and frozen parameters of one replica."""
        total = sum(p.numel() for p in self.parameters()) // self.replicas
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad) // self.replicas
        return {"trainable": trainable, "frozen": total - trainable}

    @property
    def served_networks(self) -> int:
        """Networks evaluated to serve one user (an ensemble's members; 1 for everything else here)."""
        return 1

    @property
    def aligned_views(self) -> int:
        """Representations aligned with each other per training step (members or paths; 1: no alignment)."""
        return 1

    def eval_views(self, seq: Tensor, members: bool = True) -> Tensor:
        """Scores (S, V, B, I+1) of inputs (B, L): per replica the served scores first, then (with `members`)
        each member's, named by `eval_view_names`. Default: `scores` (one replica, no members)."""
        return self.scores(seq)[None, None]

    def eval_view_names(self, members: bool = True) -> list[str]:
        return ["served"]

    def view_tables(self) -> Tensor:
        """The item table scoring each view of `views`: (V, I+1, D)."""
        return self.learn.item_emb

    def pretrained_specs(self) -> list[tuple[str, ModelConfig, TrainConfig]]:
        """(name, model, settings) of each Single SASRec this method needs pretrained before training; the
        settings' seed is the network's own."""
        return []

    def set_pretrained(self, nets: list[SASRecStack]) -> None:
        """Copy the pretrained 1-network stacks of `pretrained_specs` (in its order) into the method."""
        if nets:
            raise ValueError(f"{self.cfg.method} uses no pretrained networks")

    def pretrained_nets(self) -> list[SASRecStack]:
        """The method's copies of its pretrained networks (1-network stacks), in the order of `pretrained_specs`."""
        return []

    def prepare(self, split: Split) -> None:
        """Called once at the start of training (also on resume); deterministic, uses no random numbers."""

    def epoch_indices(self, epoch: int, num_samples: int, gen: torch.Generator) -> Tensor:
        """The training samples of epoch `epoch` in the order they are batched: (X',) int64 on the CPU."""
        return torch.randperm(num_samples, generator=gen)  # (X,)

    def sample_share(self, epoch: int) -> float:
        """The share of the training samples epoch `epoch` trains on (1: all; a curriculum trains on fewer)."""
        return 1.0

    def report(self, split: Split) -> dict:
        """Extra figures of the selected weights for results.json (JSON-serialisable); default none."""
        return {}

    # ---- replicas -------------------------------------------------------------------------------------------
    def _stacked(self) -> dict[str, int]:
        """State-dict key -> networks per replica, for every parameter of a stack (replica-major rows)."""
        return {
            f"{prefix}.{name}" if prefix else name: stack.num_nets // self.replicas
            for prefix, stack in self.named_modules()
            if isinstance(stack, SASRecStack)
            for name, _ in stack.named_parameters(recurse=False)
        }

    def replica_state(self, s: int) -> dict[str, Tensor]:
        """A copy of replica s's weights, keyed like the state_dict of a method with one replica."""
        stacked = self._stacked()
        return {
            k: (v[s * stacked[k] : (s + 1) * stacked[k]] if k in stacked else v).detach().clone()
            for k, v in self.state_dict().items()
        }

    def load_replica_state(self, s: int, state: dict[str, Tensor]) -> None:
        """Copy a state of `replica_state`'s form into replica s (other replicas keep their weights)."""
        stacked, own = self._stacked(), self.state_dict()
        with torch.no_grad():
            for k, v in state.items():
                target = own[k][s * stacked[k] : (s + 1) * stacked[k]] if k in stacked else own[k]
                target.copy_(v)


def replica_rec_loss(z: Tensor, table: Tensor, target: Tensor, replicas: int) -> Tensor:
    """Per replica, the sum over its networks of the mean next-item cross-entropy: (S,).

    z (S*g, B, D) representations of a replica-major stack, scored against its item tables (S*g, I+1, D);
    target (B,) or (S, B), one batch per replica.
    """
    N, B = z.shape[:2]
    target = target.reshape(replicas, 1, B).expand(-1, N // replicas, -1).reshape(N, B)  # (S*g, B)
    ce = item_cross_entropy(z, table, target)  # (S*g, B)
    return ce.view(replicas, -1).mean(1) * (N // replicas)  # (S,)


class Single(Method):
    """One SASRec trained with next-item cross-entropy (S replicas side by side when seeds are stacked)."""

    stackable = True

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig, seeds: tuple[int, ...] | None = None):
        super().__init__(num_items, model, train, seeds)
        self.learn = SASRecStack(self.replicas, num_items, model, seeds=list(self.seeds))

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        seq, target = batch
        z = self.learn.encode(self.layout(seq), self.p)  # (S, B, D)
        loss = replica_rec_loss(z, self.learn.item_emb, target, self.replicas)  # (S,)
        return loss, {"rec": loss.detach()}

    def eval_views(self, seq: Tensor, members: bool = True) -> Tensor:
        return self.learn.item_scores(self.learn.encode(self.layout(seq), self.p))[:, None]  # (S, 1, B, I+1)

    def scores(self, seq: Tensor) -> Tensor:
        return self.eval_views(seq)[0, 0]  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        return ["L"], self.learn.encode(self.layout(seq), self.p)[:1]  # (1, B, D)


class EnsembleScratch(Method):
    """N randomly initialised SASRecs in one stack: each L_rec plus weighted pairwise L_align among members.

    Member k of the replica with seed s starts from seed s+k. `members` overrides train.ensemble.members
    (subclasses with their own setting).
    """

    stackable = True

    def __init__(
        self,
        num_items: int,
        model: ModelConfig,
        train: TrainConfig,
        seeds: tuple[int, ...] | None = None,
        members: int | None = None,
    ):
        super().__init__(num_items, model, train, seeds)
        self.num_members = members or train.ensemble.members
        nets = [s + k for s in self.seeds for k in range(self.num_members)]  # replica-major
        self.members = SASRecStack(len(nets), num_items, model, seeds=nets)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        seq, target = batch
        S, N = self.replicas, self.num_members
        z = self.members.encode(self.layout(seq), self.p)  # (S*N, B, D)
        rec = replica_rec_loss(z, self.members.item_emb, target, S)  # (S,) sums over members
        a = self.cfg.align
        align = torch.stack([align_loss(zs, a.tau, a.pair_weighting)[0] for zs in z.view(S, N, *z.shape[1:])])  # (S,)
        loss = rec + self.lam_weight * align
        return loss, {"rec": rec.detach(), "align": align.detach()}

    @property
    def served_networks(self) -> int:
        return self.num_members

    @property
    def aligned_views(self) -> int:
        return self.num_members

    def member_scores(self, seq: Tensor) -> Tensor:
        """Every member's scores (S*N, B, I+1), replica-major."""
        return self.members.item_scores(self.members.encode(self.layout(seq), self.p))

    def combine(self, member_scores: Tensor) -> Tensor:
        """The served scores (..., B, I+1) from the members' (..., N, B, I+1): their mean."""
        return member_scores.mean(-3)

    def eval_views(self, seq: Tensor, members: bool = True) -> Tensor:
        each = self.member_scores(seq).unflatten(0, (self.replicas, self.num_members))  # (S, N, B, I+1)
        served = self.combine(each)[:, None]  # (S, 1, B, I+1)
        return torch.cat([served, each], dim=1) if members else served  # (S, 1+N or 1, B, I+1)

    def eval_view_names(self, members: bool = True) -> list[str]:
        return ["served"] + ([f"member{k}" for k in range(self.num_members)] if members else [])

    def scores(self, seq: Tensor) -> Tensor:
        return self.eval_views(seq, members=False)[0, 0]  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        names = [f"member{k}" for k in range(self.num_members)]
        return names, self.members.encode(self.layout(seq), self.p)[: self.num_members]  # (N, B, D)

    def view_tables(self) -> Tensor:
        return self.members.item_emb[: self.num_members]  # (N, I+1, D)


class Flame(Single):
    """A frozen anchor and a learnable network cut into M modules, aligned over their modular paths.

    ``ensemble_guide`` is this class with split "net" (two paths: the learnable and the frozen network).
    The anchor is pretrained with its own seed (`anchor_seed`), so the learnable network never starts from
    the anchor's initial weights. Call `set_frozen` with it before training. Stacked replicas each hold a
    copy of the one anchor.
    """

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig, seeds: tuple[int, ...] | None = None):
        super().__init__(num_items, model, train, seeds)
        f = train.flame
        if f.anchor_seed in self.seeds:
            raise ConfigError(
                f"anchor_seed={f.anchor_seed} equals a learnable seed: the learnable network would "
                "start from the anchor's initial weights; choose another seed"
            )
        self.frozen = SASRecStack(self.replicas, num_items, model).requires_grad_(False)
        self.plan = module_plan(f.module_split, model.layers)
        self.has_anchor = False
        if f.num_paths and f.path_sampling == "fixed":
            self.fixed_paths = sample_paths(len(self.plan), f.num_paths, torch.Generator().manual_seed(train.seed))

    @property
    def graph_safe(self) -> bool:
        """Paths drawn afresh each step change the step's computation: such steps stay eager."""
        return not (self.cfg.flame.num_paths and self.cfg.flame.path_sampling == "uniform")

    def set_frozen(self, anchor: SASRecStack) -> None:
        """Copy a pretrained 1-network stack into every replica's frozen network (never trained)."""
        with torch.no_grad():
            for name, param in self.frozen.named_parameters():
                param.copy_(getattr(anchor, name).expand_as(param))
        self.has_anchor = True

    def pretrained_specs(self) -> list[tuple[str, ModelConfig, TrainConfig]]:
        """A Single with the same model and settings, seeded with `anchor_seed`."""
        return [("anchor", self.model_cfg, self.cfg.replace(method="single", seed=self.cfg.flame.anchor_seed))]

    def set_pretrained(self, nets: list[SASRecStack]) -> None:
        (anchor,) = nets
        self.set_frozen(anchor)

    def pretrained_nets(self) -> list[SASRecStack]:
        anchor = SASRecStack(1, self.num_items, self.model_cfg).to(self.frozen.item_emb.device)
        anchor.load_state_dict({k: v[:1] for k, v in self.frozen.state_dict().items()})
        return [anchor.requires_grad_(False)]

    @property
    def aligned_views(self) -> int:
        return self.cfg.flame.num_paths or 2 ** len(self.plan)

    @property
    def path_names(self) -> list[str]:
        return [path_name(p) for p in all_paths(len(self.plan))]

    def path_representations(self, layout: Layout | StackedLayout, paths=None) -> Tensor:
        """(S, P, B, D) for `paths` (default all 2^M), prefix-shared."""
        p_frozen = self.p if self.cfg.flame.frozen_dropout else 0.0
        paths = paths or all_paths(len(self.plan))
        shared = self.cfg.flame.path_attention == "shared"
        return evaluate_paths(
            self.learn, self.frozen, self.plan, layout, paths, p_learn=self.p, p_frozen=p_frozen, shared=shared
        )

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        if not self.has_anchor:
            raise RuntimeError("Flame.loss: no frozen anchor set; call set_frozen() (the CLI pretrains or loads one)")
        seq, target = batch
        f, a = self.cfg.flame, self.cfg.align
        k = f.num_paths
        if k and f.path_sampling == "fixed":
            paths = self.fixed_paths
        else:
            paths = sample_paths(len(self.plan), k) if k else None  # the pure learnable path is always first
        layout = self.layout(seq)
        z = self.path_representations(layout, paths)  # (S, P, B, D)
        if f.rec_from == "path":
            z_rec = z[:, 0]  # (S, B, D)
        else:
            z_rec = self.learn.encode(layout, self.p)  # (S, B, D), its own dropout
        rec = replica_rec_loss(z_rec, self.learn.item_emb, target, self.replicas)  # (S,)
        align = torch.stack([align_loss(zs, a.tau, a.pair_weighting)[0] for zs in z])  # (S,)
        loss = rec + self.lam_weight * align
        return loss, {"rec": rec.detach(), "align": align.detach()}

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        return self.path_names, self.path_representations(self.layout(seq))[0]  # (P, B, D)

    def view_tables(self) -> Tensor:
        """Each path is scored with the table of the network of its embedding module (tied embeddings)."""
        tables = torch.cat([self.learn.item_emb[:1], self.frozen.item_emb[:1]])  # (2, I+1, D)
        return tables[[path[0] for path in all_paths(len(self.plan))]]  # (P, I+1, D)


def build_method(
    num_items: int, model: ModelConfig, train: TrainConfig, seeds: tuple[int, ...] | None = None
) -> Method:
    """Instantiate `train.method` (S replicas for S `seeds`, default train.seed alone), with the settings the
    registry fixes for it (ensemble_guide: FLAME with the whole network as its only module)."""
    info = REGISTRY[train.method]
    train = train.replace(**dict(info.fixed)) if info.fixed else train
    cls, seeds = method_class(train.method), tuple(seeds) if seeds else (train.seed,)
    if len(seeds) == 1:
        return cls(num_items, model, train.replace(seed=seeds[0]))
    if not cls.stackable:
        raise ConfigError(f"{train.method} cannot stack seeds; train its seeds one after the other")
    return cls(num_items, model, train, seeds)
