"""The frozen anchor: a Single SASRec pretrained on the same split and settings, cached and reused.

The cache key covers everything that changes the anchor: the dataset's content (fingerprint), the model
configuration and the training settings a Single run uses (seed, epochs, patience, batch size, lr,
truncation). An anchor is selected on validation like every model here. Released anchors of the official
code (plain SASRec state dicts) load through `load_anchor` too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from flame_core.backbone import SASRecStack, load_official
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Interactions, Split
from flame_core.engine import train
from flame_core.files import FileError, first_line, read_torch, require
from flame_core.methods import Single
from flame_core.utils import atomic_torch_save, cache_dir, file_lock, machine_fingerprint

ANCHOR_SETTINGS = ("seed", "epochs", "patience", "batch_size", "lr", "keep")
CACHED = "an anchor cached by flame_core (its weights, settings and pretraining results)"


def anchor_key(data: Interactions, model: ModelConfig, cfg: TrainConfig) -> str:
    """A 16-hex key of the dataset content, the model and the anchor's training settings."""
    settings = {k: getattr(cfg, k) for k in ANCHOR_SETTINGS}
    blob = json.dumps({"data": data.fingerprint(), "model": model.to_dict(), "train": settings}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def pretrain_anchor(
    data: Interactions,
    split: Split,
    model: ModelConfig,
    cfg: TrainConfig,
    root: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[SASRecStack, Path]:
    """Return the cached anchor for these settings, training (and caching) a Single SASRec if needed.

    An interrupted pretraining resumes from its own checkpoint on the next call.
    """
    path, folder = anchor_paths(data, model, cfg, root)
    with file_lock(path.parent / f".{path.stem}.lock", log):  # another process training it: wait, then reuse it
        return _pretrain_or_load(data, split, model, cfg, path, folder, log)


def _pretrain_or_load(
    data: Interactions,
    split: Split,
    model: ModelConfig,
    cfg: TrainConfig,
    path: Path,
    folder: Path,
    log: Callable[[str], None],
) -> tuple[SASRecStack, Path]:
    device = split.train_targets.device
    if path.exists():
        try:
            anchor = load_anchor(path, model, data.num_items)
            log(f"anchor: using cached {path}")
            return anchor.to(device), path
        except FileError as err:  # a damaged cache entry is rebuilt (from its run folder when that survived)
            log(f"warning: {err}; pretraining the anchor again")
    log(f"anchor: pretraining a Single SASRec for {data.name} (cache entry {path.name})")
    single_cfg = cfg.replace(method="single")
    method = Single(data.num_items, model, single_cfg).to(device)
    results = train(method, split, out_dir=folder, resume=True, log=log)
    meta = {k: results[k] for k in ("best_epoch", "epochs_run", "valid", "test", "train_seconds", "train_cpu_seconds")}
    meta["machine"] = machine_fingerprint(device)  # the machine that timed it (that finished it, if it resumed)
    settings = {"model": model.to_dict(), "train": {k: getattr(cfg, k) for k in ANCHOR_SETTINGS}}
    atomic_torch_save(
        path,
        {
            "state": method.learn.state_dict(),
            "settings": settings,
            "dataset": data.stats(),
            "fingerprint": data.fingerprint(),
            "results": meta,
        },
    )
    return method.learn, path


def anchor_paths(
    data: Interactions, model: ModelConfig, cfg: TrainConfig, root: Path | None = None
) -> tuple[Path, Path]:
    """Where the anchor for these settings is cached, and the run folder its pretraining trains in."""
    root = Path(root) if root is not None else cache_dir() / "anchors"
    stem = f"{data.name}-{anchor_key(data, model, cfg)}"
    return root / f"{stem}.pt", root / f"{stem}-run"


def cached_anchor_results(
    data: Interactions, model: ModelConfig, cfg: TrainConfig, root: Path | None = None
) -> dict | None:
    """The pretraining results stored with the cached anchor for these settings (selected epoch, epochs run,
    validation and test metrics, training seconds, the machine that timed them; anchors cached before that
    have no "machine"), or None if it is not cached."""
    path, _ = anchor_paths(data, model, cfg, root)
    if not path.exists():
        return None
    cached = read_torch(path, CACHED)
    require(cached, ("results",), path, CACHED)
    return cached["results"]


def load_anchor(path: str | Path, model: ModelConfig, num_items: int) -> SASRecStack:
    """Load an anchor: one cached by `pretrain_anchor`, or a released one (plain SASRec state dict).

    A file of another kind, a damaged one, or one for other sizes raises FileError naming it."""
    what = "anchor weights: a released SASRec state dict or an anchor cached by flame_core"
    obj = read_torch(path, what)
    if isinstance(obj, dict) and "item_emb.weight" in obj:
        return load_official(path, model, num_items, state=obj)
    require(obj, ("state",), path, what)
    net = SASRecStack(1, num_items, model)
    try:
        net.load_state_dict(obj["state"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise FileError(
            f"{path}: not an anchor for {num_items} items with these settings ({first_line(err)})"
        ) from None
    return net
