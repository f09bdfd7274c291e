"""Stacked seeds: S replicas in one model equal S separate runs (dropout off); layouts side by side; resume;
per-replica early stopping; the CLI's --seeds. Also the annealing horizon and the anchor's own seed."""

import json

import pytest
import torch

from flame_core.backbone import SASRecStack, make_layout
from flame_core.cli import main
from flame_core.config import ConfigError, ModelConfig, TrainConfig
from flame_core.data import build_split, synthetic
from flame_core.engine import evaluate, train, train_stacked
from flame_core.losses import lambda_schedule
from flame_core.methods import build_method

from conftest import same_history

MODEL = ModelConfig(hidden=16, layers=2, heads=2, max_len=12, dropout=0.0)
CFG = TrainConfig(epochs=2, batch_size=48, progress=False)
SEEDS = (42, 43, 44)
QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def tiny():
    data = synthetic(num_users=60, num_items=40, seed=3)
    return data, build_split(data, MODEL.max_len)


def make(method, data, seeds=None, **changes):
    m = build_method(data.num_items, MODEL, CFG.replace(method=method, **changes), seeds)
    if hasattr(m, "set_frozen"):
        m.set_frozen(SASRecStack(1, data.num_items, MODEL, seeds=[7]))
    return m


@pytest.mark.parametrize("packed", [False, True])
def test_a_stacked_layout_computes_each_part_as_alone(packed):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 13, (3, 9), generator=gen)  # three replicas' batches of different lengths
    seq = torch.randint(1, 41, (3, 9, 12), generator=gen).masked_fill(torch.arange(12) < 12 - lengths[..., None], 0)
    stack = SASRecStack(6, 40, MODEL, seeds=list(range(6)))  # 3 replicas x 2 networks, replica-major
    z = stack.encode(make_layout(seq, packed), 0.0)  # (6, B, D)
    for s in range(3):
        alone = SASRecStack(2, 40, MODEL, seeds=[2 * s, 2 * s + 1])
        expected = alone.encode(make_layout(seq[s], packed), 0.0)  # (2, B, D)
        torch.testing.assert_close(z[2 * s : 2 * s + 2], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "method, changes",
    [
        ("single", {}),
        ("ensemble_scratch", {}),
        ("ensemble_guide", {}),
        ("flame", {}),
        ("flame", {"module_split": "emb|block|block", "packed": False}),
    ],
)
def test_stacked_seeds_equal_separate_runs(tiny, tmp_path, method, changes):
    """In float64: in float32, Adam turns the rounding noise of gradients that are zero in exact arithmetic (the
    key bias's) into steps of up to lr, which differ between any two ways of summing."""
    data, split = tiny
    stacked = train_stacked(
        make(method, data, SEEDS, **changes).double(),
        split,
        tmp_path / "stack",
        [tmp_path / f"seed{s}" for s in SEEDS],
        **QUIET,
    )
    for s, seed in enumerate(SEEDS):
        alone = make(method, data, seed=seed, **changes).double()
        separate = train(alone, split, tmp_path / f"alone{seed}", **QUIET)
        for a, b in zip(stacked[s]["history"], separate["history"]):
            for key in b:
                if not key.endswith("seconds"):
                    assert a[key] == pytest.approx(b[key], abs=1e-5, rel=1e-5), (seed, key)
        for key in separate["test"]:
            assert stacked[s]["test"][key] == pytest.approx(separate["test"][key], abs=1e-5), (seed, key)
        assert stacked[s]["seed"] == seed and stacked[s]["stacked_with"] == list(SEEDS)
        weights = torch.load(tmp_path / f"seed{seed}" / "checkpoint.pt", weights_only=False)["best_weights"][0]
        torch.testing.assert_close(weights, alone.state_dict(), atol=1e-5, rtol=1e-5)  # selected weights
        assert json.loads((tmp_path / f"seed{seed}" / "results.json").read_text())["test"] == stacked[s]["test"]


def test_each_replica_stops_on_its_own(tiny, tmp_path):
    data, split = tiny
    cfg = {"epochs": 8, "patience": 1, "lr": 3e-2}  # a large step size: validation wobbles and replicas stop apart
    stacked = train_stacked(
        make("single", data, SEEDS, **cfg), split, tmp_path / "stack", [tmp_path / f"seed{s}" for s in SEEDS], **QUIET
    )
    alone = [train(make("single", data, seed=s, **cfg), split, None, **QUIET) for s in SEEDS]
    assert [r["epochs_run"] for r in stacked] == [r["epochs_run"] for r in alone]
    assert [r["best_epoch"] for r in stacked] == [r["best_epoch"] for r in alone]
    assert len({r["epochs_run"] for r in stacked}) > 1  # they did stop at different epochs
    for s, seed in enumerate(SEEDS):
        lines = (tmp_path / f"seed{seed}" / "history.jsonl").read_text().splitlines()
        assert len(lines) == stacked[s]["epochs_run"]


def test_an_interrupted_stacked_run_resumes(tiny, tmp_path):
    data, split = tiny
    dirs = lambda root: [root / f"seed{s}" for s in SEEDS]  # noqa: E731
    full_dir = tmp_path / "full"
    full = train_stacked(make("flame", data, SEEDS, epochs=3), split, full_dir, dirs(full_dir), **QUIET)

    def stop_after_two(rows):
        if rows[0]["epoch"] == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_stacked(make("flame", data, SEEDS, epochs=3), split, cut, dirs(cut), on_epoch=stop_after_two, **QUIET)
    resumed = train_stacked(make("flame", data, SEEDS, epochs=3), split, cut, dirs(cut), resume=True, **QUIET)
    for a, b in zip(resumed, full):
        assert same_history(a["history"], b["history"]) and a["test"] == pytest.approx(b["test"], rel=1e-6)
        assert [s["first_epoch"] for s in a["sessions"]] == [1, 3]  # each replica names both processes
    with pytest.raises(ValueError, match="resume the stacked run"):  # a replica's folder holds no optimiser
        train(make("flame", data, seed=42, epochs=4), split, cut / "seed42", resume=True, **QUIET)


def test_methods_that_cannot_stack_say_so(tiny):
    data, _ = tiny
    with pytest.raises(ConfigError, match="cannot stack seeds"):
        build_method(data.num_items, MODEL, CFG.replace(method="canet"), SEEDS)
    with pytest.raises(ValueError, match="use evaluate_replicas"):
        evaluate(make("single", data, SEEDS), tiny[1], "valid")


def test_cli_trains_stacked_seeds_with_a_folder_and_a_record_each(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    argv = [
        *"train --method flame --seeds 42,43 --epochs 1 --out".split(),
        str(tmp_path / "run"),
        "--record",
        str(tmp_path / "rec"),
        *"--dataset synthetic --hidden 16 --max-len 12 --batch-size 128 --no-progress".split(),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "flame seed 42 test" in out and "flame seed 43 test" in out and "2 seeds stacked in one model" in out
    records = sorted((tmp_path / "rec" / "synthetic").glob("*.json"))
    assert [json.loads(p.read_text())["seed"] for p in records] == [42, 43]
    assert all(json.loads(p.read_text())["stacked_with"] == [42, 43] for p in records)
    assert all(json.loads(p.read_text())["pretrained"][0]["seed"] == 0 for p in records)  # one anchor, seed 0
    for s in (42, 43):
        assert (tmp_path / "run" / f"seed{s}" / "results.json").exists()
        assert (
            main(
                [
                    "evaluate",
                    "--weights",
                    str(tmp_path / "run" / f"seed{s}"),
                    *"--dataset synthetic --hidden 16 --max-len 12 --device cpu".split(),
                ]
            )
            == 0
        )


def test_lambda_follows_the_papers_horizon_whatever_the_budget(tiny):
    data, _ = tiny
    m = make("flame", data, epochs=3)
    seen = []
    for epoch in (1, 2, 3):
        m.start_epoch(epoch)
        seen.append(m.lam)
        assert float(m.lam_weight) == pytest.approx(m.lam)  # the device copy the loss reads
    assert seen == pytest.approx([0.9441, 0.8913, 0.8414], abs=1e-4)  # 1e-5 ** (e / 200)
    assert lambda_schedule(250, 200) == lambda_schedule(200, 200) == pytest.approx(1e-5)  # constant after R
    short = make("flame", data, epochs=3, anneal_epochs=3)
    short.start_epoch(3)
    assert short.lam == pytest.approx(1e-5)


def test_the_anchor_has_its_own_seed(tiny):
    data, _ = tiny
    ((name, _, spec),) = make("flame", data).pretrained_specs()
    assert name == "anchor" and spec.seed == CFG.flame.anchor_seed != CFG.seed and spec.method == "single"
    with pytest.raises(ConfigError, match="anchor_seed"):
        build_method(data.num_items, MODEL, CFG.replace(method="flame", seed=CFG.flame.anchor_seed))


def test_seeds_trained_stacked_are_found_by_a_request_for_one_of_them(tmp_path, monkeypatch):
    from flame_core.experiments import run_seeds

    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    model, cfg = MODEL.replace(dropout=0.5), CFG.replace(method="single", epochs=1, device="cpu")
    (first,) = run_seeds("synthetic", model, cfg, [42], root=tmp_path, log=lambda s: None)
    stack = run_seeds("synthetic", model, cfg, [42, 43, 44], root=tmp_path, log=lambda s: None)
    assert [e.reused for e in stack] == [True, False, False]  # 42 reused; 43 and 44 trained together
    assert stack[1].results["stacked_with"] == [43, 44] and stack[0].out_dir == first.out_dir
    (alone,) = run_seeds("synthetic", model, cfg.replace(seed=43), [43], root=tmp_path, log=lambda s: None)
    assert alone.reused and alone.out_dir == stack[1].out_dir  # one run folder per seed and settings
