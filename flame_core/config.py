"""Typed, frozen configuration: the backbone (`ModelConfig`) and a training run (`TrainConfig`).

Defaults are the official FLAME release's (DESIGN.md section 2). ``from_dict`` rejects unknown keys and
wrong types with a message that names the key, so a typo in a profile never trains the wrong thing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

METHODS = ("single", "ensemble_scratch", "ensemble_guide", "flame", "emkd", "canet", "ckd")
SPLITS = ("net", "emb|enc")  # plus "emb|block|...|block" with one entry per layer
PATH_ATTENTION = ("independent", "shared")
REC_FROM = ("separate", "path")
PAIR_WEIGHTING = ("similarity", "uniform")
PATH_SAMPLING = ("uniform", "fixed")


class ConfigError(ValueError):
    """A configuration key is unknown, has the wrong type or an invalid value."""


class _Checked:
    """Mixin: construction from a dict with type checks, and conversion back."""

    @classmethod
    def from_dict(cls, values: dict) -> typing.Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if not _type_ok(value, hints[key]):
                raise ConfigError(f"{cls.__name__}.{key}: expected {hints[key]}, got {value!r}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> typing.Self:
        return type(self).from_dict({**self.to_dict(), **changes})


def _type_ok(value, hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]; JSON gives lists
        return isinstance(value, (tuple, list)) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@dataclass(frozen=True)
class ModelConfig(_Checked):
    """The SASRec backbone, as released with FLAME."""

    hidden: int = 64  # D, item embedding and hidden size
    layers: int = 2  # Transformer blocks
    heads: int = 2  # attention heads; hidden must divide by heads
    dropout: float = 0.5  # embeddings, attention probabilities and both sublayer outputs
    max_len: int = 50  # L, the input window (positional embeddings)
    ln_eps: float = 1e-12  # LayerNorm epsilon
    init_std: float = 0.02  # N(0, init_std) for embeddings and linear weights; biases 0

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ConfigError(f"ModelConfig: hidden={self.hidden} is not divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout: expected 0 <= p < 1, got {self.dropout}")
        if min(self.hidden, self.layers, self.max_len) < 1:
            raise ConfigError("ModelConfig: hidden, layers and max_len must be positive")


@dataclass(frozen=True)
class TrainConfig(_Checked):
    """One training run: the method, its FLAME settings, the optimiser and the protocol.

    Settings of the related methods (DESIGN.md section 6) carry their method's prefix: emkd_, canet_, ckd_.
    """

    method: str = "flame"  # one of METHODS
    epochs: int = 200  # the maximum number of epochs (the budget; early stopping may end sooner)
    patience: int = 30  # epochs without a better validation NDCG@20 before stopping
    batch_size: int = 256
    lr: float = 1e-3  # Adam
    seed: int = 42  # the learnable networks' initialisation, dropout and shuffling
    anchor_seed: int = 0  # seed of the pretrained anchor (flame, ensemble_guide): one anchor shared by every seed
    device: str = "auto"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    keep: int | None = -1  # items kept per user before splitting; -1 = max_len + 3 (official), None = all
    split: str = "emb|enc"  # module split: "net", "emb|enc", "emb|block|block" (one "block" per layer)
    path_attention: str = "independent"  # "independent" paths, or "shared" (released code, split emb|enc only)
    num_paths: int | None = None  # K sampled paths per step (pure learnable always included); None = all 2^M
    path_sampling: str = "uniform"  # K-1 other paths drawn afresh each step, or "fixed": drawn once from the seed
    rec_from: str = "separate"  # L_rec from a separate learnable forward, or reuse the pure learnable "path"
    frozen_dropout: bool = True  # the frozen network's dropout stays active in training (official)
    lambda_0: float = 1.0  # alignment weight at epoch 0
    lambda_R: float = 1e-5  # alignment weight at epoch R
    anneal: bool = True  # False keeps lambda_0 constant (ablation)
    anneal_epochs: int = 200  # R, the horizon of lambda's annealing (the release's num_epoch), apart from the budget
    tau: float = 1.0  # InfoNCE temperature
    pair_weighting: str = "similarity"  # softmax of negative mean similarity, or "uniform" (ablation)
    members: int = 2  # N, members of ensemble_scratch
    packed: bool | None = None  # per-token work on real tokens only; None: packed on CPU, padded on CUDA (faster there)
    cuda_graph: bool = True  # on CUDA, capture the whole training step as one CUDA graph where the method allows
    eval_batch_size: int = 1024
    progress: bool = True  # tqdm progress bars
    emkd_members: int = 3  # N, SASRec members of emkd (seeds s..s+N-1)
    emkd_temperature: float = 1.0  # softening temperature of emkd's logit distillation
    emkd_distill_weight: float = 1e-3  # weight of emkd's symmetric-KL logit distillation between members
    emkd_contrast_weight: float = 0.1  # weight of emkd's intra- plus cross-network InfoNCE (temperature: tau)
    emkd_crop: float = 0.6  # emkd crop augmentation: share of a sequence's items kept (contiguous)
    emkd_mask: float = 0.3  # emkd mask augmentation: share of a sequence's items deleted
    canet_sizes: tuple[int, ...] = (32, 48, 64)  # canet routing space: embedding and hidden sizes, ascending, <= hidden
    canet_tau: float = 1.0  # canet Gumbel-softmax temperature of the router
    canet_uniform_weight: float = 0.01  # weight of canet's uniform-routing loss
    canet_guide_weight: float = 0.01  # weight of canet's easy/hard guide loss
    canet_guide_k: int = 20  # canet: a user is easy when the smallest submodel ranks the target in its top k
    ckd_teachers: int = 3  # K, pretrained SASRec teachers of ckd (seeds s+1..s+K)
    ckd_teacher_hidden: tuple[int, ...] = (64, 64, 32)  # hidden size of teacher k: entry k (cycled)
    ckd_temperature: float = 2.0  # ckd distillation temperature over the in-batch candidates
    ckd_distill_weight: float = 1.0  # weight of ckd's weighted multi-teacher distillation
    ckd_curriculum_start: float = 0.3  # c0: ckd's epoch e trains on the easiest c0 + (1 - c0) * e / E of the samples
    ckd_curriculum_epochs: int = 20  # E, epochs until ckd's curriculum pool holds every training sample

    def __post_init__(self):
        for f in dataclasses.fields(self):  # JSON and the CLI give lists where tuples are meant
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        _choice("method", self.method, METHODS)
        _choice("path_attention", self.path_attention, PATH_ATTENTION)
        _choice("rec_from", self.rec_from, REC_FROM)
        _choice("pair_weighting", self.pair_weighting, PAIR_WEIGHTING)
        _choice("path_sampling", self.path_sampling, PATH_SAMPLING)
        parts = self.split.split("|")
        if not (self.split in SPLITS or (parts[0] == "emb" and len(parts) > 2 and set(parts[1:]) == {"block"})):
            raise ConfigError(f"TrainConfig.split: expected 'net', 'emb|enc' or 'emb|block|...', got {self.split!r}")
        if self.path_attention == "shared" and self.split != "emb|enc":
            raise ConfigError("TrainConfig.path_attention='shared' is the released code's behaviour for split 'emb|enc' only")
        if self.num_paths is not None and self.num_paths < 2:
            raise ConfigError(f"TrainConfig.num_paths: need at least 2 paths to align, got {self.num_paths}")
        if self.members < 2 and self.method == "ensemble_scratch":
            raise ConfigError(f"TrainConfig.members: an ensemble needs at least 2 members, got {self.members}")
        if min(self.epochs, self.anneal_epochs, self.batch_size, self.eval_batch_size) < 1 or self.patience < 0:
            raise ConfigError("TrainConfig: epochs, anneal_epochs and batch sizes must be positive, patience non-negative")
        _check_related(self)


def _check_related(cfg: TrainConfig) -> None:
    """Value checks of the emkd_, canet_ and ckd_ settings."""
    positive = ("emkd_temperature", "canet_tau", "ckd_temperature", "canet_guide_k", "ckd_teachers",
                "ckd_curriculum_epochs")  # fmt: skip
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"TrainConfig.{key}: expected a positive value, got {getattr(cfg, key)}")
    for key in ("emkd_distill_weight", "emkd_contrast_weight", "canet_uniform_weight", "canet_guide_weight",
                "ckd_distill_weight"):  # fmt: skip
        if getattr(cfg, key) < 0:
            raise ConfigError(f"TrainConfig.{key}: expected a non-negative weight, got {getattr(cfg, key)}")
    if cfg.emkd_members < 2 and cfg.method == "emkd":
        raise ConfigError(f"TrainConfig.emkd_members: an ensemble needs at least 2 members, got {cfg.emkd_members}")
    for key in ("emkd_crop", "ckd_curriculum_start"):
        if not 0.0 < getattr(cfg, key) <= 1.0:
            raise ConfigError(f"TrainConfig.{key}: expected a share in (0, 1], got {getattr(cfg, key)}")
    if not 0.0 <= cfg.emkd_mask < 1.0:
        raise ConfigError(f"TrainConfig.emkd_mask: expected a share in [0, 1) (one item stays), got {cfg.emkd_mask}")
    sizes = cfg.canet_sizes
    if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
        raise ConfigError(f"TrainConfig.canet_sizes: expected distinct positive sizes in ascending order, got {sizes}")
    if not cfg.ckd_teacher_hidden or min(cfg.ckd_teacher_hidden) < 1:
        raise ConfigError(f"TrainConfig.ckd_teacher_hidden: expected positive sizes, got {cfg.ckd_teacher_hidden}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"TrainConfig.{key}: expected one of {list(allowed)}, got {value!r}")
