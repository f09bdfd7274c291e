import math

import pytest
import torch

from flame_core.metrics import (
    METRIC_KEYS,
    evaluate_scores,
    format_table,
    mask_history,
    metrics_from_ranks,
    target_ranks,
)

INF = float("-inf")


def test_target_ranks_hand_computed():
    scores = torch.tensor(
        [
            [INF, 0.1, 0.9, 0.5, 0.3],  # target 3 (0.5): only 0.9 is higher -> 1
            [INF, 0.7, 0.2, 0.7, 0.7],  # target 1 (0.7) tied with items 3, 4 -> ties do not count -> 0
            [INF, 0.1, 0.2, 0.3, 0.4],  # target 1 (0.1): three higher -> 3
            [INF, 0.4, 0.4, 0.9, 0.1],  # target 2 (0.4) tied with 1, one higher (0.9) -> 1
        ]
    )
    targets = torch.tensor([3, 1, 1, 2])
    ranks = target_ranks(scores, targets)
    assert ranks.dtype == torch.int64
    assert ranks.tolist() == [1, 0, 3, 1]


def test_mask_history():
    scores = torch.arange(12, dtype=torch.float).reshape(2, 6)  # B=2, I=5
    history = torch.tensor([[0, 0, 2, 5], [1, 3, 4, 2]])  # row 0 left-padded with zeros
    original = scores.clone()
    out = mask_history(scores, history)
    expected_masked = [[0, 2, 5], [0, 1, 2, 3, 4]]
    for b, cols in enumerate(expected_masked):
        for c in range(6):
            if c in cols:
                assert out[b, c] == INF
            else:
                assert out[b, c] == original[b, c]  # padding zeros mask nothing but column 0


def test_mask_history_masks_column_zero_without_padding():
    scores = torch.ones(1, 4)
    out = mask_history(scores, torch.tensor([[3]]))
    assert out.tolist() == [[INF, 1.0, 1.0, INF]]


def test_metrics_from_ranks_hand_computed():
    m = metrics_from_ranks(torch.tensor([0, 1, 4, 9, 19, 25]))
    assert list(m) == list(METRIC_KEYS)
    expected = {
        "HR@1": 100 * 1 / 6,
        "HR@5": 100 * 3 / 6,
        "HR@10": 100 * 4 / 6,
        "HR@20": 100 * 5 / 6,
        "NDCG@5": 100 * (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 6,
        "NDCG@10": 100 * (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6,
        "NDCG@20": 100 * (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11) + 1 / math.log2(21)) / 6,
    }
    for k, v in expected.items():
        assert isinstance(m[k], float)
        assert m[k] == pytest.approx(v, rel=1e-12), k


def _random_problem(U=37, I=50, L=6, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(U, I + 1, generator=g)  # distinct scores: no ties
    inputs = torch.arange(U)[:, None].repeat(1, L)  # each row names its user
    history = torch.randint(1, I + 1, (U, W), generator=g)
    history[:, :3] = 0  # left padding
    targets = torch.empty(U, dtype=torch.long)
    for u in range(U):
        allowed = [i for i in range(1, I + 1) if i not in history[u].tolist()]
        targets[u] = allowed[torch.randint(len(allowed), (1,), generator=g).item()]
    calls = []

    def score_fn(x):
        calls.append(x.shape[0])
        return table[x[:, 0]].clone()

    return table, inputs, targets, history, score_fn, calls


def test_evaluate_scores_batched_equals_single_batch_and_naive_sort():
    table, inputs, targets, history, score_fn, calls = _random_problem()
    m_small, r_small = evaluate_scores(score_fn, inputs, targets, history, batch_size=5)
    assert max(calls) == 5 and len(calls) == 8  # streamed: 37 users in 8 batches
    m_one, r_one = evaluate_scores(score_fn, inputs, targets, history, batch_size=1024)
    assert torch.equal(r_small, r_one) and m_small == m_one
    naive = []
    for u in range(len(targets)):
        excluded = set(history[u].tolist()) | {0}
        order = torch.argsort(table[u], descending=True).tolist()
        order = [i for i in order if i not in excluded]
        naive.append(order.index(targets[u].item()))
    assert r_small.tolist() == naive
    assert m_small == metrics_from_ranks(torch.tensor(naive))


def test_format_table():
    rows = {"SASRec": {k: 1.0 for k in METRIC_KEYS}, "FLAME-long-name": {k: 12.3456 for k in METRIC_KEYS}}
    lines = format_table(rows).splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["name"] + list(METRIC_KEYS)
    assert lines[1].split() == ["SASRec"] + ["1.00"] * 7
    assert lines[2].split() == ["FLAME-long-name"] + ["12.35"] * 7
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert format_table(rows, keys=["HR@10"]).splitlines()[1].split() == ["SASRec", "1.00"]
