"""What the book's chapters share: setup, configurations from parameters, experiments, metrics files.

Chapters import these instead of redefining them. Relative paths in a chapter's parameters are resolved
against the repository root (the folder holding pyproject.toml above this package), never against the
notebook's working directory, so papermill, nbval and jupyter lab all write to the same places.
"""

from __future__ import annotations

from pathlib import Path

from flame_core.config import ModelConfig, TrainConfig
from flame_core.experiments import Experiment, run
from flame_core.utils import atomic_json, seed_everything


def repo_root() -> Path:
    """The repository root when the package is used from a checkout, else the working directory."""
    root = Path(__file__).resolve().parents[1]
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
    """The official settings with a chapter's parameters applied."""
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
