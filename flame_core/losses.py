"""FLAME's losses and schedule as pure functions (DESIGN.md section 5).

- `rec_loss`: next-item cross-entropy over all items.
- `align_loss` (guided mutual learning): for every pair (i, j) of representations, a two-way InfoNCE on
  their concatenation with the diagonal excluded and each row's positive its twin in the other view
  (plain dot products / tau, as released), weighted by a softmax over pairs of the negative mean
  similarity (not detached: less similar pairs weigh more).
- `lambda_schedule`: lambda_e = lambda_0 * (lambda_R / lambda_0) ** (e / R).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rec_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of scores (B, I+1) (padding column -inf) against target ids (B,)."""
    return F.cross_entropy(scores, targets)


def lambda_schedule(epoch: int, epochs: int, lambda_0: float = 1.0, lambda_R: float = 1e-5) -> float:
    """Alignment weight of epoch `epoch` (counted from 1) of `epochs`: geometric from lambda_0 to lambda_R."""
    return lambda_0 * (lambda_R / lambda_0) ** (epoch / epochs)


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
