"""What the FLAME Book's chapters share: setup, configurations from parameters, experiments, tables, metrics.

Chapters import this package (installed with the project: ``pip install -e .``) instead of redefining these
pieces; the library (`flame_core`) knows nothing of the book. Relative paths in a chapter's parameters are
resolved against the repository root, never against the notebook's working directory, so papermill, nbval
and JupyterLab all write to the same places.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flame_core.config import ModelConfig, TrainConfig
from flame_core.experiments import Experiment, run
from flame_core.registry import display_name
from flame_core.utils import atomic_json, seed_everything

METRIC_KEYS = ("HR@10", "HR@20", "NDCG@10", "NDCG@20")  # the metrics the chapters' tables show


def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml above this package), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else repo_root() / path


def setup(output_dir: str | Path, seed: int = 42) -> Path:
    """Seed everything, create the chapter's output folder, set the figure defaults; returns the folder."""
    import plotly.io as pio
    import seaborn as sns

    seed_everything(seed)
    pio.renderers.default = "plotly_mimetype+notebook"  # survives into the HTML of the book
    sns.set_theme(style="whitegrid", context="notebook")
    out = resolve(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def configs(method: str, epochs: int, max_len: int = 50, hidden: int = 64, device: str = "cpu", seed: int = 42,
            **train_changes) -> tuple[ModelConfig, TrainConfig]:  # fmt: skip
    """The official settings with a chapter's parameters applied (any setting by its name, e.g. num_paths=4)."""
    model = ModelConfig(hidden=hidden, max_len=max_len)
    cfg = TrainConfig(method=method, epochs=epochs, device=device, seed=seed, progress=False, **train_changes)
    return model, cfg


def experiment(dataset: str, method: str, epochs: int, runs_dir: str | Path, max_len: int = 50, hidden: int = 64,
               device: str = "cpu", seed: int = 42, quiet: bool = True, **train_changes) -> Experiment:  # fmt: skip
    """Run (or reuse) one experiment under runs_dir; see flame_core.experiments.run."""
    model, cfg = configs(method, epochs, max_len, hidden, device, seed, **train_changes)
    return run(dataset, model, cfg, root=resolve(runs_dir), log=(lambda s: None) if quiet else print)


def write_metrics(output_dir: str | Path, metrics: dict) -> Path:
    """The chapter's metrics.json, which tests/test_book.py checks with tolerances."""
    path = resolve(output_dir) / "metrics.json"
    atomic_json(path, metrics)
    return path


def protocol(dataset: str, max_len: int, epochs: int, profile: str, device: str, seeds: list[int]) -> str:
    """The sentence every table's caption carries: protocol, data, seeds, budget, profile, device."""
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds}"
    return (f"leave-one-out, full ranking over all items, history excluded, selected on validation NDCG@20; "
            f"{dataset}, max_len {max_len}, {which}, epoch budget {epochs}, profile '{profile}', device {device}; "
            "metrics in percent")  # fmt: skip


def mean_sd(values: pd.Series) -> str:
    """'mean ± sd' over seeds (the mean alone for one value), two decimals."""
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def records_frame(records: list[dict], keys=METRIC_KEYS) -> pd.DataFrame:
    """One row per committed record: what ran (dataset, method, profile, seed, budget, convergence, device,
    revision) and its test metrics."""
    return pd.DataFrame([{
        "dataset": r["dataset"], "method": display_name(r["method"]), "profile": r["profile"], "seed": r["seed"],
        "epoch budget": r["epoch_budget"], "epochs run": r["epochs_run"], "converged": r["converged"],
        "max_len": r["model"]["max_len"], "device": r["device"], "git": r["git"], **{k: r["test"][k] for k in keys},
    } for r in records])  # fmt: skip


def records_summary(frame: pd.DataFrame, keys=METRIC_KEYS) -> pd.DataFrame:
    """`records_frame` grouped by dataset, method and profile: the seeds, budgets and mean ± sd of each metric."""
    return frame.groupby(["dataset", "method", "profile"], sort=False).agg(
        seeds=("seed", lambda v: list(v)), epoch_budget=("epoch budget", "max"),
        epochs_run=("epochs run", lambda v: list(v)), converged=("converged", "all"),
        max_len=("max_len", "max"), device=("device", "first"), **{k: (k, mean_sd) for k in keys})  # fmt: skip
