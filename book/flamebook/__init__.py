"""What the FLAME Book's chapters share: setup, configurations from parameters, experiments, tables, metrics.

Chapters import this package (installed with the project: ``pip install -e .``) instead of redefining these
pieces; the library (`flame_core`) knows nothing of the book. Relative paths in a chapter's parameters are
resolved against the repository root, never against the notebook's working directory, so papermill, nbval
and JupyterLab all write to the same places.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flame_core.analysis import paired_comparison, time_to_reach, user_ndcg
from flame_core.config import ModelConfig, TrainConfig
from flame_core.experiments import Experiment, run
from flame_core.metrics import decode_ranks
from flame_core.registry import display_name
from flame_core.release import RELEASED_ANCHORS
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


def configs(
    method: str, epochs: int, max_len: int = 50, hidden: int = 64, device: str = "cpu", seed: int = 42, **train_changes
) -> tuple[ModelConfig, TrainConfig]:
    """The official settings with a chapter's parameters applied (any setting by its name, e.g. num_paths=4)."""
    model = ModelConfig(hidden=hidden, max_len=max_len)
    cfg = TrainConfig(method=method, epochs=epochs, device=device, seed=seed, progress=False, **train_changes)
    return model, cfg


def experiment(
    dataset: str,
    method: str,
    epochs: int,
    runs_dir: str | Path,
    max_len: int = 50,
    hidden: int = 64,
    device: str = "cpu",
    seed: int = 42,
    quiet: bool = True,
    frozen: str | None = None,
    **train_changes,
) -> Experiment:
    """Run (or reuse) one experiment under runs_dir; see flame_core.experiments.run (`frozen`: an anchor file)."""
    model, cfg = configs(method, epochs, max_len, hidden, device, seed, **train_changes)
    return run(dataset, model, cfg, root=resolve(runs_dir), frozen=frozen, log=(lambda s: None) if quiet else print)


def write_metrics(output_dir: str | Path, metrics: dict) -> Path:
    """The chapter's metrics.json, which tests/test_book.py checks with tolerances."""
    path = resolve(output_dir) / "metrics.json"
    atomic_json(path, metrics)
    return path


def measured(output_dir: str | Path, name: str, measure: Callable[[], Any]) -> Any:
    """`measure()` (timings, a JSON-able value), taken once per book build.

    scripts/build_book.py executes a chapter twice (papermill, then nbval) with one FLAMEBOOK_BUILD id in the
    environment: the second execution reuses what the first measured, as it reuses trained runs, so the
    validation does not repeat minutes of benchmarks. Without that variable (JupyterLab, papermill by hand)
    every call measures afresh.
    """
    build = os.environ.get("FLAMEBOOK_BUILD")
    path = resolve(output_dir) / f"measured-{name}.json"
    if build and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("build") == build:
            return saved["value"]
    value = measure()
    if build:
        atomic_json(path, {"build": build, "value": value})
    return value


def protocol(dataset: str, max_len: int, epochs: int, profile: str, device: str, seeds: list[int]) -> str:
    """The sentence every table's caption carries: protocol, data, seeds, budget, profile, device."""
    which = seeds_phrase(seeds)
    return (
        f"leave-one-out, full ranking over all items, history excluded, selected on validation NDCG@20; "
        f"{dataset}, max_len {max_len}, {which}, epoch budget {epochs}, profile '{profile}', device {device}; "
        "metrics in percent"
    )


def seeds_phrase(seeds: list, shown: str | None = None) -> str:
    """The seeds in words: "seed 42" for one, else "seeds " and `shown` (default: the list, "[42, 43]")."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {shown or seeds}"


def seeds_listed(seeds) -> str:
    """`seeds_phrase` with the seeds as a plain list: "seed 42", "seeds 42, 43"."""
    return seeds_phrase(list(seeds), shown=", ".join(map(str, seeds)))


def mean_sd(values: pd.Series) -> str:
    """'mean ± sd' over seeds (the mean alone for one value), two decimals."""
    return plus_minus(values.mean(), values.std(ddof=1))


def plus_minus(mean: float, sd: float) -> str:
    """'mean ± sd', two decimals; the mean alone where sd is NaN (one seed)."""
    return f"{mean:.2f}" if np.isnan(sd) else f"{mean:.2f} ± {sd:.2f}"


def records_frame(records: list[dict], keys=METRIC_KEYS) -> pd.DataFrame:
    """One row per committed record: what ran (dataset, method, profile, seed, budget, convergence, device,
    revision) and its test metrics."""
    return pd.DataFrame(
        [
            {
                "dataset": r["dataset"],
                "method": display_name(r["method"]),
                "profile": r["profile"],
                "seed": r["seed"],
                "epoch budget": r["epoch_budget"],
                "epochs run": r["epochs_run"],
                "converged": r["converged"],
                "max_len": r["model"]["max_len"],
                "device": r["device"],
                "git": revisions(r),
                **{k: r["test"][k] for k in keys},
            }
            for r in records
        ]
    )


def records_summary(frame: pd.DataFrame, keys=METRIC_KEYS) -> pd.DataFrame:
    """`records_frame` grouped by dataset, method and profile: the seeds, budgets, mean ± sd of each metric and
    the code that trained them (the git revisions of its records, in order, each once)."""
    return frame.groupby(["dataset", "method", "profile"], sort=False).agg(
        seeds=("seed", lambda v: list(v)),
        epoch_budget=("epoch budget", "max"),
        epochs_run=("epochs run", lambda v: list(v)),
        converged=("converged", "all"),
        max_len=("max_len", "max"),
        device=("device", "first"),
        **{k: (k, mean_sd) for k in keys},
        code=("git", lambda v: ", ".join(dict.fromkeys(", ".join(v).split(", ")))),
    )


# ---- the main table and convergence from committed records -------------------------------------------------
PAPER_SPEEDUP = 7.69  # the paper's claim: FLAME reaches Single's best validation NDCG@20 up to 7.69x faster
NOT_RUN = "not run"
BASELINE = "baseline"  # the comparison cells of the baseline's own row
NO_ANCHOR = "no released anchor"
SINGLE_NOT_RUN = "Single not run"  # a comparison cell where the baseline has no record
RANKS_NOT_STORED = "ranks not stored"  # a per-user cell where the records hold no ranks
RELEASED_VARIANT = f"{display_name('flame')} (released anchor)"  # the row of FLAME trained from a released anchor


def variant(rec: dict) -> str:
    """How tables name a record's method: FLAME trained from a released anchor file is its own row."""
    name = display_name(rec["method"])
    return f"{name} (released anchor)" if any(p["origin"] == "file" for p in rec.get("pretrained", [])) else name


def user_ndcg_over_seeds(recs: list[dict], seeds: list[int], k: int = 20) -> np.ndarray:
    """Per-user test NDCG@k (0..1), averaged over the given seeds' records (their stored ranks)."""
    by_seed = {r["seed"]: r for r in recs}
    return np.mean([user_ndcg(decode_ranks(by_seed[s]["test_ranks"]), k) for s in seeds], axis=0)


PER_USER = "per user"  # the comparison of a row compared with the baseline user by user
GAIN, DELTA, P_VALUE = "gain over Single %", "Δ NDCG@20 vs Single (95% CI)", "p (Wilcoxon)"  # the comparison columns
MAIN_COLUMNS = ("seeds", "converged", "NDCG@20", "HR@20", GAIN, DELTA, P_VALUE)


def records_of(records: list[dict], dataset: str, name: str) -> list[dict]:
    """The records of one dataset and table row (`variant`), by seed."""
    return sorted((r for r in records if r["dataset"] == dataset and variant(r) == name), key=lambda r: r["seed"])


def metrics_over_seeds(recs: list[dict]) -> dict:
    """Test NDCG@20 and HR@20 of records: mean and sd over seeds (sd NaN for one seed)."""
    ndcg, hr = (pd.Series([r["test"][k] for r in recs]) for k in ("NDCG@20", "HR@20"))
    return {"NDCG@20": ndcg.mean(), "NDCG@20 sd": ndcg.std(ddof=1), "HR@20": hr.mean(), "HR@20 sd": hr.std(ddof=1)}


# a table row's cells of a per-user comparison, and the `paired_comparison` key each one holds (p and side are
# Wilcoxon's; the CI is the paired t-test's, whose p is "t p")
PER_USER_CELLS = {
    "mean diff": "mean_diff",
    "ci low": "ci_low",
    "ci high": "ci_high",
    "p": "wilcoxon_p",
    "side": "wilcoxon_side",
    "t p": "t_p",
}


def main_numbers(
    records: list[dict], datasets: list[str], variants: list[str], baseline: str = "Single"
) -> pd.DataFrame:
    """Dataset x method, the numbers of the main table: `state` (ran, not run, or no released anchor for FLAME
    from the released anchor on a dataset the release ships none for), the seeds, how many converged, test
    NDCG@20 and HR@20 (mean and sd over seeds), the gain over `baseline` in percent, and `comparison` (per user,
    or why not: baseline, Single not run, ranks not stored) with the per-user paired comparison on the seeds
    both ran (`paired seeds`): mean difference of NDCG@20 in points, its 95% CI, the Wilcoxon signed-rank p (and
    the paired t-test's, which the CI reflects). `main_table` formats it; `verdict`, `disagreement`,
    `per_user_text`, `against_single` and `records_sentence` read it."""

    rows = []
    for dataset in datasets:
        base = records_of(records, dataset, baseline)
        for name in variants:
            missing = NO_ANCHOR if name == RELEASED_VARIANT and dataset not in RELEASED_ANCHORS else NOT_RUN
            cells = _main_numbers(records_of(records, dataset, name), base, name == baseline, missing)
            rows.append({"dataset": dataset, "method": name, **cells})
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def _main_numbers(recs: list[dict], base: list[dict], is_baseline: bool, missing: str) -> dict:
    """One row of `main_numbers`; `missing` is the state of a row without records."""
    cells = dict.fromkeys(("NDCG@20", "NDCG@20 sd", "HR@20", "HR@20 sd", "gain %", *PER_USER_CELLS), np.nan)
    if not recs:
        return {"state": missing, "seeds": (), "converged": 0, "comparison": missing, **cells}
    cells |= metrics_over_seeds(recs)
    ran_cells = {
        "state": "ran",
        "seeds": tuple(r["seed"] for r in recs),
        "converged": sum(r["converged"] for r in recs),
    }
    if is_baseline or not base:
        return {**ran_cells, "comparison": BASELINE if is_baseline else SINGLE_NOT_RUN, **cells}
    cells["gain %"] = 100 * (cells["NDCG@20"] / np.mean([r["test"]["NDCG@20"] for r in base]) - 1)
    ranked = lambda rs: {r["seed"] for r in rs if r.get("test_ranks")}  # noqa: E731
    common = sorted(ranked(recs) & ranked(base))
    if not common:
        return {**ran_cells, "comparison": RANKS_NOT_STORED, **cells}
    c = paired_comparison(user_ndcg_over_seeds(recs, common), user_ndcg_over_seeds(base, common))
    cells |= per_user_cells(c)
    return {**ran_cells, "comparison": PER_USER, "paired seeds": tuple(common), **cells}


def main_table(numbers: pd.DataFrame) -> pd.DataFrame:
    """`main_numbers` as the book shows it: seeds, converged out of run, NDCG@20 and HR@20 as mean ± sd, the
    gain in percent, the paired difference with its CI and the p-value; a cell without a number says why."""
    rows = {key: _main_cells(row) for key, row in numbers.iterrows()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(numbers.index.names)[list(MAIN_COLUMNS)]


def delta_text(row: pd.Series) -> str:
    """A row's paired difference with Single and its 95% CI, in points: '+0.13 [-0.72, +0.99]'."""
    return f"{row['mean diff']:+.2f} [{row['ci low']:+.2f}, {row['ci high']:+.2f}]"


def p_text(row: pd.Series) -> str:
    """A row's Wilcoxon p, two significant digits."""
    return f"{row['p']:.2g}"


def _main_cells(row: pd.Series) -> dict:
    if row["state"] != "ran":
        return dict.fromkeys(MAIN_COLUMNS, row["state"])
    cells = {
        "seeds": ", ".join(map(str, row["seeds"])),
        "converged": f"{row['converged']}/{len(row['seeds'])}",
        "NDCG@20": plus_minus(row["NDCG@20"], row["NDCG@20 sd"]),
        "HR@20": plus_minus(row["HR@20"], row["HR@20 sd"]),
    }
    why = row["comparison"]
    if why in (BASELINE, SINGLE_NOT_RUN):
        return {**cells, **dict.fromkeys((GAIN, DELTA, P_VALUE), why)}
    cells[GAIN] = f"{row['gain %']:+.1f}"
    if why == RANKS_NOT_STORED:
        return {**cells, **dict.fromkeys((DELTA, P_VALUE), why)}
    return {**cells, DELTA: delta_text(row), P_VALUE: p_text(row)}


def ran(numbers: pd.DataFrame) -> pd.DataFrame:
    """The rows of one dataset's `main_numbers` (``main_numbers(...).loc[dataset]``) that hold records."""
    return numbers[numbers["state"] == "ran"]


def verdict(row: pd.Series, alpha: float = 0.05) -> str:
    """A `main_numbers` row against its baseline (Single in the main table): "significantly better than",
    "significantly worse than" (Wilcoxon p below `alpha`, on the side its signed ranks favour on the seeds both
    ran) or "not distinguishable from" (also when the row was not compared per user)."""
    if row["comparison"] != PER_USER or row["p"] >= alpha:
        return "not distinguishable from"
    return "significantly better than" if row["side"] > 0 else "significantly worse than"


def per_user_cells(c: dict) -> dict:
    """A `paired_comparison` as the cells of a table row (`PER_USER_CELLS`)."""
    return {cell: c[key] for cell, key in PER_USER_CELLS.items()}


def disagreement(row: pd.Series, alpha: float = 0.05) -> str:
    """A clause to append to a row's `verdict` where the two paired tests disagree at `alpha`: the Wilcoxon test
    (the verdict's) ranks the per-user differences, the paired t-test (whose 95% CI the tables show) weighs
    their mean; many users differ by exactly zero, which Wilcoxon drops and the mean keeps. Empty where they
    agree or the row was not compared per user."""
    if row["comparison"] != PER_USER or np.isnan(row["t p"]):
        return ""
    ranks, mean = row["p"] < alpha, row["t p"] < alpha
    if ranks == mean and (not ranks or np.sign(row["mean diff"]) == row["side"]):
        return ""
    lead = {
        (True, True): "their mean points the other way:",
        (True, False): "only the Wilcoxon test, which ranks the per-user differences, finds it:",
        (False, True): "the Wilcoxon test, which ranks the per-user differences, does not find it, while",
    }[ranks, mean]
    interval = "excludes" if mean else "includes"
    return f"; {lead} the 95% interval of their mean {interval} zero (paired t-test p = {row['t p']:.2g})"


def per_user_text(row: pd.Series, baseline: pd.Series) -> str:
    """A `main_numbers` row's per-user comparison with its dataset's `baseline` row (Single in the main table,
    Ensemble-Guide in `modules_sentence`), for a sentence: "per user on the seeds both ran, +0.04 [-0.05, +0.12]
    points, Wilcoxon p = 0.65". The seeds are named where they are not all of the baseline's, which the gain's
    mean is over: "per user on seeds 42, 43, the only ones both ran, ..."; a row not compared per user says why
    ("per user: ranks not stored")."""
    if row["comparison"] != PER_USER:
        return f"per user: {row['comparison']}"
    on = fewer_seeds(row, baseline) or "the seeds both ran"
    return f"per user on {on}, {delta_text(row)} points, Wilcoxon p = {p_text(row)}"


def fewer_seeds(row: pd.Series, baseline: pd.Series) -> str:
    """Where a row was compared per user on fewer seeds than its dataset's `baseline` row ran, those seeds:
    "seeds 42, 43, the only ones both ran", "seed 42, the only one both ran"; else ''."""
    seeds = row["paired seeds"]
    if len(seeds) >= len(baseline["seeds"]):
        return ""
    return f"{seeds_listed(seeds)}, {'the only ones' if len(seeds) > 1 else 'the only one'} both ran"


def against_single(numbers: pd.DataFrame, single: pd.Series) -> str:
    """Each row of one dataset's `main_numbers` that was compared with Single (`single`, its Single row) per user,
    as a phrase: "Ensemble-Guide +0.13 [-0.72, +0.99] points (Wilcoxon p = 0.89); FLAME ...", naming the seeds
    where they are fewer than Single's ("... points on seed 42, the only one both ran (Wilcoxon ...)"); empty
    when none was."""

    def phrase(method: str, row: pd.Series) -> str:
        on = f" on {few}" if (few := fewer_seeds(row, single)) else ""
        return f"{method} {delta_text(row)} points{on} (Wilcoxon p = {p_text(row)})"

    return "; ".join(phrase(m, row) for m, row in numbers[numbers["comparison"] == PER_USER].iterrows())


def modules_sentence(records: list[dict], dataset: str) -> str:
    """FLAME against Ensemble-Guide on one dataset, per test user, where both trained from one and the same frozen
    anchor: Ensemble-Guide is FLAME with the networks left whole (two paths instead of 2^M), so the comparison
    measures what cutting them into modules adds. Empty where either did not run or their anchors differ."""
    flame, guide = records_of(records, dataset, "FLAME"), records_of(records, dataset, "Ensemble-Guide")
    keys = {p.get("key") for r in flame + guide for p in r.get("pretrained", [])}
    if not (flame and guide) or len(keys) != 1 or None in keys:
        return ""
    numbers = main_numbers(records, [dataset], ["Ensemble-Guide", "FLAME"], baseline="Ensemble-Guide").loc[dataset]
    row, guide_row = numbers.loc["FLAME"], numbers.loc["Ensemble-Guide"]
    return (
        f"FLAME against Ensemble-Guide, which trains from the same frozen anchor (content key "
        f"`{keys.pop()[:8]}`) with the two networks left whole: {row['gain %']:+.1f}% test NDCG@20 "
        f"({per_user_text(row, guide_row)}): {verdict(row)} Ensemble-Guide{disagreement(row)}"
    )


def records_sentence(numbers: pd.DataFrame) -> str:
    """What one dataset's `main_numbers` says, as a clause: each method's test NDCG@20 with its seeds, the
    per-user comparisons with Single, and the methods not run."""

    def result(method: str, row: pd.Series) -> str:
        return f"{method} {plus_minus(row['NDCG@20'], row['NDCG@20 sd'])} ({seeds_listed(row['seeds'])})"

    parts = ["test NDCG@20 " + ", ".join(result(m, row) for m, row in ran(numbers).iterrows())]
    if "Single" in numbers.index and (versus := against_single(numbers, numbers.loc["Single"])):
        parts.append(f"per test user against Single: {versus}")
    if len(missing := numbers.index[numbers["state"] == NOT_RUN]):
        parts.append(f"not run: {', '.join(missing)}")
    return "; ".join(parts)


def convergence_vs_single(records: list[dict], dataset: str, name: str = "FLAME") -> pd.DataFrame:
    """Per seed run by both: epochs and training seconds for Single to reach its best validation NDCG@20,
    and for `name` to reach that same value, with and without its anchor's pretraining seconds; speed-up =
    Single's seconds / the method's (above 1: the method gets there faster). Seconds are compared only between
    records timed alike ("timed alike"): one device, and where both records name their machine (`machine`:
    "same", "different" or "not recorded", as in records written before they did), one machine with the same
    cores and threads. Otherwise the seconds and their speed-ups are NaN and the epochs stay. Two CPU records
    whose every epoch logged the process's CPU seconds compare by those ("clock": "CPU"), which other work on
    the machine does not inflate the way it inflates wall seconds ("wall", the clock otherwise). An anchor read
    from a released file has no known pretraining seconds, and a pretrained one that names another machine
    than its run's has seconds that do not add: "anchor s" and the speed-up including it are NaN there. Empty
    when nothing matches."""
    single = {r["seed"]: r for r in records if r["dataset"] == dataset and variant(r) == "Single"}
    rows = []
    runs = sorted((r for r in records if r["dataset"] == dataset and variant(r) == name), key=lambda r: r["seed"])
    for rec in runs:
        base = single.get(rec["seed"])
        if base is None:
            continue
        best = max(row["valid/NDCG@20"] for row in base["history"])
        clock = seconds_clock(rec, base)
        s_time = time_to_reach(base["history"], best, clock=clock)
        reach = time_to_reach(rec["history"], best, clock=clock)
        anchors = rec.get("pretrained", [])
        released = any(p["origin"] == "file" for p in anchors)  # the release does not say how long it trained
        elsewhere = any(machine_match(rec, p) == "different" for p in anchors)  # pretrained on another machine
        anchor = np.nan if released or elsewhere else sum(p.get(clock, np.nan) for p in anchors)
        machine = machine_match(rec, base)
        same = rec["device"] == base["device"] and machine != "different"  # a CPU's seconds against a GPU's say nothing
        row = {
            "seed": rec["seed"],
            "Single best valid NDCG@20": best,
            "Single epochs": s_time["epoch"],
            "Single s": s_time["seconds"] if same else np.nan,
            f"{name} epochs": reach["epoch"] if reach else np.nan,
            f"{name} s": reach["seconds"] if reach and same else np.nan,
            "anchor s": anchor if same else np.nan,
            "device": rec["device"],
            "clock": CLOCKS[clock],
            "machine": machine,
            "timed alike": same,
            "reached": reach is not None,
        }
        row["speed-up (s)"] = row["Single s"] / row[f"{name} s"]
        row["speed-up incl. anchor (s)"] = row["Single s"] / (row[f"{name} s"] + row["anchor s"])
        row["speed-up (epochs)"] = row["Single epochs"] / row[f"{name} epochs"]
        rows.append(row)
    return pd.DataFrame(rows)


CLOCKS = {"train_cpu_seconds": "CPU", "train_seconds": "wall"}  # history field -> the clock's name in tables


def seconds_clock(*recs: dict) -> str:
    """The history field that times these records alike: the training process's CPU seconds where every
    record trained on the CPU and logged them for every epoch (records written before runs did, or resumed
    from such a run, have only wall seconds; a GPU's host CPU time says nothing of its work), else wall
    seconds."""
    on_cpu = all(rec["device"] == "cpu" for rec in recs)
    logged = all("train_cpu_seconds" in row for rec in recs for row in rec["history"])
    return "train_cpu_seconds" if on_cpu and logged else "train_seconds"


def machine_match(rec: dict, base: dict) -> str:
    """Whether two records (or a record and one of its pretrained networks) name one machine (hardware, cores,
    threads) for all their epochs: "same", "different" (also where a resumed run trained on two), or "not
    recorded" when either was written, or partly trained, before they named it."""
    a, b = _machines(rec), _machines(base)
    if None in a or None in b:
        return "not recorded"
    return "same" if len(a) == 1 and a == b else "different"


def _machines(rec: dict) -> set:
    """The machines a record's epochs ran on: its sessions' (a resumed run's may differ) and its own."""
    found = [s["machine"] for s in rec.get("sessions", [])] + [rec.get("machine")]
    return {None if m is None else json.dumps(m, sort_keys=True) for m in found}


def revisions(rec: dict) -> str:
    """The code that trained a record: its sessions' git revisions in order ("unlogged" for epochs trained
    before runs logged them), or the record's one revision where it has no sessions."""
    found = [s["git"] or "unlogged" for s in rec.get("sessions", [])] or [rec["git"]]
    return ", ".join(dict.fromkeys(found))


def convergence_table(records: list[dict], datasets: list[str], names: list[str]) -> pd.DataFrame:
    """`convergence_vs_single` of each method of `names` on each dataset, one row per seed, with `dataset` and
    `method` columns and the method's own columns named "method epochs" and "method s"."""
    parts = [(d, m, convergence_vs_single(records, d, name=m)) for d in datasets for m in names]
    parts = [
        part.rename(columns={f"{m} epochs": "method epochs", f"{m} s": "method s"}).assign(dataset=d, method=m)
        for d, m, part in parts
        if len(part)  # an empty frame in the concatenation would make the seeds floats
    ]
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


CONVERGENCE_MEANS = (
    "Single epochs",
    "method epochs",
    "Single s",
    "method s",
    "anchor s",
    "speed-up (epochs)",
    "speed-up (s)",
    "speed-up incl. anchor (s)",
)


def convergence_summary(conv: pd.DataFrame) -> pd.DataFrame:
    """`convergence_table` by dataset and method: the means over seeds (NaN left out, so a speed-up averages
    the seeds that reached Single's best timed alike), how many seeds reached it and how many were timed alike,
    how many of the seeds whose seconds make the speed-up (reached and timed alike) name their machine (the
    others compare by device alone), the device and the clock; the epochs' speed-up also by its smallest and
    largest seed."""
    timed = conv["reached"] & conv["timed alike"]
    conv = conv.assign(timed=timed, named=timed & (conv["machine"] == "same"))
    by = conv.groupby(["dataset", "method"], sort=False)
    summary = by[list(CONVERGENCE_MEANS)].mean()
    summary["speed-up (epochs) min"] = by["speed-up (epochs)"].min()
    summary["speed-up (epochs) max"] = by["speed-up (epochs)"].max()
    for column, flag in (("seeds reached", "reached"), ("seeds timed alike", "timed alike")):
        summary[column] = by[flag].agg(lambda v: f"{int(v.sum())}/{len(v)}")
    summary["machines named"] = [f"{int(k)}/{int(n)}" for k, n in zip(by["named"].sum(), by["timed"].sum())]
    summary["device"] = by["device"].agg(lambda v: ", ".join(sorted(set(v))))
    summary["clock"] = by["clock"].agg(lambda v: ", ".join(sorted(set(v))))
    return summary


def _counts(cell: str) -> tuple[int, int]:
    """A "k/n" cell of `convergence_summary` read back as (k, n)."""
    k, n = cell.split("/")
    return int(k), int(n)


def convergence_sentence(dataset: str, method: str, row: pd.Series) -> str:
    """One row of `convergence_summary` as a sentence against the paper's claim: the speed-ups that could be
    measured, and why the others could not (not reached, devices or machines apart, a released anchor's unknown
    seconds); seconds that average fewer seeds than reached Single's best say how many, seconds from records that
    do not name their machine say so, and a CPU's wall seconds (from records that did not log CPU seconds) that
    other work inflates them."""
    start = f"On **{dataset}**, {method} reached Single's best in {row['seeds reached']} seeds, "
    paper, epochs, seconds = PAPER_SPEEDUP, row["speed-up (epochs)"], row["speed-up (s)"]
    if pd.isna(epochs):
        return start + f"so no speed-up can be measured there: {method} is not faster, against the paper's {paper}x."
    reached, seeds = _counts(row["seeds reached"])
    if reached < seeds:  # the speed-ups average the seeds that got there; the others never did
        did = "the one" if reached == 1 else f"the {reached}"
        start += f"{seeds - reached} never within its run; in {did} that did, "
    low, high = row["speed-up (epochs) min"], row["speed-up (epochs) max"]
    spread = f", {low:.2f}x to {high:.2f}x by seed" if f"{low:.2f}" != f"{high:.2f}" else ""
    if pd.isna(seconds):
        return start + (
            f"{epochs:.2f}x as fast as Single in epochs{spread}, against the paper's {paper}x; their seconds ran "
            "on different devices or machines and do not compare."
        )
    pace = f"({epochs:.2f}x in epochs{spread}), against the paper's {paper}x"
    mixed = "training seconds (CPU seconds where both records logged them, wall seconds otherwise)"
    clock = row.get("clock", "wall")
    cpu_wall = "wall" in clock and row["device"] == "cpu"  # CPU pairs that did not both log CPU seconds
    unit = {"CPU": "CPU seconds", "wall": "wall seconds" if cpu_wall else "training seconds"}.get(clock, mixed)
    if cpu_wall:
        pace += (
            "; a CPU's wall seconds also count whatever else ran beside each run, so the epochs are the surer figure"
        )
    named, alike = _counts(row["machines named"])
    if alike < reached:  # the seconds' speed-ups average fewer seeds than the epochs' do
        others = "the other" if reached - alike == 1 else f"the other {reached - alike}"
        pace += (
            f"; the seconds come from {alike} of the {reached} seeds that got there, {others} timed on another "
            "device, machine or number of threads"
        )
    if named < alike:
        unnamed = alike - named
        verb = "does" if unnamed == 1 else "do"  # "1 of its 2 pairs does", "2 of its 3 pairs do"
        pairs = "its pair of records does" if alike == 1 else f"{unnamed} of its {alike} pairs of records {verb}"
        pace += (
            f"; {pairs} not both name the machine and threads they ran on (a record written before records named "
            f'them says only "{row["device"]}"), so these seconds may compare two machines'
        )
    if pd.isna(row["speed-up incl. anchor (s)"]):
        unknown = (
            "the release does not state" if method == RELEASED_VARIANT else "the records do not hold on one machine"
        )
        return start + (
            f"{seconds:.2f}x as fast as Single in {unit} {pace}; no figure includes the anchor's "
            f"pretraining, whose seconds {unknown}."
        )
    return start + (
        f"{seconds:.2f}x as fast as Single in {unit} without its anchor's pretraining and "
        f"{row['speed-up incl. anchor (s)']:.2f}x with it {pace}."
    )


def record_curves(records: list[dict], dataset: str, names: list[str]) -> pd.DataFrame:
    """Validation NDCG@20 per epoch and cumulative training seconds, one row per record, seed and epoch. The
    seconds are CPU seconds ("clock": "CPU") where every record shown trained on the CPU and logged them for
    every epoch, as Table 5 compares them, and wall seconds otherwise."""
    chosen = [r for r in records if r["dataset"] == dataset and variant(r) in names]
    clock = seconds_clock(*chosen)
    return pd.DataFrame(
        [
            {
                "method": variant(r),
                "seed": r["seed"],
                "epoch": row["epoch"],
                "seconds": sum(h[clock] for h in r["history"][: row["epoch"]]),
                "clock": CLOCKS[clock],
                "valid NDCG@20": row["valid/NDCG@20"],
            }
            for r in chosen
            for row in r["history"]
        ]
    )
