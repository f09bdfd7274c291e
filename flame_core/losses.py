"""FLAME's losses and schedule as pure functions (the book's introduction states them).

- `rec_loss`: next-item cross-entropy over all items, from scores; `item_cross_entropy` computes the same
  straight from representations and the tied item table, with a hand-written backward (see there).
- `align_loss` (guided mutual learning): for every pair (i, j) of representations, a two-way InfoNCE on
  their concatenation with the diagonal excluded and each row's positive its twin in the other view
  (plain dot products / tau, as released), weighted by a softmax over pairs of the negative mean
  similarity (not detached: less similar pairs weigh more).
- `lambda_schedule`: lambda_e = lambda_0 * (lambda_R / lambda_0) ** (min(e, R) / R), R the annealing horizon
  (`anneal_epochs`, 200 as released), which is not the epoch budget: a short run follows the first epochs of
  the paper's schedule.

The related methods' losses (README, "The command line"), each documented where it is defined:
- EMKD: `symmetric_kl` (logit distillation between members), `twin_infonce` and `emkd_contrast` (intra- and
  cross-network contrast);
- CANet: `routing_uniform_loss`, `routing_guide_loss` (with `guide_targets`);
- multi-teacher distillation (ckd): `teacher_weights`, `weighted_distill`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from flame_core.backbone import batched_mm


def rec_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of scores (B, I+1) (padding column -inf) against target ids (B,)."""
    return F.cross_entropy(scores, targets)


def item_cross_entropy(z: Tensor, table: Tensor, target: Tensor) -> Tensor:
    """Next-item cross-entropy (N, B) of representations z (N, B, D) scored against item tables (N, I+1, D)
    (row 0, padding, excluded), for target ids (N, B): `rec_loss` of `item_scores`, per sample.

    The value and gradients are those of ``F.cross_entropy(z @ table.T with column 0 at -inf)``; what differs is
    the memory traffic, which is most of a training step on the CPU (the score matrix is B x 12k on Amazon
    data). Autograd through the scores allocates and fills four (B, I+1) tensors a step (the scores' copy for
    the padding column, log-softmax's output, the one-hot gradient and log-softmax's gradient); this function
    keeps one buffer, the exponentiated scores, and turns it in place into their gradient, softmax minus one-hot.
    Its backward therefore runs once (a second backward through it raises).
    """
    return _ItemCrossEntropy.apply(z, table, target)


class _ItemCrossEntropy(torch.autograd.Function):
    """Scores in items-major layout (N, I+1, B): on the CPU, table @ z^T is about 1.4x faster than z @ table^T
    (same FLOPs), and reductions over items then run along contiguous rows of B.

    On the CPU the networks are scored one at a time, each with its own buffer: one network's scores
    (I+1, B) fit in the last-level cache where N networks' do not (12 MB each on Amazon data, 32 MB of L3 on
    the 2-core machine), and a buffer over glibc's 32 MB mmap limit is fresh, page-faulted memory on every
    step. Scoring three to six networks in one buffer cost 40% more per network, forward and backward, than
    one at a time (14.9 against 10.5 ms a network on amazon-toys, the two alternated in one loop). A GPU
    scores all N in one batched call."""

    @staticmethod
    def forward(ctx, z: Tensor, table: Tensor, target: Tensor) -> Tensor:
        N = z.shape[0]
        step = 1 if z.device.type == "cpu" else N
        ctx.parts = [slice(n, n + step) for n in range(0, N, step)]
        losses, exps, totals = [], [], []
        for part in ctx.parts:
            scores = batched_mm(table[part], z[part].transpose(1, 2))  # (n, I+1, B)
            scores[:, 0] = float("-inf")
            picked = scores.gather(1, target[part, None])[:, 0]  # (n, B): the target's score
            top = scores.amax(1, keepdim=True)  # (n, 1, B)
            exp = scores.sub_(top).exp_()  # (n, I+1, B), in place: exp(score - max)
            total = exp.sum(1)  # (n, B)
            losses.append(top[:, 0] + total.log() - picked)
            exps.append(exp)
            totals.append(total)
        ctx.save_for_backward(z, table, target, _joined(totals), *exps)
        ctx.spent = False
        return _joined(losses)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.spent:
            raise RuntimeError("item_cross_entropy: its backward reuses its buffer and runs once (no retain_graph)")
        ctx.spent = True
        z, table, target, total, *exps = ctx.saved_tensors
        grad_z, grad_table = [], []
        for part, exp in zip(ctx.parts, exps):
            g = exp.mul_((grad[part] / total[part])[:, None])  # (n, I+1, B): grad * softmax
            g.scatter_add_(1, target[part, None], -grad[part, None])  # minus grad at the target: grad * (p - onehot)
            if ctx.needs_input_grad[0]:
                grad_z.append(batched_mm(g.transpose(1, 2), table[part]))  # (n, B, D)
            if ctx.needs_input_grad[1]:
                grad_table.append(batched_mm(g, z[part]))  # (n, I+1, D)
        return (_joined(grad_z) if grad_z else None), (_joined(grad_table) if grad_table else None), None


def _joined(parts: list[Tensor]) -> Tensor:
    """The parts' tensors concatenated along networks; a single part as it is, without a copy."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def lambda_schedule(epoch: int, horizon: int = 200, lambda_0: float = 1.0, lambda_R: float = 1e-5) -> float:
    """Alignment weight of epoch `epoch` (counted from 1): geometric from lambda_0 to lambda_R at epoch `horizon`
    (R), constant after it."""
    return lambda_0 * (lambda_R / lambda_0) ** (min(epoch, horizon) / horizon)


def pair_indices(num_views: int, device=None) -> tuple[Tensor, Tensor]:
    """All unordered pairs i < j of `num_views` views, as two index tensors (num_pairs,)."""
    i, j = torch.triu_indices(num_views, num_views, offset=1, device=device)
    return i, j


def pairwise_infonce(z: Tensor, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """Two-way InfoNCE of every pair of views, and their mean similarities, from one Gram matrix.

    z (V, B, D) -> (losses (pairs,), similarities (pairs,)) over the pairs of `pair_indices(V)`.
    For pair (i, j) the 2B rows [z_i; z_j] are scored against each other with the diagonal excluded; row b
    of z_i has its positive at z_j[b] and vice versa; the loss is the mean cross-entropy over the 2B rows.
    """
    V, B, D = z.shape
    gram = (z.reshape(V * B, D) @ z.reshape(V * B, D).T / tau).view(V, B, V, B)  # [v, b, w, c] = <z_v[b], z_w[c]>/tau
    eye = torch.eye(B, dtype=torch.bool, device=z.device)
    own = torch.diagonal(gram, dim1=0, dim2=2).permute(2, 0, 1)  # (V, B, B): a view against itself
    own_lse = own.masked_fill(eye, float("-inf")).logsumexp(-1)  # (V, B): self-negatives, diagonal excluded
    cross_lse = gram.logsumexp(-1)  # (V, B, V): row b of view v against every row of view w
    twin = torch.diagonal(gram, dim1=1, dim2=3)  # (V, V, B): <z_v[b], z_w[b]> / tau, the positives
    i, j = pair_indices(V, z.device)
    loss_ij = torch.logaddexp(own_lse[i], cross_lse[i, :, j]) - twin[i, j]  # (pairs, B): rows of view i
    loss_ji = torch.logaddexp(own_lse[j], cross_lse[j, :, i]) - twin[j, i]  # (pairs, B): rows of view j
    losses = (loss_ij.mean(1) + loss_ji.mean(1)) / 2  # (pairs,)
    similarity = twin[i, j].mean(1) * tau  # (pairs,): mean_b <z_i[b], z_j[b]>
    return losses, similarity


def pair_weights(similarity: Tensor, weighting: str = "similarity") -> Tensor:
    """Softmax over pairs of the negative mean similarity (not detached), or uniform weights."""
    if weighting == "uniform":
        return torch.full_like(similarity, 1.0 / similarity.numel())
    return torch.softmax(-similarity, dim=0)


def align_loss(z: Tensor, tau: float = 1.0, weighting: str = "similarity") -> tuple[Tensor, Tensor]:
    """Guided mutual learning loss over all pairs of views z (V, B, D); returns (loss, pair weights)."""
    losses, similarity = pairwise_infonce(z, tau)
    weights = pair_weights(similarity, weighting)
    return (weights * losses).sum(), weights


# ---- related methods: EMKD, CANet, multi-teacher distillation -------------------------


def symmetric_kl(scores: Tensor, temperature: float = 1.0) -> Tensor:
    """EMKD's logit distillation: sum over member pairs i < j of mean_b [KL(p_i || p_j) + KL(p_j || p_i)] * T^2.

    scores (N, B, I+1) (column 0 -inf), p_n = softmax(scores_n / T) over the items. Nothing is detached: both
    members of a pair learn from each other. T^2 keeps gradient magnitudes comparable across temperatures.
    """
    N = scores.shape[0]
    logp = torch.log_softmax(scores[..., 1:] / temperature, dim=-1)  # (N, B, I): padding column dropped
    p = logp.exp()  # (N, B, I)
    # KL(p_i||p_j) + KL(p_j||p_i) = sum_items (p_i - p_j)(log p_i - log p_j); summed over the pairs i < j this is
    # sum_items [N sum_n p_n log p_n - (sum_n p_n)(sum_n log p_n)]: one pass over the members, no pair tensors.
    kl = (N * (p * logp).sum(0) - p.sum(0) * logp.sum(0)).sum(-1)  # (B,): summed over the pairs
    return kl.mean() * temperature**2


def twin_infonce(anchors: Tensor, twins: Tensor, tau: float = 1.0) -> Tensor:
    """Symmetric cross-view InfoNCE of aligned rows: (..., B, D) twice -> (...,).

    Row b of `anchors` has its positive at twins[b] and its negatives at the other rows of `twins` (in-batch),
    and vice versa; the loss is the mean of both directions' cross-entropies. Plain dot products / tau.
    """
    logits = anchors @ twins.transpose(-1, -2) / tau  # (..., B, B): [b, c] = <anchors[b], twins[c]> / tau
    diagonal = torch.diagonal(logits, dim1=-2, dim2=-1)  # (..., B)
    return ((logits.logsumexp(-1) + logits.logsumexp(-2)) / 2 - diagonal).mean(-1)  # (...,)


def emkd_contrast(original: Tensor, augmented: Tensor, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """EMKD's intra- and cross-network contrast of members' representations (N, B, D) of the original and
    the augmented sequences.

    Intra: member n's original against its own augmented representation, mean over members. Cross: member
    x's original against member y's augmented representation, mean over ordered pairs x != y. Both come from
    one (N, N) table of pair losses (no data-dependent indexing, so a CUDA graph can capture it).
    """
    N = original.shape[0]
    table = twin_infonce(original[:, None], augmented[None], tau)  # (N, N): [x, y] original x vs augmented y
    own = torch.diagonal(table)  # (N,)
    return own.mean(), (table.sum() - own.sum()) / max(N * (N - 1), 1)


def routing_uniform_loss(logits: list[Tensor]) -> Tensor:
    """CANet's uniform loss: sum over routing decisions of KL(batch-mean routing distribution || uniform).

    logits: one (B, K_d) tensor per decision (its K_d options).
    """
    loss = 0.0
    for lg in logits:
        mean = torch.softmax(lg, -1).mean(0)  # (K_d,)
        loss = loss + (mean * (mean * lg.shape[-1]).clamp_min(1e-12).log()).sum()
    return loss


def guide_targets(easy: Tensor, options: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """CANet's soft routing targets (B, K): easy users decay as exp(-k) from the smallest option k = 0, hard
    users from the largest; `easy` (B,) bool."""
    decay = torch.exp(-torch.arange(options, dtype=dtype, device=easy.device))  # (K,)
    decay = decay / decay.sum()
    return torch.where(easy[:, None], decay, decay.flip(0))  # (B, K)


def routing_guide_loss(logits: list[Tensor], easy: Tensor) -> Tensor:
    """CANet's guide loss: sum over decisions of the mean cross-entropy of the router's distribution against
    `guide_targets` (options ordered small to large)."""
    loss = 0.0
    for lg in logits:
        target = guide_targets(easy, lg.shape[-1], lg.dtype)  # (B, K_d)
        loss = loss - (target * torch.log_softmax(lg, -1)).sum(-1).mean()
    return loss


def teacher_weights(teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample teacher weights (K, B) from in-batch logits (K, B, B) (row b: sample b's candidates, the
    in-batch targets; its own target on the diagonal).

    score_k[b] = confidence (teacher k's probability of the true target) + agreement (-KL(p_k || mean_k p_k));
    weights = softmax over teachers of the scores. Distributions at `temperature`.
    """
    logp = torch.log_softmax(teacher_logits / temperature, -1)  # (K, B, B)
    confidence = torch.diagonal(logp, dim1=-2, dim2=-1).exp()  # (K, B)
    log_mean = logp.exp().mean(0).log()  # (B, B)
    agreement = -(logp.exp() * (logp - log_mean)).sum(-1)  # (K, B)
    return torch.softmax(confidence + agreement, dim=0)  # (K, B)


def weighted_distill(
    student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, temperature: float = 1.0
) -> Tensor:
    """Multi-teacher distillation over in-batch candidates: mean_b sum_k w_k[b] KL(p_k[b] || q[b]) * T^2.

    student_logits (B, B), teacher_logits (K, B, B), weights (K, B).
    """
    logq = torch.log_softmax(student_logits / temperature, -1)  # (B, B)
    logp = torch.log_softmax(teacher_logits / temperature, -1)  # (K, B, B)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (K, B)
    return (weights * kl).sum(0).mean() * temperature**2
