"""A sweep: a grid of datasets x methods x seeds under a profile, one record per run, through submitit.

    python -m flame_core sweep --profile full --datasets amazon-toys,amazon-beauty --device cuda

A *job* is one dataset, one method and one anchor (pretrained here, or a released file with ``--released DIR``:
FLAME trained from the official release's frozen network; ``--released-only`` runs just those) with its seeds:
all of them stacked in one model where the method allows and the device is a GPU (``--stack``/``--no-stack``
decide otherwise), else one job per seed. A job whose every seed already has a record under ``--record`` (same
dataset, method, profile, seed and anchor) is skipped; an interrupted one resumes from its run folders under
``--runs``. Jobs run through submitit (a maintained job engine): its local executor by default, each job a
subprocess, ``--parallel`` at a time; ``--executor slurm`` submits them as one Slurm array; ``--executor debug``
runs them in this process, their lines on this console (submitit opens pdb on a job that fails there; with stdin
at its end pdb returns at once). A line per job as it starts, naming its log (a line per epoch), and as it ends;
a table at the end. Stopping the sweep (Ctrl-C, or SIGTERM: ``kill PID``) stops its local jobs and keeps their
checkpoints, so the same command resumes them; Slurm jobs go on.

On a CPU, stacking seeds in one model does not pay (its batched products are as compute-bound as the separate
ones); running seeds side by side in processes of their own can, as torch's 64-wide products scale poorly over
threads (``bench/speed.py``, "seeds in parallel processes": 0.67x to 0.90x of one process's wall time with three
single-thread processes on a 2-core CPU over three runs, not reliably better with two). With ``--parallel N`` on a
CPU each job gets cores / N threads (at least one), unless OMP_NUM_THREADS says otherwise, so N jobs share the
cores instead of each claiming all. Jobs that share an anchor or a teacher wait for whichever trains it first (a
file lock) and reuse it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from flame_core.anchor import anchor_paths
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Interactions
from flame_core.experiments import load, load_records, record, run_dir, run_seeds
from flame_core.methods import build_method
from flame_core.registry import method_class
from flame_core.utils import git_revision, portable_command, resolve_device, threads_per_process

PROFILES = {  # the protocol settings of each profile; anything else stays at the official defaults
    "full": {"epochs": 200, "patience": 30, "max_len": 50, "anneal_epochs": 200},  # the paper's
    "quick": {"epochs": 3, "patience": 30, "max_len": 10},  # the book's quick profile
}
MODEL_KEYS = {f for f in ModelConfig.__dataclass_fields__}


@dataclass(frozen=True)
class Job:
    """One dataset, method and anchor, with its seeds."""

    dataset: str
    method: str
    seeds: tuple[int, ...]
    profile: str  # the label of the records
    settings: dict = field(default_factory=dict, hash=False)  # the profile's settings plus overrides, flat
    released: str | None = None  # a released anchor file (FLAME from the official frozen network), or None
    stack: bool = True  # train the seeds as one stacked model (when the method allows)
    runs: str = "runs"
    records: str = "results"
    threads: int | None = None  # torch's intra-op threads in the job's process (None: torch's default)

    @property
    def name(self) -> str:
        anchor = f" from {Path(self.released).name}" if self.released else ""
        return f"{self.dataset} {self.method}{anchor} seeds {','.join(map(str, self.seeds))}"

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        model = ModelConfig.from_dict({k: v for k, v in self.settings.items() if k in MODEL_KEYS})
        train = TrainConfig(
            method=self.method,
            progress=False,
            seed=self.seeds[0],
            **{k: v for k, v in self.settings.items() if k not in MODEL_KEYS},
        )
        return model, train

    def command(self) -> str:
        """The sweep command that reproduces this job alone (paths relative to the working directory)."""
        argv = [
            "python",
            "-m",
            "flame_core",
            "sweep",
            "--profile",
            self.profile,
            "--datasets",
            self.dataset,
            "--methods",
            self.method,
            "--seeds",
            ",".join(map(str, self.seeds)),
        ]
        if self.released:  # this job alone: not the grid's FLAME from a pretrained anchor as well
            argv += ["--released", str(Path(self.released).parent), "--released-only"]
        argv += ["--device", self.settings["device"]]
        for key, value in self.settings.items():
            if key != "device" and PROFILES[self.profile].get(key) != value:
                argv += ["--set", f"{key}={json.dumps(value)}"]
        return portable_command(argv)


def _anchor_matches(rec: dict, released: str | None) -> bool:
    files = [p["file"] for p in rec.get("pretrained", []) if p["origin"] == "file"]
    return files == ([Path(released).name] if released else [])


def recorded_seeds(job: Job) -> set[int]:
    """The seeds of `job` that already have a record (same dataset, method, profile and anchor)."""
    return {
        r["seed"]
        for r in load_records(job.records)
        if r["dataset"] == job.dataset
        and r["method"] == job.method
        and r["profile"] == job.profile
        and _anchor_matches(r, job.released)
    }


def progress(job: Job) -> dict[int, str]:
    """Where each seed of the job without a record stands in its run folder under ``--runs``: not started (and
    then its pretrained networks: cached, pretraining, or to pretrain), how far an interrupted run got (it
    resumes after that epoch), or trained and waiting to be recorded."""
    model, cfg = job.configs()
    data, _ = load(job.dataset, model.max_len, cfg.keep)
    states = {}
    for seed in sorted(set(job.seeds) - recorded_seeds(job)):
        folder = run_dir(job.runs, data, model, cfg.replace(seed=seed), job.released)
        if (folder / "results.json").exists():
            states[seed] = f"trained, not recorded: the sweep records it without training ({folder.name})"
        elif rows := _history(folder):
            states[seed] = f"resumes {_where(rows, cfg)} ({folder.name})"
        else:
            specs = (
                [] if job.released else build_method(data.num_items, model, cfg.replace(seed=seed)).pretrained_specs()
            )
            nets = ", ".join(f"{name} {_anchor_state(data, m, c)}" for name, m, c in specs)
            states[seed] = "not started" + (f"; first its pretrained networks: {nets}" if nets else "")
    return states


def _history(folder: Path) -> list[dict]:
    path = folder / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _where(rows: list[dict], cfg: TrainConfig) -> str:
    best = max(rows, key=lambda r: r["valid/NDCG@20"])
    return (
        f"after epoch {rows[-1]['epoch']} of at most {cfg.epochs}: best valid NDCG@20 {best['valid/NDCG@20']:.2f} "
        f"at epoch {best['epoch']}, {rows[-1]['epoch'] - best['epoch']} of {cfg.patience} epochs of patience used"
    )


def _anchor_state(data: Interactions, model: ModelConfig, cfg: TrainConfig) -> str:
    path, folder = anchor_paths(data, model, cfg)
    if path.exists():
        return "cached"
    rows = _history(folder)
    return f"pretraining, {_where(rows, cfg)}" if rows else "to pretrain"


def stacked(stack: bool, method: str, seeds) -> bool:
    """Whether `seeds` of `method` train as one stacked model: stacking asked for, several seeds, and a method
    whose replicas stack."""
    return stack and len(seeds) > 1 and method_class(method).stackable


def run_job(job: Job) -> list[dict]:
    """Train (or resume, or reuse) the job's seeds that have no record yet and record each; returns one summary
    row per seed. Runs in a submitit worker (or in this process)."""
    if job.threads:
        torch.set_num_threads(job.threads)
    model, cfg = job.configs()
    git = git_revision()  # the code this job runs, as it starts
    todo = [s for s in job.seeds if s not in recorded_seeds(job)]
    groups = [todo] if stacked(job.stack, job.method, todo) else [[s] for s in todo]
    rows = []
    for seeds in groups:
        for exp in run_seeds(
            job.dataset,
            model,
            cfg.replace(seed=seeds[0]),
            seeds,
            root=job.runs,
            frozen=job.released,
            log=functools.partial(print, flush=True),  # the job's log file (its stdout), or this console
        ):
            res = exp.results
            path = record(
                res,
                exp.data,
                model,
                cfg.replace(seed=res["seed"]),
                root=job.records,
                profile=job.profile,
                command=job.command(),
                frozen=job.released,
                pretrained=exp.pretrained,
                git=git,
            )
            rows.append(
                {
                    "job": job.name,
                    "seed": res["seed"],
                    "status": "reused" if exp.reused else "trained",
                    "epochs run": res["epochs_run"],
                    "converged": res["stopped_early"],
                    "test NDCG@20": res["test"]["NDCG@20"],
                    "train s": res["train_seconds"],
                    "record": path.name,
                }
            )
    return rows


def plan(
    datasets: list[str],
    methods: list[str],
    seeds: list[int],
    profile: str,
    overrides: dict | None = None,
    released_dir: str | None = None,
    released_only: bool = False,
    device: str = "auto",
    stack: bool | None = None,
    runs: str = "runs",
    records: str = "results",
) -> list[Job]:
    """The grid's jobs, FLAME from the released anchor added for each dataset that has one in `released_dir`
    (with `released_only`, those jobs alone)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; profiles: {sorted(PROFILES)}")
    if released_only and not released_dir:
        raise ValueError("--released-only needs --released DIR, the folder of the released anchors")
    settings = {**PROFILES[profile], "device": device, **(overrides or {})}
    # stacking does not pay on a CPU (measured); on a GPU it saves per-call overhead (not measured yet)
    stack = resolve_device(device).type == "cuda" if stack is None else stack
    common = dict(profile=profile, settings=settings, stack=stack, runs=runs, records=records)

    def jobs_of(dataset: str, method: str, released: str | None = None) -> list[Job]:
        groups = [tuple(seeds)] if stacked(stack, method, seeds) else [(s,) for s in seeds]  # else a job per seed
        return [Job(dataset=dataset, method=method, seeds=g, released=released, **common) for g in groups]

    jobs = [] if released_only else [j for d in datasets for m in methods for j in jobs_of(d, m)]
    for d in datasets if released_dir else []:
        anchor = Path(released_dir) / f"{d}.pt"
        if anchor.exists() and "flame" in methods:
            jobs += jobs_of(d, "flame", str(anchor))
    return jobs


def job_threads(job: Job, executor: str, parallel: int) -> int | None:
    """The intra-op threads of a job run `parallel` at a time: cores / parallel for CPU jobs on this machine
    (local executor), unless OMP_NUM_THREADS is set; None (torch's default) otherwise."""
    device = str(job.settings["device"])
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if executor != "local" or parallel <= 1 or "OMP_NUM_THREADS" in os.environ or on_gpu:
        return None
    return threads_per_process(parallel)


def sweep(
    jobs: list[Job],
    executor: str = "local",
    parallel: int = 1,
    folder: str | Path = "runs/sweep-logs",
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run the jobs that are not fully recorded through submitit; returns the summary rows of every job."""
    import submitit

    if parallel < 1:
        raise ValueError(f"--parallel {parallel}: run at least one job at a time")
    rows, todo = [], []
    for job in jobs:
        done = recorded_seeds(job)
        if done >= set(job.seeds):
            log(f"skip   {job.name}: recorded")
            rows += [{"job": job.name, "seed": s, "status": "recorded"} for s in job.seeds]
        else:
            todo.append(replace(job, threads=job_threads(job, executor, parallel)))
    if not todo:
        return rows
    if executor == "debug":
        ex = submitit.DebugExecutor(folder=str(folder))
    else:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=None if executor == "slurm" else "local")
        ex.update_parameters(timeout_min=24 * 60)
        if executor == "slurm":
            ex.update_parameters(slurm_array_parallelism=parallel, gpus_per_node=1)
    t0, submitted = time.perf_counter(), []
    if executor == "slurm":  # one array; Slurm runs --parallel of them at a time
        batches = [list(zip(todo, ex.map_array(run_job, todo)))]
    else:
        size = 1 if executor == "debug" else parallel
        batches = ([(job, ex.submit(run_job, job)) for job in todo[k : k + size]] for k in range(0, len(todo), size))
    try:
        with _interruptible():
            for batch in batches:
                submitted += [handle for _, handle in batch]
                for job, handle in batch:  # a debug job's lines come on this console, as it runs
                    log(f"start  {job.name}" + ("" if executor == "debug" else f": its log {handle.paths.stdout}"))
                rows += _collect(batch, folder, t0, log)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM to this process alone (kill PID)
        running = [handle for handle in submitted if executor != "debug" and not handle.done()]
        if executor == "local":  # its jobs are this machine's processes: stop them, or they train on unseen
            _stop(running)
            log(f"interrupted: stopped {len(running)} running job(s); the same command resumes them")
        elif running:  # a cluster's jobs outlive the process that submitted them
            log(f"interrupted: {len(running)} job(s) go on under {executor}; the same command skips what they record")
        raise
    return rows


def _collect(batch: list, folder: str | Path, t0: float, log: Callable[[str], None]) -> list[dict]:
    """Wait for a batch's jobs; the summary rows of each (a failed job's say so)."""
    rows = []
    for job, handle in batch:
        try:
            out = handle.result()
        except Exception as err:  # one failed job does not stop the others; its log says why
            log(f"failed {job.name}: {_reason(err)} (logs in {folder})")
            rows += [{"job": job.name, "seed": s, "status": "failed"} for s in job.seeds]
            continue
        rows += out
        summary = ", ".join(f"seed {r['seed']}: {r['epochs run']} epochs, NDCG@20 {r['test NDCG@20']:.2f}" for r in out)
        log(f"done   {job.name} ({time.perf_counter() - t0:.0f} s): {summary}")
    return rows


def _reason(err: Exception) -> str:
    """The line that says why a job failed: the last line of its traceback. submitit's FailedJobError holds
    the job's traceback between two rules of dashes, followed by where its logs are; other errors their own
    message."""
    text = str(err)
    parts = text.split("\n----------------------\n")
    lines = [line for line in (parts[1] if len(parts) == 3 else text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


@contextlib.contextmanager
def _interruptible():
    """While the block runs, SIGTERM raises KeyboardInterrupt here, as Ctrl-C does, so that a sweep stopped by
    `kill PID` stops its local jobs rather than leaving them to train on without it. A process started in
    the background by a shell ignores SIGINT, and so would the jobs it starts (an ignored signal stays ignored
    across exec), so submitit's cancel (SIGINT) could not stop them: while the block runs, SIGINT is caught
    and dropped here instead, which leaves this process as deaf to it as before and its jobs able to hear it.
    Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt)}
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(handles: list, wait_s: float = 30.0) -> None:
    """Cancel local jobs (SIGINT to submitit's controller, which stops its task, with SIGKILL a second later)
    and wait up to `wait_s` for them to end, so that their run folders' locks are free when this returns.
    Their checkpoints are written atomically at each epoch's end, so they resume from their last epoch."""
    for handle in handles:
        handle.cancel(check=False)
    deadline = time.monotonic() + wait_s
    while any(not handle.done(force_check=True) for handle in handles) and time.monotonic() < deadline:
        time.sleep(0.2)


def table(rows: list[dict]) -> str:
    """The summary: one line per job and seed."""
    cols = ["job", "seed", "status", "epochs run", "converged", "test NDCG@20", "train s"]
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
