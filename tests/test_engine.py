"""Training engine: one-epoch smoke runs of every method, resume, divergence, anchors, the released anchor."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flame_core import engine
from flame_core.anchor import anchor_key, cached_anchor_results, load_anchor, pretrain_anchor
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import build_split, load_dataset, synthetic
from flame_core.engine import EpochRunner, TrainingDiverged, evaluate, make_optimizer, train
from flame_core.experiments import evaluate_network, network_ranks
from flame_core.methods import Single, build_method
from flame_core.metrics import metrics_from_ranks

from conftest import same_history

MODEL = ModelConfig(hidden=16, layers=2, heads=2, max_len=12)
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="module")
def tiny():
    data = synthetic(num_users=60, num_items=40, seed=3)
    return data, build_split(data, MODEL.max_len)


def make(method, data, cfg, anchor_seed=11, **changes):
    cfg = cfg.replace(method=method, **changes)
    m = build_method(data.num_items, MODEL, cfg)
    specs = m.pretrained_specs()  # an untrained Single stands in for each pretrained network
    m.set_pretrained([Single(data.num_items, sm, sc.replace(seed=anchor_seed)).learn for _, sm, sc in specs])
    return m


CFG = TrainConfig(epochs=3, batch_size=64, progress=False)


@pytest.mark.parametrize("method", ["single", "ensemble_scratch", "ensemble_guide", "flame"])
def test_one_epoch_smoke_run(tiny, tmp_path, method):
    data, split = tiny
    results = train(make(method, data, CFG, epochs=1), split, tmp_path, log=lambda s: None)
    assert results["epochs_run"] == 1 and results["best_epoch"] == 1
    assert set(results["test"]) >= {"HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"}
    assert 0 <= results["test"]["NDCG@20"] <= results["test"]["HR@20"] <= 100
    row = results["history"][0]
    assert row["loss"] > 0 and row["train_seconds"] > 0 and "valid/NDCG@20" in row
    assert row["train_cpu_seconds"] > 0 and results["train_cpu_seconds"] == row["train_cpu_seconds"]
    if method != "single":
        assert row["align"] > 0 and row["lambda"] == pytest.approx(1e-5 ** (1 / 200))  # epoch 1 of R = 200
    if method == "ensemble_scratch":
        assert "member0/NDCG@20" in results["test"] and "valid/member1/NDCG@20" in row
    for name in ("config.json", "history.jsonl", "checkpoint.pt", "results.json"):
        assert (tmp_path / name).exists()
    assert json.loads((tmp_path / "results.json").read_text())["test"] == results["test"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("method", ["single", "flame"])
def test_resume_reproduces_the_uninterrupted_run(tiny, tmp_path, method):
    data, split = tiny
    full = train(make(method, data, CFG), split, tmp_path / "full", log=lambda s: None)

    def stop_after_two(rows):
        if rows[0]["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make(method, data, CFG), split, tmp_path / "cut", on_epoch=stop_after_two, log=lambda s: None)
    assert len((tmp_path / "cut" / "history.jsonl").read_text().splitlines()) == 2
    resumed = train(make(method, data, CFG), split, tmp_path / "cut", resume=True, log=lambda s: None)
    assert same_history(resumed["history"], full["history"])
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6) and resumed["best_epoch"] == full["best_epoch"]
    first_epochs = [[s["first_epoch"] for s in r["sessions"]] for r in (full, resumed)]
    assert first_epochs == [[1], [1, 3]]  # the resumed run names both processes that trained it


def test_each_process_that_trains_a_run_is_logged_with_its_revision_and_machine(tiny, tmp_path, monkeypatch):
    data, split = tiny
    monkeypatch.setattr(engine, "git_revision", lambda: "abc123")

    def stop_after_one(rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make("single", data, CFG), split, tmp_path, on_epoch=stop_after_one, log=lambda s: None)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del ckpt["state"]["replicas"][0]["sessions"]  # as a checkpoint written before runs logged their sessions
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.prev.pt").unlink(missing_ok=True)
    monkeypatch.setattr(engine, "git_revision", lambda: "def456")
    results = train(make("single", data, CFG), split, tmp_path, resume=True, log=lambda s: None)
    earlier, now = results["sessions"]
    assert earlier == {"first_epoch": 1, "git": None, "machine": None, "started": None}
    assert now["first_epoch"] == 2 and now["git"] == "def456" and now["machine"]["name"] and now["started"]
    assert json.loads((tmp_path / "results.json").read_text())["sessions"] == results["sessions"]


def test_a_diverged_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny, tmp_path):
    data, split = tiny
    method = make("single", data, CFG)
    original = method.loss

    def poisoned(batch):
        loss, logs = original(batch)
        return (loss * float("nan"), logs) if method.lam < 0.9 else (loss, logs)  # NaN from epoch 2 on (lambda 0.89)

    method.loss = poisoned
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1: the loss is nan.*epoch 1\) is kept"):
        train(method, split, tmp_path, log=lambda s: None)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["method"].values())


def test_early_stopping_selects_on_validation(tiny, tmp_path):
    data, split = tiny
    results = train(make("single", data, CFG.replace(epochs=6, patience=1)), split, None, log=lambda s: None)
    history = results["history"]
    best = max(range(len(history)), key=lambda i: history[i]["valid/NDCG@20"])
    assert results["best_epoch"] == best + 1
    assert results["valid"]["NDCG@20"] == history[best]["valid/NDCG@20"]
    assert results["epochs_run"] <= best + 2  # patience 1: one epoch without improvement, then stop


def test_anchor_is_pretrained_once_and_cached(tiny, tmp_path):
    data, split = tiny
    cfg = CFG.replace(epochs=2)
    lines = []
    anchor, path = pretrain_anchor(data, split, MODEL, cfg, root=tmp_path, log=lines.append)
    again, path2 = pretrain_anchor(data, split, MODEL, cfg, root=tmp_path, log=lines.append)
    assert path == path2 and "using cached" in lines[-1]
    torch.testing.assert_close(again.state_dict(), anchor.state_dict())
    assert anchor_key(data, MODEL, cfg) != anchor_key(data, MODEL, cfg.replace(seed=1))
    assert anchor_key(data, MODEL, cfg) != anchor_key(synthetic(num_users=61, num_items=40, seed=3), MODEL, cfg)
    assert anchor_key(data, MODEL, cfg) == anchor_key(data, MODEL, cfg.replace(method="flame", tau=0.5))
    probe = Single(data.num_items, MODEL, cfg.replace(method="single"))
    probe.learn.load_state_dict(load_anchor(path, MODEL, data.num_items).state_dict())
    assert (
        evaluate(probe, split, "valid")["NDCG@20"]
        == torch.load(path, weights_only=False)["results"]["valid"]["NDCG@20"]
    )
    cached = cached_anchor_results(data, MODEL, cfg, root=tmp_path)
    assert cached["epochs_run"] == 2 and cached["train_seconds"] > 0
    assert cached_anchor_results(data, MODEL, cfg.replace(seed=1), root=tmp_path) is None


@pytest.mark.skipif(not os.environ.get("FLAME_DATA_DIR"), reason="FLAME_DATA_DIR is not set")
def test_released_toys_anchor_gives_the_published_figures():
    weights = SHARED / "official_weights" / "amazon-toys.pt"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    data = load_dataset("amazon-toys")
    split = build_split(data, 50)
    model = ModelConfig()
    probe = Single(data.num_items, model, TrainConfig(method="single"))
    probe.learn.load_state_dict(load_anchor(weights, model, data.num_items).state_dict())
    valid, test = evaluate(probe, split, "valid"), evaluate(probe, split, "test")
    assert round(valid["NDCG@20"], 2) == 8.34
    assert round(test["NDCG@20"], 2) == 7.02
    assert round(test["HR@20"], 2) == 13.19
    ranks = network_ranks(weights, model, split, "test")  # what the book compares with records, user by user
    assert ranks.shape == split.test_targets.shape and metrics_from_ranks(ranks) == test
    assert evaluate_network(weights, model, split, "valid") == valid


def _run_in_child(root: str, cache: str, queue) -> None:
    os.environ["FLAME_CACHE_DIR"] = cache
    torch.set_num_threads(1)
    from flame_core.experiments import run

    cfg = TrainConfig(method="flame", epochs=1, batch_size=64, progress=False, device="cpu")
    exp = run("synthetic", ModelConfig(hidden=16, layers=1, heads=2, max_len=12), cfg, root=root, log=lambda s: None)
    queue.put((exp.reused, exp.results["test"]["NDCG@20"]))


def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    """The book runs chapters in parallel: the second asker waits for the lock and reuses the run."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_run_in_child, args=(str(tmp_path / "runs"), str(tmp_path / "cache"), queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(reused for reused, _ in results) == [False, True]  # trained once, reused once
    assert results[0][1] == results[1][1]
    assert len(list((tmp_path / "cache" / "anchors").glob("*.pt"))) == 1  # the anchor was pretrained once


HELD = """
import ctypes, sys, torch
from flame_core.utils import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2, all size_t
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
step = torch.ones(24 * 262144)  # 24 MB, as a CPU step's scores over every item
mapped = mallinfo2().hblkhd  # bytes in chunks glibc took from the kernel with mmap (and unmaps when freed)
del step
print(kept, mapped >> 20, mallinfo2().fordblks >> 20)  # MB mapped while held; MB free in the heap after the free
"""


def test_cpu_training_keeps_freed_memory_for_reuse_instead_of_handing_it_back():
    """glibc's defaults serve a step's large tensors from fresh mappings and unmap them when freed, so the next
    step faults their pages in again (about 6,000 faults a FLAME step on amazon-toys); keep_freed_memory (called
    by the engine on the CPU) makes the allocator serve them from its heap and keep them there once freed.
    Read from the allocator's own books, not from page-fault counts, which the rest of the machine disturbs."""

    def held(mode: str) -> tuple[str, int, int]:
        out = subprocess.run([sys.executable, "-c", HELD, mode], capture_output=True, text=True)
        if "mallinfo2" in out.stderr:
            pytest.skip("no glibc >= 2.33 malloc: nothing to tune")
        assert out.returncode == 0, out.stderr
        kept, mapped, free = out.stdout.split()
        return kept, int(mapped), int(free)

    kept, mapped, free = held("keep")
    assert kept == "True"
    assert mapped < 24 and free >= 24  # served from the heap, and still there for the next step
    _, mapped, free = held("default")
    assert mapped >= 24 and free < 24  # the defaults map it, then hand it back to the kernel


def test_the_engines_multi_tensor_adam_gives_the_per_tensor_loops_weights_on_the_cpu(tiny):
    data, split = tiny
    order = torch.randperm(split.train_inputs.shape[0], generator=torch.Generator().manual_seed(0))[None, :192]
    weights = []
    for make_opt in (
        lambda m: make_optimizer(m, torch.device("cpu")),
        lambda m: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=m.cfg.lr, foreach=False),
    ):
        method = make("flame", data, CFG)
        torch.manual_seed(0)  # the same dropout masks
        EpochRunner(method, make_opt(method), split, 64).run(order)  # three steps
        weights.append(method.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # bit for bit


def test_steps_timed_side_by_side_visit_every_method_in_each_round(tiny, monkeypatch):
    """measure.steps_ms_side_by_side (bench/speed.py) interleaves the methods, and loops of code outside the
    library, round by round after each one's warm-up, so that a drifting machine slows them alike; a time per
    method comes back."""
    from flame_core import measure

    data, split = tiny
    calls = []
    run = engine.EpochRunner.run

    def logged(self, order, *args, **kwargs):
        calls.append((self.method.cfg.method, order.shape[1]))
        return run(self, order, *args, **kwargs)

    monkeypatch.setattr(engine.EpochRunner, "run", logged)
    methods = {name: (make(name, data, CFG), None) for name in ("single", "flame")}
    loops = {"reference": lambda order: calls.append(("reference", order.shape[0]))}
    ms = measure.steps_ms_side_by_side(methods, split, steps=6, batch_size=8, rounds=3, loops=loops)
    assert set(ms) == {"single", "flame", "reference"} and all(t > 0 for t in ms.values())
    warm, timed = calls[:3], calls[3:]
    assert warm == [("single", 32), ("flame", 32), ("reference", 32)]  # four warm-up steps each
    assert timed == [("single", 16), ("flame", 16), ("reference", 16)] * 3  # two steps a round, each in turn
