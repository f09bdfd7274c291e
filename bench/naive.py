"""The baseline every speed figure is compared with: SASRec written the obvious way in plain PyTorch.

This is the model a user would write from the SASRec paper with `torch.nn` building blocks: embeddings,
`nn.MultiheadAttention` with a causal mask over the whole padded window, post-LN blocks with a GELU
feed-forward, dropout, every position computed in every block, the last position scored against the tied
item table, cross-entropy over all items, Adam. Padding embeddings are zeroed as in the original SASRec
and masked by nothing but causality, so it is close to, not exactly, the library's Single: it exists to be
timed (`bench/speed.py`, side by side with the library's steps on batches of the same split), never to
report accuracy. `pairwise_symmetric_kl` is EMKD's logit distillation written the same way, a pair of members
at a time, timed against the library's one-pass form by `bench/related.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NaiveBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, causal: Tensor) -> Tensor:
        h, _ = self.attn(x, x, x, attn_mask=causal, need_weights=False)  # (B, L, D)
        x = self.ln1(x + self.drop(h))
        return self.ln2(x + self.drop(self.ff(x)))


class NaiveSASRec(nn.Module):
    def __init__(
        self, num_items: int, max_len: int = 50, d: int = 64, layers: int = 2, heads: int = 2, dropout: float = 0.5
    ):
        super().__init__()
        self.item = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(NaiveBlock(d, heads, dropout) for _ in range(layers))
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1))

    def forward(self, seq: Tensor) -> Tensor:
        """Last-position representations (B, D) of left-padded sequences (B, L)."""
        x = self.drop(self.ln(self.item(seq) + self.pos.weight[None, : seq.shape[1]]))  # (B, L, D)
        x = x * (seq > 0)[..., None]  # padding positions carry zeros, as in the original SASRec
        for block in self.blocks:
            x = block(x, self.causal[: seq.shape[1], : seq.shape[1]])
        return x[:, -1]  # (B, D)

    def loss(self, seq: Tensor, target: Tensor) -> Tensor:
        scores = self(seq) @ self.item.weight.T  # (B, I+1)
        scores[:, 0] = float("-inf")
        return F.cross_entropy(scores, target)


def naive_training(num_items: int, inputs: Tensor, targets: Tensor, batch_size: int) -> Callable[[Tensor], None]:
    """A training loop of the naive SASRec (seeded, Adam at 1e-3) on the device of `inputs`: called with an
    order of training-sample indices, it takes a step per `batch_size` of them and returns when the device is
    done (`flame_core.measure.steps_ms_side_by_side`'s `loops`)."""
    torch.manual_seed(0)
    net = NaiveSASRec(num_items).to(inputs.device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def steps(order: Tensor) -> None:
        for idx in order.split(batch_size):
            loss = net.loss(inputs[idx], targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if inputs.is_cuda:
            torch.cuda.synchronize(inputs.device)

    return steps


def pairwise_symmetric_kl(scores: Tensor, temperature: float = 1.0) -> Tensor:
    """EMKD's logit distillation as its formula reads, a pair of members at a time: the sum over the pairs
    i < j of mean_b [KL(p_i||p_j) + KL(p_j||p_i)] * T^2, scores (N, B, I+1) with column 0 -inf. The library's
    `losses.symmetric_kl` computes the same sum in one pass over the members (`bench/related.py` times both)."""
    logp = torch.log_softmax(scores[..., 1:] / temperature, dim=-1)  # (N, B, I)
    N, total = scores.shape[0], scores.new_zeros(())
    for i in range(N):
        for j in range(i + 1, N):
            total = total + ((logp[i].exp() - logp[j].exp()) * (logp[i] - logp[j])).sum(-1).mean()
    return total * temperature**2
