"""Tensorized post-LN SASRec: N networks of one architecture in parameter tensors with a leading axis N.

The network is the one released with FLAME: item + learned positional embedding, LayerNorm, dropout; then
blocks of multi-head causal self-attention and a 4D GELU feed-forward, each ``LN(x + dropout(sublayer(x)))``,
with dropout on the attention probabilities; the representation is the last position's output and item
scores are dot products with the (tied) item embedding table.

Token layout. A batch of left-padded sequences ``(B, L)`` is described by a `Layout`: the tokens it computes
on, ``(T,)``, and where they sit in a ``(B, Lb)`` grid. Padded execution (``packed=False``) computes every
grid cell, as the released code does. Packed execution computes per-token work (projections, feed-forward,
LayerNorm, dropout) on the real tokens only and uses the grid only inside attention; positions stay the
absolute slots of the padded layout, so both give the same numbers. The final block computes queries,
attention output and feed-forward for the last position only (``last_only``), which is all training and
evaluation use.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flame_core.config import ModelConfig
from flame_core.files import FileError, first_line, read_torch, require


@dataclass
class Bucket:
    """Sequences of similar length that share one attention grid (B_k, W_k)."""

    rows: slice  # their positions in the layout's sorted order of sequences
    tokens: slice  # their tokens, contiguous in the layout's token order
    grid: Tensor | None  # (T_k,) flat index of each token in the (B_k, W_k) grid; None: every cell is a token
    real: Tensor  # (B_k, W_k) True where the grid cell holds an item
    _masks: dict = field(default_factory=dict, repr=False)

    def mask(self, streams: int, last_only: bool) -> Tensor:
        """Boolean attention mask, True = may attend; streams attend to each other position-causally.

        (B_k, 1, C, C*W_k) for last-position queries, else (B_k, 1, C*W_k, C*W_k). Every cell may attend
        to itself, so rows of padding cells are never fully masked (no NaN); real rows are unaffected.
        """
        key = (streams, last_only)
        if key not in self._masks:
            real = self.real.repeat(1, streams)  # (B_k, C*W_k)
            if last_only:
                m = real[:, None, None, :].expand(-1, 1, streams, -1)  # (B_k, 1, C, C*W_k)
            else:
                width = self.real.shape[1]
                slot = torch.arange(streams * width, device=real.device)  # (C*W_k,)
                causal = slot[None, :] % width <= slot[:, None] % width  # key position <= query position
                m = ((causal & real[:, None, :]) | (slot[None, :] == slot[:, None]))[:, None]  # (B_k, 1, SW, SW)
            self._masks[key] = m
        return self._masks[key]


@dataclass
class Layout:
    """Where the tokens of a batch of left-padded sequences live (see the module docstring).

    Packed layouts sort the sequences by length (stable) and cut them into buckets whose attention grids
    are only as wide as their longest sequence; `unsort` restores the batch order of the outputs.
    """

    ids: Tensor  # (T,) item id of each computed token
    pos: Tensor  # (T,) absolute position: the slot in the L-wide padded layout
    last: Tensor  # (B,) token index of each sequence's last token, in sorted order
    unsort: Tensor | None  # (B,) sorted position of each sequence of the batch; None: not sorted
    buckets: list[Bucket]

    @property
    def batch(self) -> int:
        return self.last.shape[0]

    @property
    def parts(self) -> list[Layout]:
        """The batches side by side: this one alone (a `StackedLayout` holds one per replica)."""
        return [self]

    def embed_tokens(self, item_emb: Tensor, pos_emb: Tensor) -> Tensor:
        """Item plus positional embedding of every token, per network: (N, I+1, D), (N, L, D) -> (N, T, D)."""
        return item_emb[:, self.ids] + pos_emb[:, self.pos]

    def last_tokens(self, x: Tensor) -> Tensor:
        """Each sequence's last token (N, R, T, D) -> (N, R, B, D), in the layout's sorted order."""
        return x[:, :, self.last]

    def batch_order(self, x: Tensor) -> Tensor:
        """Per-sequence rows (N, R, B, D) from the sorted order back to the batch's."""
        return x if self.unsort is None else x[:, :, self.unsort]


@dataclass
class StackedLayout:
    """S replicas' batches side by side, for S independent copies of a model in one stack (stacked seeds).

    A stack of N = S*g networks is replica-major: networks s*g .. s*g+g-1 belong to replica s and compute on
    part s. Token axes are padded to the longest part (T = max T_s, padding tokens are item 0 at slot 0 and
    never read); attention runs part by part; everything else runs as one batched call for all N networks.
    """

    parts: list[Layout]
    ids: Tensor  # (S, T) item id of each token of each part
    pos: Tensor  # (S, T) absolute position
    last: Tensor  # (S, B) token index of each sequence's last token, in its part's sorted order
    unsort: Tensor | None  # (S, B) or None when no part is sorted

    @property
    def batch(self) -> int:
        return self.last.shape[1]

    def _per_net(self, t: Tensor, num_nets: int) -> Tensor:
        """(S, ...) -> (N, ...): each part's row repeated for the g networks of its replica."""
        return t.repeat_interleave(num_nets // len(self.parts), dim=0)

    def embed_tokens(self, item_emb: Tensor, pos_emb: Tensor) -> Tensor:
        N = item_emb.shape[0]
        nets = torch.arange(N, device=item_emb.device)[:, None]  # (N, 1)
        return item_emb[nets, self._per_net(self.ids, N)] + pos_emb[nets, self._per_net(self.pos, N)]  # (N, T, D)

    def _gather_rows(self, x: Tensor, index: Tensor) -> Tensor:  # x (N, R, T, D), index (S, B) -> (N, R, B, D)
        index = self._per_net(index, x.shape[0])[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[-1])
        return x.gather(2, index)

    def last_tokens(self, x: Tensor) -> Tensor:
        return self._gather_rows(x, self.last)

    def batch_order(self, x: Tensor) -> Tensor:
        return x if self.unsort is None else self._gather_rows(x, self.unsort)


BUCKET_EDGES = (4, 8, 16, 32)  # grid widths of the packed layout's buckets (the last one is the longest sequence)


def make_layout(seq: Tensor, packed: bool = True) -> Layout | StackedLayout:
    """Describe a batch of left-padded sequences (B, L), or S replicas' batches (S, B, L) side by side;
    every row must hold at least one item."""
    if seq.dim() == 3:
        return _stacked_layout([make_layout(part, packed) for part in seq])
    B, L = seq.shape
    if not packed:  # every cell of the (B, L) grid is a token, as in the released code
        cells = torch.arange(B * L, device=seq.device)  # (T,)
        last = torch.arange(B, device=seq.device) * L + L - 1  # (B,)
        bucket = Bucket(rows=slice(0, B), tokens=slice(0, B * L), grid=None, real=seq > 0)
        return Layout(ids=seq.flatten(), pos=cells % L, last=last, unsort=None, buckets=[bucket])
    lengths = (seq > 0).sum(1)  # (B,)
    lengths, order = lengths.sort(stable=True)  # (B,), (B,)
    seq = seq[order]  # (B, L) shortest first
    row, col = (seq > 0).nonzero(as_tuple=True)  # (T,), (T,): row-major, so each sequence's tokens are contiguous
    last = lengths.cumsum(0) - 1  # (B,) items are contiguous and right-aligned
    edges = [e for e in BUCKET_EDGES if e < L] + [L]
    cut = torch.searchsorted(lengths, torch.tensor(edges, device=seq.device), right=True).tolist()
    buckets, start = [], 0
    for stop in cut:
        if stop > start:
            width, t0 = int(lengths[stop - 1]), int(last[start - 1]) + 1 if start else 0
            t1 = int(last[stop - 1]) + 1
            grid = (row[t0:t1] - start) * width + col[t0:t1] - (L - width)  # (T_k,)
            real = seq[start:stop, L - width :] > 0  # (B_k, W_k)
            buckets.append(Bucket(rows=slice(start, stop), tokens=slice(t0, t1), grid=grid, real=real))
        start = stop
    unsort = torch.empty_like(order).scatter_(0, order, torch.arange(B, device=seq.device))  # (B,)
    return Layout(ids=seq[row, col], pos=col, last=last, unsort=unsort, buckets=buckets)


def _stacked_layout(parts: list[Layout]) -> StackedLayout:
    """Side by side: token axes padded to the longest part with item 0 at slot 0 (never read)."""
    T = max(part.ids.shape[0] for part in parts)
    pad = lambda t: F.pad(t, (0, T - t.shape[0]))  # noqa: E731  (T_s,) -> (T,)
    ids, pos = torch.stack([pad(p.ids) for p in parts]), torch.stack([pad(p.pos) for p in parts])  # (S, T) each
    last = torch.stack([p.last for p in parts])  # (S, B)
    sorted_ = [p.unsort is not None for p in parts]
    unsort = torch.stack([p.unsort for p in parts]) if all(sorted_) else None  # (S, B)
    if any(sorted_) and unsort is None:
        raise ValueError("make_layout: parts must be all packed or all padded")
    return StackedLayout(parts=parts, ids=ids, pos=pos, last=last, unsort=unsort)


class BlockWeights(NamedTuple):
    """One Transformer block's weights for N networks (leading axis N; linear weights (in, out))."""

    q_w: Tensor  # (N, h, h)
    q_b: Tensor  # (N, h)
    kv_w: Tensor  # (N, h, 2h): keys, then values
    kv_b: Tensor  # (N, 2h)
    out_w: Tensor  # (N, h, h)
    out_b: Tensor
    ln1_w: Tensor  # (N, h)
    ln1_b: Tensor
    ff1_w: Tensor  # (N, h, 4h)
    ff1_b: Tensor
    ff2_w: Tensor  # (N, 4h, h)
    ff2_b: Tensor
    ln2_w: Tensor
    ln2_b: Tensor


def transformer_block(
    x: Tensor,
    w: BlockWeights,
    layout: Layout | StackedLayout,
    heads: int,
    p: float,
    eps: float,
    last_only: bool,
    streams: int = 1,
    residual_scale: Tensor | None = None,
) -> Tensor:
    """The post-LN block: ``LN(x + dropout(attention(x)))`` then ``LN(x + dropout(FFN(x)))``, for N networks.

    x (N, R, T, h) -> (N, R, T, h), or (N, R, B, h) with `last_only` (queries, attention output and the
    feed-forward for each sequence's last token only; keys and values for all). `p` is the dropout
    probability (0: none); `residual_scale` (2,) scales the attention and the feed-forward output before
    each residual sum (CANet's learnable scales; None: no scaling).
    """
    train = p > 0
    kv = linear(x, w.kv_w, w.kv_b)  # (N, R, T, 2h)
    if last_only:
        x = layout.last_tokens(x)  # (N, R, B, h), sequences in the layout's sorted order
    q = linear(x, w.q_w, w.q_b)  # (N, R, Tq, h), Tq = B or T
    how = _Attention(heads=heads, p=p, streams=streams, last_only=last_only)
    a = dropout(linear(_attention(q, kv, layout, how), w.out_w, w.out_b), p, train)
    x = layer_norm(x + (a if residual_scale is None else residual_scale[0] * a), w.ln1_w, w.ln1_b, eps)
    f = gelu(linear(x, w.ff1_w, w.ff1_b))  # (N, R, Tq, 4h)
    f = dropout(linear(f, w.ff2_w, w.ff2_b), p, train)
    x = layer_norm(x + (f if residual_scale is None else residual_scale[1] * f), w.ln2_w, w.ln2_b, eps)
    return layout.batch_order(x) if last_only else x  # back in batch order


def batched_mm(a: Tensor, b: Tensor) -> Tensor:
    """(N, m, k) @ (N, k, n) -> (N, m, n): one plain product when N is 1, else torch.bmm."""
    return (a[0] @ b[0])[None] if a.shape[0] == 1 else torch.bmm(a, b)


def linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x (N, ..., Din) @ w (N, Din, Dout) + b (N, Dout) -> (N, ..., Dout), one batched call for N networks."""
    N, Din = x.shape[0], x.shape[-1]
    if N == 1:
        return torch.addmm(b[0], x.reshape(-1, Din), w[0]).view(*x.shape[:-1], w.shape[-1])
    y = torch.baddbmm(b[:, None], x.reshape(N, -1, Din), w)  # (N, ..., Dout)
    return y.view(*x.shape[:-1], w.shape[-1])


def layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    """LayerNorm over D with per-network affine parameters w, b (N, D)."""
    if x.shape[0] == 1:
        return F.layer_norm(x, x.shape[-1:], w[0], b[0], eps)
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * w.view(shape) + b.view(shape)


class SASRecStack(nn.Module):
    """N SASRec networks with stacked parameters; module-level calls for modular paths.

    Parameters (leading axis N, then the layer axis for block weights; linear weights are (in, out)):
    item_emb (N, I+1, D), pos_emb (N, L, D), emb_ln_w/b (N, D), qkv_w (N, layers, D, 3D), out_w (N, layers, D, D),
    ln1_w/b, ff1_w (N, layers, D, F), ff2_w (N, layers, F, D), ln2_w/b, and biases of the linear layers.
    """

    def __init__(self, num_nets: int, num_items: int, cfg: ModelConfig, seeds: list[int] | None = None):
        super().__init__()
        self.cfg, self.num_items = cfg, num_items
        N, D, K, F_ = num_nets, cfg.hidden, cfg.layers, 4 * cfg.hidden
        shapes = {
            "item_emb": (num_items + 1, D),
            "pos_emb": (cfg.max_len, D),
            "emb_ln_w": (D,),
            "emb_ln_b": (D,),
            "qkv_w": (K, D, 3 * D),
            "qkv_b": (K, 3 * D),
            "out_w": (K, D, D),
            "out_b": (K, D),
            "ln1_w": (K, D),
            "ln1_b": (K, D),
            "ff1_w": (K, D, F_),
            "ff1_b": (K, F_),
            "ff2_w": (K, F_, D),
            "ff2_b": (K, D),
            "ln2_w": (K, D),
            "ln2_b": (K, D),
        }
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(N, *shape)))
        self.reset_parameters(seeds if seeds is not None else list(range(N)))

    @property
    def num_nets(self) -> int:
        return self.item_emb.shape[0]

    @torch.no_grad()
    def reset_parameters(self, seeds: list[int]) -> None:
        """N(0, init_std) for embeddings and linear weights (network n from its own seed), biases 0, LN 1/0."""
        for n, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(seed)
            for name, p in self.named_parameters():
                if name.endswith("_b"):
                    p[n].zero_()
                elif name.startswith("emb_ln") or name.startswith("ln"):
                    p[n].fill_(1.0)
                else:
                    value = torch.randn(p.shape[1:], generator=gen) * self.cfg.init_std
                    p[n].copy_(value.to(p.device))
            self.item_emb[n, 0].zero_()  # padding row

    def embed(self, layout: Layout | StackedLayout, p: float) -> Tensor:
        """Embedding module: (N, T, D) = dropout(LN(item_emb[ids] + pos_emb[pos]))."""
        x = layout.embed_tokens(self.item_emb, self.pos_emb)  # (N, T, D)
        x = layer_norm(x, self.emb_ln_w, self.emb_ln_b, self.cfg.ln_eps)
        return dropout(x, p, self.training and p > 0)

    def block_weights(self, i: int, width: int | None = None) -> BlockWeights:
        """Block i's weights for all N networks, sliced to the first `width` hidden units (default: all)."""
        N, D = self.num_nets, self.cfg.hidden
        h = width or D
        qkv_w, qkv_b = self.qkv_w[:, i], self.qkv_b[:, i]  # (N, D, 3D), (N, 3D)
        if h == D:  # views: Q, then K and V side by side
            q_w, kv_w, q_b, kv_b = qkv_w[..., :D], qkv_w[..., D:], qkv_b[..., :D], qkv_b[..., D:]
        else:
            w, b = qkv_w[:, :h].view(N, h, 3, D)[..., :h], qkv_b.view(N, 3, D)[..., :h]  # (N, h, 3, h), (N, 3, h)
            q_w, kv_w, q_b, kv_b = w[:, :, 0], w[:, :, 1:].reshape(N, h, 2 * h), b[:, 0], b[:, 1:].reshape(N, 2 * h)
        return BlockWeights(
            q_w,
            q_b,
            kv_w,
            kv_b,
            self.out_w[:, i, :h, :h],
            self.out_b[:, i, :h],
            self.ln1_w[:, i, :h],
            self.ln1_b[:, i, :h],
            self.ff1_w[:, i, :h, : 4 * h],
            self.ff1_b[:, i, : 4 * h],
            self.ff2_w[:, i, : 4 * h, :h],
            self.ff2_b[:, i, :h],
            self.ln2_w[:, i, :h],
            self.ln2_b[:, i, :h],
        )

    def block(
        self, i: int, x: Tensor, layout: Layout | StackedLayout, p: float, last_only: bool, streams: int = 1
    ) -> Tensor:
        """Transformer block i on x (N, R, T, D) -> (N, R, T, D), or (N, R, B, D) when last_only.

        Rows R are independent inputs for the same network (path prefixes); consecutive groups of
        `streams` rows attend to each other (the released code's shared attention).
        """
        p = p if self.training else 0.0
        w, cfg = self.block_weights(i), self.cfg
        return transformer_block(
            x, w, layout, heads=cfg.heads, p=p, eps=cfg.ln_eps, last_only=last_only, streams=streams
        )

    def encode(self, layout: Layout | StackedLayout, p: float) -> Tensor:
        """Whole networks: last-position representations (N, B, D)."""
        x = self.embed(layout, p)[:, None]  # (N, 1, T, D)
        for i in range(self.cfg.layers):
            x = self.block(i, x, layout, p, last_only=i == self.cfg.layers - 1)
        return x[:, 0]  # (N, B, D)

    def item_scores(self, z: Tensor) -> Tensor:
        """Scores (N, ..., I+1) of representations z (N, ..., D); column 0 (padding) is -inf."""
        scores = batched_mm(z.reshape(z.shape[0], -1, z.shape[-1]), self.item_emb.transpose(1, 2))  # (N, B*, I+1)
        scores[..., 0] = float("-inf")  # in place: the product's backward does not need its output
        return scores.view(*z.shape[:-1], -1)  # (N, ..., I+1)


class _Attention(NamedTuple):
    """How `transformer_block` attends, handed down to each part and bucket of the layout."""

    heads: int
    p: float  # dropout on the attention probabilities (0: none)
    streams: int  # consecutive rows that attend to each other (the released code's shared attention)
    last_only: bool  # queries of each sequence's last token only


def _attention(q: Tensor, kv: Tensor, layout: Layout | StackedLayout, how: _Attention) -> Tensor:
    """Causal multi-head attention of token queries over the real keys of their own sequence.

    q (N, R, Tq, D) with Tq = T, or B last-position queries in sorted order; kv (N, R, T, 2D).
    Each bucket's tokens are placed in its (B_k, W_k) grid, `streams` consecutive rows side by side. The
    parts of a stacked layout run one after the other, each on its replica's networks.
    """
    parts = layout.parts
    if len(parts) == 1:
        return _part_attention(q, kv, parts[0], how)
    g, out = q.shape[0] // len(parts), []
    for s, part in enumerate(parts):
        o = _part_attention(q[s * g : (s + 1) * g], kv[s * g : (s + 1) * g], part, how)
        out.append(o if how.last_only else F.pad(o, (0, 0, 0, q.shape[2] - o.shape[2])))  # (g, R, Tq, D)
    return torch.cat(out)  # (N, R, Tq, D)


def _part_attention(q: Tensor, kv: Tensor, layout: Layout, how: _Attention) -> Tensor:
    out = []
    for bucket in layout.buckets:
        q_k = q[:, :, bucket.rows if how.last_only else bucket.tokens]  # (N, R, B_k or T_k, D)
        out.append(_bucket_attention(q_k, kv[:, :, bucket.tokens], bucket, how))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)  # (N, R, Tq, D)


def _bucket_attention(q: Tensor, kv: Tensor, bucket: Bucket, how: _Attention) -> Tensor:
    heads, last_only = how.heads, how.last_only
    N, R, T, D2 = kv.shape
    (B, W), C, E = bucket.real.shape, how.streams, D2 // 2 // heads
    G = N * R // C

    def to_grid(t: Tensor, parts: int) -> Tensor:  # (N, R, T, parts*D) -> (parts, G, B, H, C*W, E)
        if bucket.grid is not None:
            t = t.new_zeros(N, R, B * W, t.shape[-1]).index_copy(2, bucket.grid, t)  # (N, R, B*W, parts*D)
        t = t.view(G, C, B, W, parts, heads, E).permute(4, 0, 2, 5, 1, 3, 6)  # (parts, G, B, H, C, W, E)
        return t.reshape(parts, G, B, heads, C * W, E)

    k, v = to_grid(kv, 2)  # (G, B, H, C*W, E) each
    if last_only:
        q = q.view(G, C, B, heads, E).permute(0, 2, 3, 1, 4)  # (G, B, H, C, E)
    else:
        q = to_grid(q, 1)[0]  # (G, B, H, C*W, E)
    out = _sdpa(q, k, v, bucket.mask(C, last_only), how.p)  # (G, B, H, C or C*W, E)
    if last_only:
        return out.permute(0, 3, 1, 2, 4).reshape(N, R, B, D2 // 2)  # (N, R, B, D)
    out = out.view(G, B, heads, C, W, E).permute(0, 3, 1, 4, 2, 5).reshape(N, R, B * W, D2 // 2)
    return out if bucket.grid is None else out.index_select(2, bucket.grid)  # (N, R, T, D)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float) -> Tensor:
    """softmax(q k^T / sqrt(E), masked) with dropout p on the probabilities, @ v.

    Without dropout this is torch's fused kernel; with dropout the same arithmetic is spelled out so the
    dropout mask comes from `dropout` (uniform draws, about 3x cheaper than bernoulli_ on CPU).
    """
    if p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    att = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (..., Lq, Lk)
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.matmul(dropout(att, p, True), v)


class _NativeGelu(torch.autograd.Function):
    """Exact GELU through ATen's own CPU kernels, forward and backward.

    On CPU, F.gelu dispatches to a oneDNN primitive that is JIT-built and cached for every new shape. A
    packed batch has a new token count at every step, so that cache (1024 entries) grew a training
    process by about 2 GB per 1,000 steps and slowed each step down; ATen's kernel is as fast.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        with _without_onednn():
            return F.gelu(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        with _without_onednn():
            return torch.ops.aten.gelu_backward(grad, x)


@contextlib.contextmanager
def _without_onednn():
    """Route CPU ops to ATen's kernels for a moment (only the `enabled` flag is touched)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def gelu(x: Tensor) -> Tensor:
    """Exact (erf) GELU; on CPU without oneDNN's per-shape primitive cache (see _NativeGelu)."""
    return _NativeGelu.apply(x) if x.device.type == "cpu" else F.gelu(x)


def dropout(x: Tensor, p: float, train: bool) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    The mask is built in the uniform draws' own buffer (1/(1-p) where kept, else 0), so the forward and the
    backward are one product each; the values are those of ``x * (u >= p) * (1/(1-p))``, bit for bit.
    """
    if not train or p == 0.0:
        return x
    scale = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # (x's shape): 0 or 1/(1-p)
    return x * scale


def load_official(path: str | Path, cfg: ModelConfig, num_items: int, state: dict | None = None) -> SASRecStack:
    """Load a released FLAME anchor (a plain SASRec state dict) as a 1-network stack.

    Keys: item_emb.weight, pos_emb.weight, layernorm.*, seq_encoder.mhas.{i}.{w_Q,w_K,w_V,w,layernorm}.*,
    seq_encoder.ffns.{i}.{w1,w2,layernorm}.*. Linear weights are stored (out, in) and are transposed here.
    `state`: the state dict already read from `path`. A file that is not such a state dict raises FileError.
    """
    what = "a SASRec state dict of the official FLAME release"
    sd = read_torch(path, what) if state is None else state
    require(sd, ("item_emb.weight", "pos_emb.weight"), path, what)
    try:
        return _official_stack(sd, cfg, num_items, path)
    except (KeyError, RuntimeError, AttributeError, IndexError) as err:
        raise FileError(
            f"{path}: an incomplete or inconsistent SASRec state dict ({first_line(err, typed=True)}); expected {what}"
        ) from None


def _official_stack(sd: dict, cfg: ModelConfig, num_items: int, path) -> SASRecStack:
    rows, pos_len, hidden = sd["item_emb.weight"].shape[0], *sd["pos_emb.weight"].shape
    layers = len({k.split(".")[2] for k in sd if k.startswith("seq_encoder.mhas.")})
    if (rows - 1, pos_len, hidden, layers) != (num_items, cfg.max_len, cfg.hidden, cfg.layers):
        raise FileError(
            f"{path}: anchor has {rows - 1} items, max_len {pos_len}, hidden {hidden}, {layers} layers; "
            f"the dataset and settings need {num_items} items, max_len {cfg.max_len}, hidden {cfg.hidden}, "
            f"{cfg.layers} layers"
        )
    net = SASRecStack(1, num_items, cfg)
    mha, ffn = "seq_encoder.mhas.{}.", "seq_encoder.ffns.{}."
    with torch.no_grad():
        net.item_emb[0].copy_(sd["item_emb.weight"])
        net.pos_emb[0].copy_(sd["pos_emb.weight"])
        net.emb_ln_w[0].copy_(sd["layernorm.weight"])
        net.emb_ln_b[0].copy_(sd["layernorm.bias"])
        for i in range(layers):
            a, f = mha.format(i), ffn.format(i)
            net.qkv_w[0, i].copy_(torch.cat([sd[a + n + ".weight"].T for n in ("w_Q", "w_K", "w_V")], 1))
            net.qkv_b[0, i].copy_(torch.cat([sd[a + n + ".bias"] for n in ("w_Q", "w_K", "w_V")]))
            for dst, key in ((net.out_w, a + "w"), (net.ff1_w, f + "w1"), (net.ff2_w, f + "w2")):
                dst[0, i].copy_(sd[key + ".weight"].T)
            for dst, key in ((net.out_b, a + "w"), (net.ff1_b, f + "w1"), (net.ff2_b, f + "w2")):
                dst[0, i].copy_(sd[key + ".bias"])
            for (w, b), key in (((net.ln1_w, net.ln1_b), a), ((net.ln2_w, net.ln2_b), f)):
                w[0, i].copy_(sd[key + "layernorm.weight"])
                b[0, i].copy_(sd[key + "layernorm.bias"])
    return net
