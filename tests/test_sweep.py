"""The sweep: a grid through submitit (in this process and as local subprocesses), a record per run, skipping
what is recorded, FLAME from a released anchor as its own job, the command line's dry run."""

import dataclasses
import fcntl
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from flame_core import sweep, utils
from flame_core.cli import main

TINY = {"epochs": 1, "hidden": 16, "max_len": 12, "batch_size": 128}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))


def grid(tmp_path, methods=("single", "flame"), seeds=(42, 43), **kw):
    return sweep.plan(
        ["synthetic"],
        list(methods),
        list(seeds),
        "quick",
        TINY,
        device="cpu",
        runs=str(tmp_path / "runs"),
        records=str(tmp_path / "results"),
        **kw,
    )


def test_a_sweep_records_every_run_and_skips_them_the_second_time(tmp_path, cache):
    jobs = grid(tmp_path)
    assert [j.name for j in jobs] == [f"synthetic {m} seeds {s}" for m in ("single", "flame") for s in (42, 43)]
    lines = []
    rows = sweep.sweep(jobs, "debug", folder=tmp_path / "logs", log=lines.append)
    assert sorted((r["job"].split()[1], r["seed"], r["status"]) for r in rows) == [
        ("flame", 42, "trained"),
        ("flame", 43, "trained"),
        ("single", 42, "trained"),
        ("single", 43, "trained"),
    ]
    assert sum(line.startswith("done") for line in lines) == 4  # a job per seed on a CPU
    assert [line for line in lines if line.startswith("start")] == [f"start  {j.name}" for j in jobs]
    records = sorted((tmp_path / "results" / "synthetic").glob("*.json"))
    assert len(records) == 4
    rec = json.loads(records[0].read_text())
    assert rec["profile"] == "quick" and rec["epoch_budget"] == 1 and rec["model"]["hidden"] == 16
    assert rec["command"].startswith("python -m flame_core sweep --profile quick --datasets synthetic")
    assert "--set epochs=1" in rec["command"] and rec["test_ranks"]["users"] == 200
    again = []
    rows = sweep.sweep(grid(tmp_path), "debug", folder=tmp_path / "logs", log=again.append)
    assert {r["status"] for r in rows} == {"recorded"} and all(line.startswith("skip") for line in again)
    assert "synthetic flame seeds 43" in sweep.table(rows)


def test_jobs_run_as_subprocesses_through_submitit_side_by_side_with_their_share_of_the_cores(
    tmp_path, cache, monkeypatch
):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(utils, "usable_cores", lambda: 4)  # two jobs at a time: two threads each
    jobs = grid(tmp_path, methods=("single",), seeds=(7, 8))
    lines = []
    rows = sweep.sweep(jobs, "local", parallel=2, folder=tmp_path / "logs", log=lines.append)
    assert sorted((r["seed"], r["status"]) for r in rows) == [(7, "trained"), (8, "trained")]
    started = [line.split(": its log ") for line in lines if line.startswith("start")]
    assert [name for name, _ in started] == ["start  synthetic single seeds 7", "start  synthetic single seeds 8"]
    assert all("epoch   1  loss=" in Path(log).read_text() for _, log in started)  # a line per epoch
    records = sorted((tmp_path / "results" / "synthetic").glob("single-seed*.json"))
    assert [json.loads(p.read_text())["machine"]["threads"] for p in records] == [2, 2]


def test_the_dry_run_says_where_each_unrecorded_seed_stands(tmp_path, cache):
    (job,) = grid(tmp_path, methods=("single",), seeds=(5,))
    job = dataclasses.replace(job, settings={**job.settings, "epochs": 3})
    assert sweep.progress(job) == {5: "not started"}
    sweep.sweep([job], "debug", folder=tmp_path / "logs", log=lambda s: None)
    assert sweep.progress(job) == {}  # recorded
    (rec,) = (tmp_path / "results" / "synthetic").glob("single-seed5-*.json")
    rec.unlink()
    (run,) = (tmp_path / "runs" / "synthetic").glob("single-seed5-*")
    assert sweep.progress(job) == {5: f"trained, not recorded: the sweep records it without training ({run.name})"}
    (run / "results.json").unlink()  # as a run stopped after its last epoch's checkpoint leaves it
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = max(history, key=lambda r: r["valid/NDCG@20"])
    assert sweep.progress(job) == {
        5: f"resumes after epoch 3 of at most 3: best valid NDCG@20 {best['valid/NDCG@20']:.2f} at epoch "
        f"{best['epoch']}, {3 - best['epoch']} of {job.settings['patience']} epochs of patience used ({run.name})"
    }


def test_the_dry_run_says_whether_a_method_s_pretrained_networks_are_cached(tmp_path, cache):
    (flame,) = grid(tmp_path, methods=("flame",), seeds=(5,))
    assert sweep.progress(flame) == {5: "not started; first its pretrained networks: anchor to pretrain"}
    sweep.sweep([flame], "debug", folder=tmp_path / "logs", log=lambda s: None)
    for done in (tmp_path / "results" / "synthetic").glob("flame-seed5-*.json"):
        done.unlink()
    for run in (tmp_path / "runs" / "synthetic").glob("flame-seed5-*"):
        shutil.rmtree(run)
    assert sweep.progress(flame) == {5: "not started; first its pretrained networks: anchor cached"}


def test_a_job_that_fails_is_named_with_its_reason_and_the_others_still_run(tmp_path, cache):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 4\n2 3 x 5\n")  # line 2 is malformed: the job fails when it loads it, in its subprocess
    jobs = [*grid(tmp_path, methods=("single",), seeds=(7,)), *grid(tmp_path, methods=("single",), seeds=(7,))]
    jobs[0] = dataclasses.replace(jobs[0], dataset=str(bad))
    lines = []
    rows = sweep.sweep(jobs, "local", folder=tmp_path / "logs", log=lines.append)
    assert [(r["job"].split()[0], r["status"]) for r in rows] == [(str(bad), "failed"), ("synthetic", "trained")]
    (failed,) = [line for line in lines if line.startswith("failed")]
    assert f"DatasetError: {bad}:2: expected integer ids, got 'x'" in failed and str(tmp_path / "logs") in failed
    assert "failed" in sweep.table(rows)


def test_a_sweep_stopped_by_sigterm_stops_its_local_jobs_even_when_started_in_the_background(tmp_path, cache):
    """`kill PID` of a sweep started by a shell in the background (SIGINT ignored, as such a shell leaves it):
    its job stops within seconds (the run folder's lock is free) and the run keeps its checkpoint to resume."""
    root = Path(__file__).parent.parent
    argv = [
        sys.executable,
        *"-m flame_core sweep --profile quick --datasets synthetic --methods single --seeds 1 --device cpu".split(),
        *"--set epochs=500 --set hidden=16 --set max_len=12".split(),
        *("--runs", str(tmp_path / "runs"), "--record", str(tmp_path / "results")),
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    # SIGINT ignored, as a shell leaves a background job
    ignore_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_IGN)
    sweeping = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        preexec_fn=ignore_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        history = tmp_path / "runs" / "synthetic"
        deadline = time.monotonic() + 90
        while not any(p.stat().st_size for p in history.glob("single-seed1-*/history.jsonl")):
            assert sweeping.poll() is None and time.monotonic() < deadline, "the job never trained an epoch"
            time.sleep(0.2)
        sweeping.send_signal(signal.SIGTERM)
        out, _ = sweeping.communicate(timeout=60)
    finally:
        sweeping.kill()
    assert sweeping.returncode == 130 and "interrupted: stopped 1 running job(s)" in out, out
    (lock,) = history.glob(".single-seed1-*.lock")
    with open(lock) as f:  # no job process holds it any more
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    (run,) = history.glob("single-seed1-*")
    assert (run / "checkpoint.pt").exists() and not (run / "results.json").exists()
    assert not list((tmp_path / "results").rglob("*.json"))


def test_a_job_gets_cores_over_parallel_threads_on_a_cpu_only(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(utils, "usable_cores", lambda: 16)
    job = grid(tmp_path, methods=("single",), seeds=(1,))[0]
    assert sweep.job_threads(job, "local", 4) == 4 and sweep.job_threads(job, "local", 32) == 1
    assert sweep.job_threads(job, "local", 1) is None and sweep.job_threads(job, "debug", 4) is None
    gpu = dataclasses.replace(job, settings={**job.settings, "device": "cuda"})
    assert sweep.job_threads(gpu, "local", 4) is None  # the GPU does the work; torch's default for the host
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert sweep.job_threads(job, "local", 4) is None  # the user's setting stands
    with pytest.raises(ValueError, match="--parallel"):
        sweep.sweep([job], "local", parallel=0, folder=tmp_path / "logs")


def test_flame_from_a_released_anchor_is_its_own_job(tmp_path, cache):
    released = tmp_path / "released"
    released.mkdir()
    (released / "synthetic.pt").write_bytes(b"")  # only its presence matters to the plan
    jobs = grid(tmp_path, methods=("single", "flame"), released_dir=str(released))
    assert [j.released for j in jobs] == [None] * 4 + [str(released / "synthetic.pt")] * 2
    command = jobs[-1].command()
    assert "--released" in command and " /" not in command  # relative to the working directory
    alone = grid(tmp_path, methods=("single", "flame"), released_dir=str(released), released_only=True)
    assert [j.released for j in alone] == [str(released / "synthetic.pt")] * 2  # what the record's command reruns
    assert "--released-only" in command and "--methods flame " in command
    with pytest.raises(ValueError, match="--released-only needs --released"):
        grid(tmp_path, released_only=True)
    assert not grid(tmp_path, methods=("single",), released_dir=str(released))[-1].released  # no flame, no job


def test_stacking_is_the_default_on_a_gpu_only_and_unstacked_seeds_are_jobs_of_their_own(tmp_path):
    assert [(j.method, j.seeds, j.stack) for j in grid(tmp_path)] == [  # cpu
        ("single", (42,), False),
        ("single", (43,), False),
        ("flame", (42,), False),
        ("flame", (43,), False),
    ]
    stacked = grid(tmp_path, methods=("single", "emkd"), stack=True)  # EMKD's replicas do not stack
    assert [(j.method, j.seeds) for j in stacked] == [("single", (42, 43)), ("emkd", (42,)), ("emkd", (43,))]


def test_the_command_line_lists_the_plan_without_running(tmp_path, capsys):
    argv = [
        *"sweep --profile quick --datasets synthetic --methods single --seeds 1,2 --set epochs=1 --record".split(),
        str(tmp_path / "results"),
        *"--dry-run --device cpu".split(),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "synthetic single seeds 1: to run" in out and "synthetic single seeds 2: to run" in out
    assert "--set epochs=1" in out
    assert main(["sweep", "--datasets", "synthetic", "--set", "epochz=1", "--dry-run"]) == 2  # a bad setting, named
    assert "epochz" in capsys.readouterr().err


def test_the_device_script_copies_what_it_recorded_and_stops_at_its_limit(tmp_path, cache):
    """scripts/device_sweep.sh (a slice of the table on a rented GPU), run here on the CPU."""
    root = Path(__file__).parent.parent
    env = {**os.environ, "OUT": str(tmp_path / "out"), "RECORD": str(tmp_path / "rec"), "RUNS": str(tmp_path / "runs")}

    def run(limit: str, seed: str, **more: str) -> subprocess.CompletedProcess:
        argv = [
            "bash",
            "scripts/device_sweep.sh",
            limit,
            *"--profile quick --datasets synthetic --methods single --seeds".split(),
            seed,
            "--device",
            "cpu",
            *(f"--set={k}={v}" for k, v in TINY.items()),
        ]
        return subprocess.run(argv, cwd=root, env={**env, **more}, capture_output=True, text=True, timeout=120)

    done = run("100", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    copied = sorted(p.name for p in (tmp_path / "out" / "results" / "synthetic").iterdir())
    assert len(copied) == 1 and copied[0].startswith("single-seed1-") and "1 new record(s)" in done.stdout
    assert "synthetic single seeds 1" in (tmp_path / "out" / "sweep.log").read_text()
    assert "0 unfinished run(s)" in done.stdout  # seed 1's run folder holds its results: nothing to resume
    stopped = tmp_path / "runs" / "synthetic" / "single-seed9-0123"  # as a run stopped by the limit leaves it
    stopped.mkdir(parents=True)
    for name in ("config.json", "history.jsonl", "checkpoint.prev.pt"):
        (stopped / name).write_text(name)
    checkpoint = os.urandom(16 << 20)  # as large as a checkpoint of amazon-toys, and as incompressible
    (stopped / "checkpoint.pt").write_bytes(checkpoint)
    cut = run("1", "1,2")  # seed 1's record is older than this call; seed 2 cannot train in a second
    assert cut.returncode == 0 and "stopped at the limit of 1 s" in cut.stdout and "0 new record(s)" in cut.stdout
    assert "1 unfinished run(s)" in cut.stdout and "in 2 parts" in cut.stdout, cut.stdout
    parts = sorted((tmp_path / "out").glob("state.tar.gz.*"))  # each part small enough for a device call to return
    assert [p.name for p in parts] == ["state.tar.gz.00", "state.tar.gz.01"] and parts[0].stat().st_size <= 15 << 20
    carried = tmp_path / "carried"
    carried.mkdir()
    for part in parts:
        shutil.copy(part, carried)
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
        packed = {m.name for m in tar.getmembers() if m.isfile()}
    assert "runs/synthetic/single-seed9-0123/checkpoint.pt" in packed and not any("prev" in n for n in packed)
    state = str(carried / "state.tar.gz")  # the prefix of its parts
    elsewhere = run("1", "1", STATE_IN=state, RUNS=str(tmp_path / "other-runs"))  # a later call, a fresh machine
    assert "resumed from" in elsewhere.stdout and "1 unfinished run(s)" in elsewhere.stdout, elsewhere.stdout
    assert (tmp_path / "other-runs" / "synthetic" / "single-seed9-0123" / "checkpoint.pt").read_bytes() == checkpoint
    assert subprocess.run(["bash", "scripts/device_sweep.sh"], cwd=root, capture_output=True).returncode == 2
