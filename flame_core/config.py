"""Typed, frozen configuration by concern: the backbone (`ModelConfig`), and a training run (`TrainConfig`):
the protocol and the optimiser, plus one settings object per concern of the methods, each registered with
the methods that read it (`flame_core.registry`):

    align      guided mutual learning: InfoNCE temperature, pair weights, lambda's schedule (ensemble_scratch,
               ensemble_guide, flame)
    flame      modular paths and the frozen anchor (ensemble_guide, flame)
    ensemble   members of ensemble_scratch
    emkd, canet, ckd   the related methods' own settings (names prefixed with the method's)

Defaults are the official FLAME release's (README, "The protocol"). Every setting has one name, used by the
code, the command line (``--num-paths``), profiles and records: a flat dict such as ``{"epochs": 3,
"num_paths": 4}`` builds a TrainConfig, and ``to_dict`` gives one back. Unknown keys and wrong types raise
a `ConfigError` that names the key, so a typo in a profile never trains the wrong thing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

PATH_ATTENTION = ("independent", "shared")
REC_FROM = ("separate", "path")
PAIR_WEIGHTING = ("similarity", "uniform")
PATH_SAMPLING = ("uniform", "fixed")
CHOICES = {
    "path_attention": PATH_ATTENTION,
    "rec_from": REC_FROM,
    "pair_weighting": PAIR_WEIGHTING,
    "path_sampling": PATH_SAMPLING,
}  # the settings that take one of a few words (the CLI lists them)
LEGACY_NAMES = {"split": "module_split"}  # names in records and run folders written before the rename


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
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})  # JSON gives lists

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


def _positive(obj, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) <= 0:
            raise ConfigError(f"{type(obj).__name__}.{key}: expected a positive value, got {getattr(obj, key)}")


def _non_negative(obj, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) < 0:
            raise ConfigError(f"{type(obj).__name__}.{key}: expected a non-negative weight, got {getattr(obj, key)}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {list(allowed)}, got {value!r}")


def module_split_parts(split: str) -> list[str]:
    """The parts of a module split, checked: "net", "emb|enc" or "emb|block|...|block"."""
    parts = split.split("|")
    if split in ("net", "emb|enc") or (parts[0] == "emb" and len(parts) > 1 and set(parts[1:]) == {"block"}):
        return parts
    raise ConfigError(
        f"module_split: expected 'net', 'emb|enc' or 'emb|block|...' (one 'block' per layer), got {split!r}"
    )


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
class AlignSettings(_Checked):
    """Guided mutual learning: the alignment loss between views and its annealed weight."""

    tau: float = 1.0  # InfoNCE temperature
    pair_weighting: str = "similarity"  # softmax of negative mean similarity, or "uniform" (ablation)
    lambda_0: float = 1.0  # alignment weight at epoch 0
    lambda_R: float = 1e-5  # alignment weight at epoch R
    anneal: bool = True  # False keeps lambda_0 constant (ablation)
    anneal_epochs: int = 200  # R, the horizon of lambda's annealing (the release's num_epoch), apart from the budget

    def __post_init__(self):
        _choice("pair_weighting", self.pair_weighting, PAIR_WEIGHTING)
        if self.anneal_epochs < 1 or self.tau <= 0:
            raise ConfigError("AlignSettings: anneal_epochs and tau must be positive")


@dataclass(frozen=True)
class FlameSettings(_Checked):
    """Modular paths through a frozen and a learnable network, and the frozen anchor."""

    module_split: str = "emb|enc"  # "net", "emb|enc", "emb|block|block" (one "block" per layer)
    path_attention: str = "independent"  # "independent" paths, or "shared" (released code, split emb|enc only)
    num_paths: int | None = None  # K sampled paths per step (pure learnable always included); None = all 2^M
    path_sampling: str = "uniform"  # K-1 other paths drawn afresh each step, or "fixed": drawn once from the seed
    rec_from: str = "separate"  # L_rec from a separate learnable forward, or reuse the pure learnable "path"
    frozen_dropout: bool = True  # the frozen network's dropout stays active in training (official)
    anchor_seed: int = 0  # seed of the pretrained anchor: one anchor per dataset and settings, shared by every seed

    def __post_init__(self):
        _choice("path_attention", self.path_attention, PATH_ATTENTION)
        _choice("rec_from", self.rec_from, REC_FROM)
        _choice("path_sampling", self.path_sampling, PATH_SAMPLING)
        module_split_parts(self.module_split)
        if self.path_attention == "shared" and self.module_split != "emb|enc":
            raise ConfigError(
                "FlameSettings.path_attention='shared' is the released code's behaviour for module_split 'emb|enc' only"
            )
        if self.num_paths is not None and self.num_paths < 2:
            raise ConfigError(f"FlameSettings.num_paths: need at least 2 paths to align, got {self.num_paths}")


@dataclass(frozen=True)
class EnsembleSettings(_Checked):
    """A conventional ensemble trained from scratch."""

    members: int = 2  # N, members of ensemble_scratch (seeds s..s+N-1)

    def __post_init__(self):
        if self.members < 2:
            raise ConfigError(f"EnsembleSettings.members: an ensemble needs at least 2 members, got {self.members}")


@dataclass(frozen=True)
class EMKDSettings(_Checked):
    """EMKD: members, logit distillation, contrast of augmented views."""

    emkd_members: int = 3  # N, SASRec members of emkd (seeds s..s+N-1)
    emkd_temperature: float = 1.0  # softening temperature of emkd's logit distillation
    emkd_distill_weight: float = 1e-3  # weight of emkd's symmetric-KL logit distillation between members
    emkd_contrast_weight: float = 0.1  # weight of emkd's intra- plus cross-network InfoNCE
    emkd_tau: float = 1.0  # temperature of emkd's InfoNCE
    emkd_crop: float = 0.6  # emkd crop augmentation: share of a sequence's items kept (contiguous)
    emkd_mask: float = 0.3  # emkd mask augmentation: share of a sequence's items deleted

    def __post_init__(self):
        _positive(self, "emkd_temperature", "emkd_tau")
        _non_negative(self, "emkd_distill_weight", "emkd_contrast_weight")
        if self.emkd_members < 2:
            raise ConfigError(
                f"EMKDSettings.emkd_members: an ensemble needs at least 2 members, got {self.emkd_members}"
            )
        if not 0.0 < self.emkd_crop <= 1.0:
            raise ConfigError(f"EMKDSettings.emkd_crop: expected a share in (0, 1], got {self.emkd_crop}")
        if not 0.0 <= self.emkd_mask < 1.0:
            raise ConfigError(
                f"EMKDSettings.emkd_mask: expected a share in [0, 1) (one item stays), got {self.emkd_mask}"
            )


@dataclass(frozen=True)
class CANetSettings(_Checked):
    """CANet: the routing space, the router's temperature and its two auxiliary losses."""

    canet_sizes: tuple[int, ...] = (32, 48, 64)  # canet routing space: embedding and hidden sizes, ascending, <= hidden
    canet_tau: float = 1.0  # canet Gumbel-softmax temperature of the router
    canet_uniform_weight: float = 0.01  # weight of canet's uniform-routing loss
    canet_guide_weight: float = 0.01  # weight of canet's easy/hard guide loss
    canet_guide_k: int = 20  # canet: a user is easy when the smallest submodel ranks the target in its top k

    def __post_init__(self):
        _positive(self, "canet_tau", "canet_guide_k")
        _non_negative(self, "canet_uniform_weight", "canet_guide_weight")
        sizes = self.canet_sizes
        if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
            raise ConfigError(
                f"CANetSettings.canet_sizes: expected distinct positive sizes in ascending order, got {sizes}"
            )


@dataclass(frozen=True)
class CKDSettings(_Checked):
    """Multi-teacher distillation: the teachers, the distillation and the curriculum."""

    ckd_teachers: int = 3  # K, pretrained SASRec teachers of ckd (seeds s+1..s+K)
    ckd_teacher_hidden: tuple[int, ...] = (64, 64, 32)  # hidden size of teacher k: entry k (cycled)
    ckd_temperature: float = 2.0  # ckd distillation temperature over the in-batch candidates
    ckd_distill_weight: float = 1.0  # weight of ckd's weighted multi-teacher distillation
    ckd_curriculum_start: float = 0.3  # c0: ckd's epoch e trains on the easiest c0 + (1 - c0) * e / E of the samples
    ckd_curriculum_epochs: int = 20  # E, epochs until ckd's curriculum pool holds every training sample

    def __post_init__(self):
        _positive(self, "ckd_teachers", "ckd_temperature", "ckd_curriculum_epochs")
        _non_negative(self, "ckd_distill_weight")
        if not 0.0 < self.ckd_curriculum_start <= 1.0:
            raise ConfigError(
                f"CKDSettings.ckd_curriculum_start: expected a share in (0, 1], got {self.ckd_curriculum_start}"
            )
        if not self.ckd_teacher_hidden or min(self.ckd_teacher_hidden) < 1:
            raise ConfigError(f"CKDSettings.ckd_teacher_hidden: expected positive sizes, got {self.ckd_teacher_hidden}")


CONCERNS = {
    "align": AlignSettings,
    "flame": FlameSettings,
    "ensemble": EnsembleSettings,
    "emkd": EMKDSettings,
    "canet": CANetSettings,
    "ckd": CKDSettings,
}


@dataclass(frozen=True, init=False)
class TrainConfig(_Checked):
    """One training run: the method, the protocol and the optimiser, and the settings of every concern.

    Build it from flat names, ``TrainConfig(method="flame", epochs=3, num_paths=4)``: each name goes to the
    field or concern that owns it (the `CONCERNS` objects can be given whole too: ``flame=FlameSettings()``).
    A method reads the concerns `flame_core.registry` lists for it; the others keep their defaults and do not
    enter its run key.
    """

    method: str = "flame"  # one of the registered methods (python -m flame_core train --help lists them)
    epochs: int = 200  # the maximum number of epochs (the budget; early stopping may end sooner)
    patience: int = 30  # epochs without a better validation NDCG@20 before stopping
    batch_size: int = 256
    lr: float = 1e-3  # Adam
    seed: int = 42  # the learnable networks' initialisation, dropout and shuffling
    device: str = "auto"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    keep: int | None = -1  # items kept per user before splitting; -1 = max_len + 3 (official), None = all
    packed: bool | None = None  # per-token work on real tokens only; unset: packed on CPU, padded on CUDA (faster)
    cuda_graph: bool = True  # on CUDA, capture the whole training step as one CUDA graph where the method allows
    eval_batch_size: int = 1024
    progress: bool = True  # tqdm progress bars
    align: AlignSettings = AlignSettings()
    flame: FlameSettings = FlameSettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    emkd: EMKDSettings = EMKDSettings()
    canet: CANetSettings = CANetSettings()
    ckd: CKDSettings = CKDSettings()

    def __init__(self, **values):
        protocol = {f.name for f in dataclasses.fields(self) if f.name not in CONCERNS}
        hints = typing.get_type_hints(type(self))
        owned = {k: [] for k in CONCERNS}
        for key, value in values.items():
            if key in protocol or key in CONCERNS:
                if key in protocol and not _type_ok(value, hints[key]):
                    raise ConfigError(f"TrainConfig.{key}: expected {hints[key]}, got {value!r}")
                continue
            concern = SETTING_OWNER.get(key)
            if concern is None:
                valid = sorted(protocol) + sorted(SETTING_OWNER)
                raise ConfigError(f"TrainConfig: unknown key(s) {[key]}; valid keys: {valid}")
            owned[concern].append(key)
        for f in dataclasses.fields(self):
            if f.name in CONCERNS:
                given = values.get(f.name, f.default)
                if isinstance(given, dict):
                    given = CONCERNS[f.name].from_dict(given)
                if owned[f.name]:
                    given = given.replace(**{k: values[k] for k in owned[f.name]})
                object.__setattr__(self, f.name, given)
            else:
                object.__setattr__(self, f.name, values.get(f.name, f.default))
        self.__post_init__()

    def __post_init__(self):
        from flame_core.registry import REGISTRY  # the registry imports this module

        if self.method not in REGISTRY:
            raise ConfigError(f"TrainConfig.method: expected one of {list(REGISTRY)}, got {self.method!r}")
        if min(self.epochs, self.batch_size, self.eval_batch_size) < 1 or self.patience < 0:
            raise ConfigError("TrainConfig: epochs and batch sizes must be positive, patience non-negative")

    @classmethod
    def from_dict(cls, values: dict, legacy: bool = False) -> TrainConfig:
        """From flat names (and whole concerns). `legacy` reads a configuration written by an earlier version:
        renamed keys are mapped (`LEGACY_NAMES`) and keys that no setting owns any more are dropped."""
        if legacy:
            values = {LEGACY_NAMES.get(k, k): v for k, v in values.items()}
            known = {f.name for f in dataclasses.fields(cls)} | set(SETTING_OWNER)
            values = {k: v for k, v in values.items() if k in known}
        return cls(**values)

    def to_dict(self) -> dict:
        """Flat: the protocol's fields and every concern's settings by their names."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out.update(dataclasses.asdict(value) if f.name in CONCERNS else {f.name: value})
        return out

    def replace(self, **changes) -> TrainConfig:
        return type(self)(**{**self.to_dict(), **changes})

    def settings(self, concerns: tuple[str, ...] | None = None) -> dict:
        """The flat settings of the given concerns (default: the method's, from the registry)."""
        from flame_core.registry import REGISTRY

        concerns = REGISTRY[self.method].concerns if concerns is None else concerns
        return {k: v for c in concerns for k, v in dataclasses.asdict(getattr(self, c)).items()}


SETTING_OWNER = {f.name: concern for concern, cls in CONCERNS.items() for f in dataclasses.fields(cls)}
