"""Sequence augmentations for contrastive learning (EMKD, CL4SRec-style), vectorised on left-padded batches.

Every function keeps the layout that `backbone.make_layout` assumes: each row's items contiguous and
right-aligned, padding (0) on the left, at least one item per row; an augmented row holds only items of
its original row, in their original order.

- `crop(seq, keep)`: a random contiguous sub-sequence of max(1, floor(keep * n)) of a row's n items,
  re-left-padded.
- `delete(seq, share)`: item masking as deletion: floor(share * n) random items are removed (share < 1, so
  at least one stays) and the rest close up to the right. Our backbone has no [mask] token (SASRec's item
  table holds the items and the padding row only), so a masked item is dropped rather than replaced.
- `augment(seq, keep, share)`: per row, `crop` or `delete` with probability 1/2 each.

Random numbers come from `gen` (default: torch's global generator of the batch's device, which the engine
seeds and checkpoints, so resumed runs draw the same augmentations).
"""

from __future__ import annotations

import torch
from torch import Tensor


def crop(seq: Tensor, keep: float, gen: torch.Generator | None = None) -> Tensor:
    """Random contiguous crops (B, L) of left-padded rows (B, L), max(1, floor(keep * n)) items each."""
    B, L = seq.shape
    n = (seq > 0).sum(1)  # (B,) items per row
    m = (n * keep).floor().long().clamp_min(1)  # (B,) items kept
    offset = (torch.rand(B, generator=gen, device=seq.device) * (n - m + 1)).long()  # (B,) start in [0, n - m]
    j = torch.arange(L, device=seq.device)[None, :] - (L - m)[:, None]  # (B, L) index in the crop; < 0: padding
    src = (L - n + offset)[:, None] + j  # (B, L) source column of each output cell
    return seq.gather(1, src.clamp(0, L - 1)).masked_fill(j < 0, 0)  # (B, L)


def delete(seq: Tensor, share: float, gen: torch.Generator | None = None) -> Tensor:
    """Rows (B, L) with floor(share * n) random items of each deleted and the rest right-aligned again."""
    B, L = seq.shape
    real = seq > 0  # (B, L)
    dropped = (real.sum(1) * share).floor().long()  # (B,) fewer than n when share < 1
    keys = torch.rand(B, L, generator=gen, device=seq.device).masked_fill(~real, 2.0)  # (B, L) padding last
    rank = keys.argsort(1).argsort(1)  # (B, L) rank of each cell's key in its row
    kept = real & (rank >= dropped[:, None])  # (B, L) the `dropped` smallest keys go
    slot = L - kept.flip(1).cumsum(1).flip(1)  # (B, L) new column: L minus the kept items at or after it
    out = seq.new_zeros(B, L + 1)  # (B, L+1): column L collects the dropped cells
    out.scatter_(1, torch.where(kept, slot, L), seq)
    return out[:, :L]  # (B, L)


def augment(seq: Tensor, keep: float, share: float, gen: torch.Generator | None = None) -> Tensor:
    """One augmented view (B, L): each row cropped (`keep`) or with items deleted (`share`), at random."""
    use_crop = torch.rand(seq.shape[0], generator=gen, device=seq.device) < 0.5  # (B,)
    return torch.where(use_crop[:, None], crop(seq, keep, gen), delete(seq, share, gen))  # (B, L)
