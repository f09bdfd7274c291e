"""The CUDA path: the captured training step equals the eager one, dropout draws new masks at each replay, a
non-finite loss inside a graph is caught at the epoch's end, and every method trains on the GPU. Skipped
where no GPU exists (CI); run on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

import pytest
import torch

from flame_core.backbone import SASRecStack
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import build_split, synthetic
from flame_core.engine import EpochRunner, TrainingDiverged, make_optimizer, train, train_stacked
from flame_core.methods import Single, build_method

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
MODEL = ModelConfig(hidden=16, layers=2, heads=2, max_len=12, dropout=0.0)
CFG = TrainConfig(
    epochs=1,
    batch_size=32,
    progress=False,
    device="cuda",
    canet_sizes=(8, 12, 16),
    ckd_teacher_hidden=(16, 8),
    ckd_curriculum_epochs=2,
)
B = CFG.batch_size


@pytest.fixture(scope="module")
def tiny():
    data = synthetic(num_users=80, num_items=40, seed=3)
    return data, build_split(data, MODEL.max_len).to("cuda")


def make(method, data, model=MODEL, seeds=None, dtype=torch.float32, **changes):
    m = build_method(data.num_items, model, CFG.replace(method=method, **changes), seeds)
    specs = m.pretrained_specs()
    m.set_pretrained([Single(data.num_items, sm, sc).learn for _, sm, sc in specs])
    return m.to("cuda", dtype)


def steps(method, split, graph, order):
    """Train on `order` (S, X') with an EpochRunner; returns (mean losses, weights, whether a graph ran)."""
    runner = EpochRunner(method, make_optimizer(method, split.train_targets.device), split, B, graph=graph)
    losses = runner.run(order)
    return losses, {k: v.clone() for k, v in method.state_dict().items()}, runner.graph is not None


@pytest.mark.parametrize(
    "method, seeds",
    [
        ("single", None),
        ("ensemble_scratch", None),
        ("ensemble_guide", None),
        ("flame", None),
        ("emkd", None),
        ("ckd", None),
        ("flame", (42, 43, 44)),
    ],
)
@pytest.mark.parametrize("tail", [0, 7])
def test_the_graph_step_equals_the_eager_step(tiny, method, seeds, tail):
    """5 full batches (2 eager warm-up steps, the capture, 3 replays), plus an eager tail of `tail` samples;
    float64, so that both must agree to rounding."""
    data, split = tiny
    S = len(seeds) if seeds else 1
    gen = torch.Generator().manual_seed(0)
    order = torch.stack([torch.randperm(split.train_inputs.shape[0], generator=gen)[: 5 * B + tail] for _ in range(S)])
    runs = {}
    for graph in (False, True):
        torch.manual_seed(0)  # emkd's augmentations draw from the CUDA generator: the same draws in both runs
        runs[graph] = steps(make(method, data, seeds=seeds, dtype=torch.float64), split, graph, order.cuda())
    (eager_losses, eager_w, eager_graphed), (graph_losses, graph_w, graphed) = runs[False], runs[True]
    assert graphed and not eager_graphed
    for key in eager_losses:
        assert graph_losses[key] == pytest.approx(eager_losses[key], rel=1e-9, abs=1e-9), key
    torch.testing.assert_close(graph_w, eager_w, rtol=1e-7, atol=1e-9)


def test_float32_graph_and_eager_losses_agree(tiny):
    data, split = tiny
    order = torch.randperm(split.train_inputs.shape[0], generator=torch.Generator().manual_seed(1))[None, : 5 * B]
    eager = steps(make("flame", data), split, False, order.cuda())[0]
    graph = steps(make("flame", data), split, True, order.cuda())[0]
    for key in eager:
        assert graph[key] == pytest.approx(eager[key], rel=1e-5), key


def test_dropout_draws_new_masks_at_every_replay(tiny):
    data, split = tiny
    method = make("flame", data, model=MODEL.replace(dropout=0.5), lr=0.0)  # weights never move
    runner = EpochRunner(method, make_optimizer(method, split.train_targets.device), split, B, graph=True)
    same = torch.arange(B, device="cuda").repeat(1, 6)  # one batch, six times
    runner.run(same)
    assert runner.graph is not None
    losses = []
    for _ in range(3):  # replays of the captured step on the same batch
        runner.idx.copy_(same[0, :B])
        runner.graph.replay()
        losses.append(runner.acc["loss"].clone())
    assert len({round(float(b - a), 6) for a, b in zip(losses, losses[1:])}) > 1  # the increments differ


def test_a_nan_inside_the_graph_stops_the_epoch_naming_its_step(tiny):
    data, split = tiny
    method = make("single", data)
    poison = torch.ones((), device="cuda")  # read by the captured step: NaN from epoch 2 on
    original = method.loss

    def poisoned(batch):
        loss, logs = original(batch)
        return loss * poison, logs

    method.loss = poisoned
    runner = EpochRunner(method, make_optimizer(method, split.train_targets.device), split, B, graph=True)
    order = torch.arange(4 * B, device="cuda")[None]
    runner.run(order, "epoch 1")
    assert runner.graph is not None
    poison.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1: the loss is nan"):
        runner.run(order, "epoch 2")


@pytest.mark.parametrize("method", ["single", "ensemble_scratch", "ensemble_guide", "flame", "emkd", "canet", "ckd"])
def test_every_method_trains_on_the_gpu(tiny, tmp_path, method):
    data, split = tiny
    results = train(make(method, data, model=MODEL.replace(dropout=0.5)), split, tmp_path, log=lambda s: None)
    assert results["epochs_run"] == 1 and 0 <= results["test"]["NDCG@20"] <= 100


def test_stacked_flame_trains_on_the_gpu_with_paths_sampled_each_step(tiny, tmp_path):
    data, split = tiny
    m = make("flame", data, seeds=(42, 43), module_split="emb|block|block", num_paths=3)  # uniform sampling: eager
    assert not m.graph_safe
    out = train_stacked(m, split, tmp_path, [tmp_path / "a", tmp_path / "b"], log=lambda s: None)
    assert [r["seed"] for r in out] == [42, 43]


def test_the_frozen_anchor_copies_are_identical_and_untrained(tiny):
    data, split = tiny
    m = make("flame", data, seeds=(42, 43))
    before = m.frozen.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    order = torch.stack([torch.randperm(split.train_inputs.shape[0])[: 4 * B] for _ in range(2)]).cuda()
    EpochRunner(m, make_optimizer(m, split.train_targets.device), split, B, graph=True).run(order)
    for k, v in m.frozen.state_dict().items():
        assert torch.equal(v, before[k]) and torch.equal(v[0], v[1]), k
    assert isinstance(m.frozen, SASRecStack)
