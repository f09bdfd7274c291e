"""Typed, frozen configuration: the backbone (`ModelConfig`) and a training run (`TrainConfig`).

Defaults are the official FLAME release's (DESIGN.md section 2). ``from_dict`` rejects unknown keys and
wrong types with a message that names the key, so a typo in a profile never trains the wrong thing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

METHODS = ("single", "ensemble_scratch", "ensemble_guide", "flame")
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
    """One training run: the method, its FLAME settings, the optimiser and the protocol."""

    method: str = "flame"  # one of METHODS
    epochs: int = 200  # R, the maximum number of epochs (also the annealing horizon)
    patience: int = 30  # epochs without a better validation NDCG@20 before stopping
    batch_size: int = 256
    lr: float = 1e-3  # Adam
    seed: int = 42
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
    tau: float = 1.0  # InfoNCE temperature
    pair_weighting: str = "similarity"  # softmax of negative mean similarity, or "uniform" (ablation)
    members: int = 2  # N, members of ensemble_scratch
    packed: bool = True  # per-token work on real tokens only (False: the padded layout, for checks)
    eval_batch_size: int = 1024
    progress: bool = True  # tqdm progress bars

    def __post_init__(self):
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
        if min(self.epochs, self.batch_size, self.eval_batch_size) < 1 or self.patience < 0:
            raise ConfigError("TrainConfig: epochs, batch sizes must be positive and patience non-negative")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"TrainConfig.{key}: expected one of {list(allowed)}, got {value!r}")
