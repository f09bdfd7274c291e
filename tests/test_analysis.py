"""Analysis utilities: per-view ranks agree with the methods' own scores; PER maps by hand; convergence."""

import numpy as np
import pytest
import torch

from flame_core.analysis import convergence, per_map, representations, view_ranks
from flame_core.backbone import SASRecStack
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import build_split, synthetic
from flame_core.methods import build_method
from flame_core.metrics import evaluate_scores

MODEL = ModelConfig(hidden=16, max_len=10)


@pytest.fixture(scope="module")
def split():
    data = synthetic(num_users=50, num_items=30, seed=1)
    return build_split(data, MODEL.max_len)


def test_per_map_by_hand():
    ranks = torch.tensor([[0, 30, 5, 1], [0, 0, 30, 30]])  # view 0 hits users 0, 2, 3; view 1 hits 0, 1
    expected = np.array([[3 / 4, 2 / 4], [1 / 4, 2 / 4]])
    np.testing.assert_allclose(per_map(ranks, k=20), expected)


@pytest.mark.parametrize("method", ["single", "ensemble_scratch", "flame"])
def test_view_ranks_agree_with_the_methods_scores(split, method):
    m = build_method(split.num_items, MODEL, TrainConfig(method=method, members=3))
    if method == "flame":
        m.set_frozen(SASRecStack(1, split.num_items, MODEL, seeds=[5]))
    names, ranks = view_ranks(m, split, "test", batch_size=16)
    inputs, targets, history = split.inputs("test")
    if method == "ensemble_scratch":
        assert names == ["member0", "member1", "member2"]
        for k in range(3):
            _, expected = evaluate_scores(lambda s, k=k: m.member_scores(s)[k], inputs, targets, history)
            assert torch.equal(ranks[k], expected)
    else:
        _, expected = evaluate_scores(m.scores, inputs, targets, history)
        assert torch.equal(ranks[0], expected)  # the pure learnable view is the inference network
    if method == "flame":
        assert names == ["LL", "LF", "FL", "FF"]
    names, reps = representations(m, split, max_users=20)
    assert reps.shape == (len(names), 20, MODEL.hidden)


def test_convergence_reads_epochs_and_seconds():
    history = [{"valid/NDCG@20": v, "train_seconds": 2.0} for v in (1.0, 5.0, 9.6, 10.0, 9.0)]
    assert convergence(history, fraction=0.95) == {"best": 10.0, "epochs": 3, "seconds": 6.0, "fraction": 0.95}
