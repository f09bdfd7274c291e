"""Losses and schedule against naive loop implementations and hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from flame_core.losses import align_loss, item_cross_entropy, lambda_schedule, pair_weights, pairwise_infonce, rec_loss


def naive_infonce(zi, zj, tau):
    """The released two-way InfoNCE, literally: concatenate, Gram, drop the diagonal, twin is positive."""
    B = zi.shape[0]
    z = torch.cat([zi, zj])  # (2B, D)
    losses = []
    for r in range(2 * B):
        logits = [z[r] @ z[c] / tau for c in range(2 * B) if c != r]
        positive = (r + B) % (2 * B)
        pos_index = positive if positive < r else positive - 1  # its index once the diagonal is gone
        logits = torch.stack(logits)
        losses.append(torch.logsumexp(logits, 0) - logits[pos_index])
    return torch.stack(losses).mean()


def naive_align(z, tau):
    V = z.shape[0]
    pairs = [(i, j) for i in range(V) for j in range(i + 1, V)]
    sims = torch.stack([torch.stack([z[i][b] @ z[j][b] for b in range(z.shape[1])]).mean() for i, j in pairs])
    weights = [math.exp(-s) for s in sims.tolist()]
    weights = [w / sum(weights) for w in weights]
    return sum(w * naive_infonce(z[i], z[j], tau) for w, (i, j) in zip(weights, pairs)), torch.tensor(weights)


@pytest.mark.parametrize("views, tau", [(2, 1.0), (4, 1.0), (3, 0.5)])
def test_align_loss_equals_naive_loops(views, tau):
    z = torch.randn(views, 5, 4, generator=torch.Generator().manual_seed(views), dtype=torch.float64)
    loss, weights = align_loss(z, tau)
    expected, expected_w = naive_align(z, tau)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(weights, expected_w.double())
    assert weights.sum().item() == pytest.approx(1.0)


def test_pairwise_infonce_matches_cross_entropy_form():
    zi, zj = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    losses, sims = pairwise_infonce(torch.stack([zi, zj]), 1.0)
    z = torch.cat([zi, zj])
    logits = (z @ z.T).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(6, 12), torch.arange(6)])
    torch.testing.assert_close(losses[0], F.cross_entropy(logits, target))
    torch.testing.assert_close(sims[0], (zi * zj).sum(1).mean())


def test_pair_weights_favour_dissimilar_pairs_and_keep_gradients():
    sims = torch.tensor([3.0, 0.0, -1.0], requires_grad=True)
    w = pair_weights(sims)
    assert w.argmax().item() == 2 and w.argmin().item() == 0
    denominator = math.exp(-3) + 1 + math.e
    assert w.tolist() == pytest.approx([math.exp(-3) / denominator, 1 / denominator, math.e / denominator])
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert sims.grad.abs().sum() > 0  # not detached
    assert pair_weights(sims, "uniform").tolist() == pytest.approx([1 / 3] * 3)


def test_lambda_schedule_values():
    R = 200
    assert lambda_schedule(1, R) == pytest.approx(1e-5 ** (1 / 200))
    assert lambda_schedule(R // 2, R) == pytest.approx(math.sqrt(1e-5))  # halfway: geometric mean
    assert lambda_schedule(R, R) == pytest.approx(1e-5)
    assert lambda_schedule(10, 20, lambda_0=2.0, lambda_R=0.02) == pytest.approx(0.2)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("nets", [1, 3])
def test_item_cross_entropy_is_the_cross_entropy_of_the_item_scores(nets, device):
    """Value and both gradients equal autograd through the score matrix (padding column at -inf), for one
    network and a stack; the padding row of the table gets no gradient."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(nets, 9, 4, 2, dtype=torch.float64, generator=gen)[..., 0]  # strided (N, B, D)
    table = torch.randn(nets, 13, 4, dtype=torch.float64, generator=gen)
    target = torch.randint(1, 13, (nets, 9), generator=gen)
    weight = torch.randn(nets, 9, dtype=torch.float64, generator=gen)  # an arbitrary upstream gradient
    z, table, target, weight = (t.to(device) for t in (z, table, target, weight))
    z, table = z.requires_grad_(), table.requires_grad_()
    ce = item_cross_entropy(z, table, target)
    grads = torch.autograd.grad((ce * weight).sum(), (z, table))
    scores = torch.bmm(z, table.transpose(1, 2)).clone()
    scores[..., 0] = float("-inf")
    ref = F.cross_entropy(scores.flatten(0, 1), target.flatten(), reduction="none").view(nets, 9)
    ref_grads = torch.autograd.grad((ref * weight).sum(), (z, table))
    torch.testing.assert_close(ce, ref, rtol=0, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert grads[1][:, 0].abs().max() == 0


def test_item_cross_entropy_refuses_a_second_backward():
    """Its backward turns its saved buffer into the gradient; a second one would be silently wrong."""
    z, table = torch.randn(1, 3, 4, requires_grad=True), torch.randn(1, 6, 4)
    loss = item_cross_entropy(z, table, torch.tensor([[1, 2, 5]])).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


def test_rec_loss_ignores_the_padding_column():
    scores = torch.tensor([[float("-inf"), 1.0, 2.0, 0.5]])
    expected = -(1.0 - math.log(math.exp(1) + math.exp(2) + math.exp(0.5)))
    assert rec_loss(scores, torch.tensor([1])).item() == pytest.approx(expected)


def test_the_loss_comparison_times_both_ways():
    """flame_core.measure.score_head_ms (bench/speed.py and chapter 6) returns a median time for each way."""
    from flame_core.measure import score_head_ms

    times = score_head_ms(batch_size=8, num_items=50, hidden=4, steps=3, device="cpu")
    assert set(times) == {"autograd", "item_cross_entropy"}
    assert all(t > 0 for t in times.values())
