"""Experiments for the CLI and the book: build a method with its anchor, run it once, record provenance.

- `build(...)`: a method on its device, with the pretrained networks it declares (`pretrained_specs`) set:
  FLAME's anchor (a given file, or the cached Single pretrained with the same settings), ckd's teachers.
- `run(...)`: train a method, or reuse the finished run with the same data and settings (its results and
  selected weights), so chapters that share experiments, and a second execution of a chapter, do not
  train twice. An interrupted run resumes.
- `record(...)` / `load_records(...)`: a results record with its provenance (command, git revision,
  dataset statistics, seed, epoch budget, whether it converged, device, date), one JSON file per run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from flame_core.anchor import anchor_key, cached_anchor_results, load_anchor, pretrain_anchor
from flame_core.backbone import SASRecStack
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Interactions, Split, build_split, load_dataset
from flame_core.engine import load_weights, selected_weights, train, train_stacked
from flame_core.files import CHECKPOINT, read_json, require
from flame_core.methods import Method, Single, build_method
from flame_core.metrics import evaluate_scores, metrics_from_ranks
from flame_core.registry import method_class
from flame_core.utils import (
    atomic_json,
    file_lock,
    git_revision,
    machine_fingerprint,
    portable_command,
    resolve_device,
    sha256_file,
    weights_digest,
)

PROTOCOL_KEY = ("method", "epochs", "patience", "batch_size", "lr", "seed", "keep")  # what a run's numbers depend on


@functools.lru_cache(maxsize=8)
def load(dataset: str, max_len: int = 50, keep: int | None = -1) -> tuple[Interactions, Split]:
    """A dataset and its split tensors (on the CPU), cached per process."""
    data = load_dataset(dataset)
    return data, build_split(data, max_len, keep)


def build(
    data: Interactions,
    split: Split,
    model: ModelConfig,
    cfg: TrainConfig,
    frozen: str | None = None,
    log: Callable[[str], None] = print,
    seeds: list[int] | None = None,
) -> tuple[Method, list[dict]]:
    """The method of `cfg` on the split's device with its pretrained networks set; returns (method, provenance).

    `frozen` replaces the pretrained anchor of a method that needs exactly one (flame, ensemble_guide).
    The provenance names each pretrained network without machine paths (`pretrained_provenance`); empty when
    the method needs none. `seeds`: S stacked replicas.
    """
    device = split.train_targets.device
    method = build_method(data.num_items, model, cfg, tuple(seeds) if seeds else None).to(device)
    specs = method.pretrained_specs()
    if not specs:
        return method, []
    if frozen:
        if len(specs) != 1:
            raise ValueError(f"--frozen gives one anchor; {cfg.method} needs {len(specs)} pretrained networks")
        nets, paths = [load_anchor(frozen, specs[0][1], data.num_items)], [Path(frozen)]
    else:
        pairs = [pretrain_anchor(data, split, spec_model, spec_cfg, log=log) for _, spec_model, spec_cfg in specs]
        nets, paths = [net for net, _ in pairs], [path for _, path in pairs]
    method.set_pretrained([net.to(device) for net in nets])
    return method, pretrained_provenance(specs, paths, nets, data, frozen)


def pretrained_provenance(
    specs: list, paths: list[Path], nets: list[SASRecStack], data: Interactions, frozen: str | None
) -> list[dict]:
    """Where each pretrained network comes from, with no machine path: a given file by name and content
    digest, or an anchor pretrained here by its seed, budget and cache key, with its own training seconds,
    epochs and the machine that timed them (so a record can count the anchor's cost, where it compares).
    Either way `weights` digests the network's weights (`utils.weights_digest`): runs that share an anchor
    show the same digest, and an anchor trained again (a lost cache) shows whether it came out the same."""
    weights = [weights_digest(net.state_dict()) for net in nets]
    if frozen:
        return [
            {
                "name": specs[0][0],
                "origin": "file",
                "file": Path(frozen).name,
                "sha256": sha256_file(frozen),
                "weights": weights[0],
            }
        ]
    out = []
    for (name, model, cfg), path, digest in zip(specs, paths, weights):
        cached = cached_anchor_results(data, model, cfg) or {}  # its own training: seconds, epochs, selection
        out.append(
            {
                "name": name,
                "origin": "pretrained",
                "seed": cfg.seed,
                "epoch_budget": cfg.epochs,
                "key": anchor_key(data, model, cfg),
                "file": path.name,
                "weights": digest,
                **{
                    k: cached[k]
                    for k in ("train_seconds", "train_cpu_seconds", "epochs_run", "best_epoch", "machine")
                    if cached.get(k) is not None
                },
            },
        )
    return out


def network_ranks(
    net: SASRecStack | str | Path, model: ModelConfig, split: Split, which: str = "test", batch_size: int = 1024
) -> torch.Tensor:
    """Each user's target rank (U,) on split "valid" or "test" under one SASRec used alone (a 1-network stack,
    or weights in a file: a released or cached anchor), ranked as every run is (full ranking, history
    excluded, dropout off), so it compares user by user with a record's ``test_ranks``."""
    if not isinstance(net, SASRecStack):
        net = load_anchor(net, model, split.num_items)
    probe = Single(split.num_items, model, TrainConfig(method="single"))
    probe.learn.load_state_dict(net.state_dict())
    probe.to(split.test_targets.device).eval()
    return evaluate_scores(probe.scores, *split.inputs(which), batch_size)[1]


def evaluate_network(
    net: SASRecStack | str | Path, model: ModelConfig, split: Split, which: str = "test", batch_size: int = 1024
) -> dict:
    """Full-ranking metrics of one SASRec used alone (`network_ranks`)."""
    return metrics_from_ranks(network_ranks(net, model, split, which, batch_size))


def pretrained_metrics(method: Method, split: Split, which: str = "test") -> dict[str, dict]:
    """Metrics of each of a method's pretrained networks used alone (as a Single SASRec), by name."""
    return {
        name: evaluate_network(net, model, split, which, method.cfg.eval_batch_size)
        for (name, model, _), net in zip(method.pretrained_specs(), method.pretrained_nets())
    }


def pretraining_seconds(method: Method, data: Interactions) -> float:
    """Training seconds of the method's pretrained networks (anchor, teachers) as the anchor cache stores them;
    0 for a method without any, NaN when one is not in the cache."""
    cached = [cached_anchor_results(data, model, cfg) for _, model, cfg in method.pretrained_specs()]
    return sum(c["train_seconds"] if c else math.nan for c in cached)


def anchor_metrics(method: Method, split: Split, which: str = "test") -> dict:
    """Metrics of a FLAME-type method's frozen network used alone (as a Single SASRec)."""
    return pretrained_metrics(method, split, which)["anchor"]


def run_key(data: Interactions, model: ModelConfig, cfg: TrainConfig, frozen: str | None = None) -> str:
    """12 hex digits of the data's content and every setting that changes the run's numbers: the protocol and
    the concerns the method reads (device, layout, progress bars and evaluation batches do not count; a
    `frozen` anchor file counts by its content). Like the device, training a seed stacked with others does
    not count either: it draws dropout from another random stream but runs the same settings, so a seed
    trained stacked by the sweep is found by a later request for it alone (the record says how it ran).
    """
    train = {**{k: getattr(cfg, k) for k in PROTOCOL_KEY}, **cfg.settings()}  # the concerns the method reads
    anchor = sha256_file(frozen)[:16] if frozen else None  # the given anchor by content, wherever it lies
    blob = {"data": data.fingerprint(), "model": model.to_dict(), "train": train, "frozen": anchor}
    return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def run_dir(
    root: str | Path, data: Interactions, model: ModelConfig, cfg: TrainConfig, frozen: str | None = None
) -> Path:
    """The run directory of one seed (cfg.seed) under `root`: root/DATASET/METHOD-seedSEED-KEY."""
    return Path(root) / data.name / f"{cfg.method}-seed{cfg.seed}-{run_key(data, model, cfg, frozen)}"


@dataclass
class Experiment:
    """A finished run: its results record, the method with the selected weights, the data and split."""

    results: dict
    method: Method
    data: Interactions
    split: Split
    out_dir: Path
    reused: bool
    pretrained: list[dict]  # provenance of the pretrained networks (`build`), for `record`


def run(
    dataset: str,
    model: ModelConfig,
    cfg: TrainConfig,
    root: str | Path = "runs",
    frozen: str | None = None,
    log: Callable[[str], None] = print,
) -> Experiment:
    """Train `cfg.method` on `dataset` with `cfg.seed`, or reuse the finished run with the same key under `root`."""
    return run_seeds(dataset, model, cfg, [cfg.seed], root, frozen=frozen, log=log)[0]


def run_seeds(
    dataset: str,
    model: ModelConfig,
    cfg: TrainConfig,
    seeds: list[int],
    root: str | Path = "runs",
    frozen: str | None = None,
    log: Callable[[str], None] = print,
    out: str | Path | None = None,
) -> list[Experiment]:
    """One experiment per seed: several seeds of a stackable method train as one stacked model, the others one
    after another; finished runs are reused, interrupted ones resume.

    Run directories: root/DATASET/METHOD-seedSEED-KEY (a seed trained stacked or alone has the same one); the
    seeds without results train together, their stacked checkpoint in root/DATASET/METHOD-stack-SEEDS-KEY.
    `out` replaces that scheme by one folder: the run directory, or with several seeds the stack's folder and
    a folder seedSEED per seed. Locks make a second process that asks for the same runs wait and reuse them.
    """
    seeds, out = list(seeds), Path(out) if out is not None else None
    if len(seeds) > 1 and not method_class(cfg.method).stackable:
        one_by_one = []
        for s in seeds:
            seed_out = out / f"seed{s}" if out else None
            one_by_one += run_seeds(
                dataset, model, cfg.replace(seed=s), [s], root, frozen=frozen, log=log, out=seed_out
            )
        return one_by_one
    data, split = load(dataset, model.max_len, cfg.keep)
    split = split.to(resolve_device(cfg.device))
    folder = Path(root) / data.name
    if out is not None:
        dirs = [out / f"seed{s}" for s in seeds] if len(seeds) > 1 else [out]
    else:
        dirs = [run_dir(root, data, model, cfg.replace(seed=s), frozen) for s in seeds]
    with contextlib.ExitStack() as locks:  # one lock per run folder, taken in a fixed order
        for d in sorted(dirs):
            locks.enter_context(file_lock(d.parent / f".{d.name}.lock", log))
        todo = [(s, d) for s, d in zip(seeds, dirs) if not (d / "results.json").exists()]  # the rest are reused
        if len(todo) > 1:  # one stacked model
            stack = [s for s, _ in todo]
            key = run_key(data, model, cfg.replace(seed=stack[0]), frozen)
            stack_dir = out or folder / f"{cfg.method}-stack-{'-'.join(map(str, stack))}-{key}"
            method, _ = build(data, split, model, cfg.replace(seed=stack[0]), frozen, log=log, seeds=stack)
            train_stacked(method, split, stack_dir, [d for _, d in todo], resume=True, log=log)
        elif todo:
            ((s, d),) = todo
            method, _ = build(data, split, model, cfg.replace(seed=s), frozen, log=log)
            train(method, split, out_dir=d, resume=True, log=log)
    trained = {d for _, d in todo}
    experiments = []
    for s, d in zip(seeds, dirs):  # the anchor was just logged for a run trained here
        quiet = (lambda line: None) if d in trained else log
        method, pretrained = build(data, split, model, cfg.replace(seed=s), frozen, log=quiet)
        load_weights(method, selected_weights(d, split.test_targets.device)[0], d / CHECKPOINT)
        method.eval()
        results = read_json(d / "results.json", "the results of a finished run")
        reused = d not in trained
        experiments.append(Experiment(results, method, data, split, d, reused=reused, pretrained=pretrained))
    return experiments


def record(
    results: dict,
    data: Interactions,
    model: ModelConfig,
    cfg: TrainConfig,
    root: str | Path,
    profile: str = "cli",
    command: str | None = None,
    frozen: str | None = None,
    pretrained: list[dict] | None = None,
    git: str | None = None,
) -> Path:
    """Write the provenance record of a finished run to root/DATASET/METHOD-seedSEED-KEY.json (atomically).

    `frozen` is the anchor file the run was given (part of the key); `pretrained` the provenance of its
    pretrained networks (`build`'s). A replica trained stacked records the seeds of its stack
    (`stacked_with`). The record holds no absolute path: `command` defaults to this process's command line
    with its paths made relative (`portable_command`); `git` the revision of the code that ran (default:
    the working tree's now) and `sessions` each process that trained the run, with its first epoch, revision
    and machine (a resumed run may span several); `machine` the hardware, cores and threads that timed it
    (`machine_fingerprint`), so that readers compare seconds only between runs timed alike.
    """
    stacked_with = results.get("stacked_with") or []
    key, device = run_key(data, model, cfg, frozen), resolve_device(cfg.device)
    rec = {
        "dataset": data.name,
        "method": cfg.method,
        "profile": profile,
        "seed": cfg.seed,
        "stacked_with": stacked_with,
        "pretrained": pretrained or [],
        "epoch_budget": cfg.epochs,
        "epochs_run": results["epochs_run"],
        "best_epoch": results["best_epoch"],
        "converged": results["stopped_early"],
        "valid": results["valid"],
        "test": results["test"],
        "test_ranks": results.get("test_ranks"),
        "history": results["history"],
        "parameters": results["parameters"],
        "train_seconds": results["train_seconds"],
        "train_cpu_seconds": results.get("train_cpu_seconds"),  # None where some epochs did not log them
        "inference_seconds_per_1000_users": results["inference_seconds_per_1000_users"],
        "report": results.get("report", {}),
        "sessions": results.get("sessions", []),
        "model": model.to_dict(),
        "train": cfg.to_dict(),
        "command": command or portable_command(["python", "-m", "flame_core", *sys.argv[1:]]),
        "git": git or git_revision(),
        "dataset_stats": data.stats(),
        "device": str(device),
        "machine": machine_fingerprint(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "key": key,
    }
    path = Path(root) / data.name / f"{cfg.method}-seed{cfg.seed}-{key}.json"
    atomic_json(path, rec)
    return path


def load_records(root: str | Path = "results") -> list[dict]:
    """Every record under `root` (sorted by dataset, method, seed); an absent folder gives []."""
    records = [_read_record(p) for p in sorted(Path(root).glob("*/*.json"))]
    return sorted(records, key=lambda r: (r["dataset"], r["method"], r["seed"]))


RECORD_KEYS = ("dataset", "method", "seed", "profile", "valid", "test", "history")  # what readers of records use


def _read_record(path: Path) -> dict:
    what = "a results record written by `python -m flame_core train --record` or `sweep`"
    rec = read_json(path, what)
    require(rec, RECORD_KEYS, path, what)
    return rec
