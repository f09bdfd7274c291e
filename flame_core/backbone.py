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

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flame_core.config import ModelConfig


@dataclass
class Layout:
    """Where the tokens of a batch of left-padded sequences live (see the module docstring)."""

    ids: Tensor  # (T,) item id of each computed token
    pos: Tensor  # (T,) absolute position: the slot in the L-wide padded layout
    grid: Tensor | None  # (T,) flat index into the (B, Lb) grid; None when every cell is a token
    last: Tensor  # (B,) index into T of each sequence's last token
    real: Tensor  # (B, Lb) True where the grid cell holds an item
    _masks: dict = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.real.shape[0]

    @property
    def width(self) -> int:
        return self.real.shape[1]

    def mask(self, streams: int, last_only: bool) -> Tensor:
        """Boolean attention mask, True = may attend. Streams attend to each other position-causally.

        Returns (B, 1, S, S*Lb) for last-position queries, else (B, 1, S*Lb, S*Lb). Every grid cell may
        attend to itself, so padding rows are never fully masked (no NaN); real rows are unaffected.
        """
        key = (streams, last_only)
        if key not in self._masks:
            real = self.real.repeat(1, streams)  # (B, S*Lb)
            if last_only:
                m = real[:, None, None, :].expand(-1, 1, streams, -1)  # (B, 1, S, S*Lb)
            else:
                slot = torch.arange(streams * self.width, device=real.device)  # (S*Lb,)
                col = slot % self.width
                causal = col[None, :] <= col[:, None]  # (S*Lb, S*Lb): key position <= query position
                eye = slot[None, :] == slot[:, None]
                m = (causal & real[:, None, :]) | eye  # (B, S*Lb, S*Lb)
                m = m[:, None]  # (B, 1, S*Lb, S*Lb)
            self._masks[key] = m
        return self._masks[key]


def make_layout(seq: Tensor, packed: bool = True) -> Layout:
    """Describe a batch of left-padded sequences (B, L); every row must hold at least one item."""
    B, L = seq.shape
    lengths = (seq > 0).sum(1)  # (B,)
    if packed:
        width = int(lengths.max())
        sub = seq[:, L - width :]  # (B, Lb), the columns that hold any item
        real = sub > 0
        grid = real.flatten().nonzero().squeeze(1)  # (T,)
        last = lengths.cumsum(0) - 1  # (B,) items are contiguous and right-aligned
        ids = sub.flatten()[grid]  # (T,)
        pos = grid % width + (L - width)  # (T,)
        return Layout(ids=ids, pos=pos, grid=grid, last=last, real=real)
    cells = torch.arange(B * L, device=seq.device)  # (T,) = every grid cell
    last = torch.arange(B, device=seq.device) * L + L - 1  # (B,)
    return Layout(ids=seq.flatten(), pos=cells % L, grid=None, last=last, real=seq > 0)


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x (N, ..., Din) @ w (N, Din, Dout) + b (N, Dout) -> (N, ..., Dout), one batched call for N networks."""
    N, Din = x.shape[0], x.shape[-1]
    if N == 1:
        return torch.addmm(b[0], x.reshape(-1, Din), w[0]).view(*x.shape[:-1], w.shape[-1])
    y = torch.baddbmm(b[:, None], x.reshape(N, -1, Din), w)  # (N, ..., Dout)
    return y.view(*x.shape[:-1], w.shape[-1])


def _layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
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
            "item_emb": (num_items + 1, D), "pos_emb": (cfg.max_len, D), "emb_ln_w": (D,), "emb_ln_b": (D,),
            "qkv_w": (K, D, 3 * D), "qkv_b": (K, 3 * D), "out_w": (K, D, D), "out_b": (K, D),
            "ln1_w": (K, D), "ln1_b": (K, D), "ff1_w": (K, D, F_), "ff1_b": (K, F_),
            "ff2_w": (K, F_, D), "ff2_b": (K, D), "ln2_w": (K, D), "ln2_b": (K, D),
        }  # fmt: skip
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

    def embed(self, layout: Layout, p: float) -> Tensor:
        """Embedding module: (N, T, D) = dropout(LN(item_emb[ids] + pos_emb[pos]))."""
        x = self.item_emb[:, layout.ids] + self.pos_emb[:, layout.pos]  # (N, T, D)
        x = _layer_norm(x, self.emb_ln_w, self.emb_ln_b, self.cfg.ln_eps)
        return F.dropout(x, p, self.training and p > 0)

    def block(self, i: int, x: Tensor, layout: Layout, p: float, last_only: bool, streams: int = 1) -> Tensor:
        """Transformer block i on x (N, R, T, D) -> (N, R, T, D), or (N, R, B, D) when last_only.

        Rows R are independent inputs for the same network (path prefixes); consecutive groups of
        `streams` rows attend to each other (the released code's shared attention).
        """
        D, eps, train = x.shape[-1], self.cfg.ln_eps, self.training and p > 0
        w, b = self.qkv_w[:, i], self.qkv_b[:, i]
        kv = _linear(x, w[..., D:], b[..., D:])  # (N, R, T, 2D)
        if last_only:
            x = x[:, :, layout.last]  # (N, R, B, D)
        q = _linear(x, w[..., :D], b[..., :D])  # (N, R, Tq, D), Tq = B or T
        h = _attention(q, kv, layout, self.cfg.heads, p if train else 0.0, streams, last_only)
        h = F.dropout(_linear(h, self.out_w[:, i], self.out_b[:, i]), p, train)
        x = _layer_norm(x + h, self.ln1_w[:, i], self.ln1_b[:, i], eps)
        h = F.gelu(_linear(x, self.ff1_w[:, i], self.ff1_b[:, i]))  # (N, R, Tq, F)
        h = F.dropout(_linear(h, self.ff2_w[:, i], self.ff2_b[:, i]), p, train)
        return _layer_norm(x + h, self.ln2_w[:, i], self.ln2_b[:, i], eps)

    def encode(self, layout: Layout, p: float) -> Tensor:
        """Whole networks: last-position representations (N, B, D)."""
        x = self.embed(layout, p)[:, None]  # (N, 1, T, D)
        for i in range(self.cfg.layers):
            x = self.block(i, x, layout, p, last_only=i == self.cfg.layers - 1)
        return x[:, 0]  # (N, B, D)

    def item_scores(self, z: Tensor) -> Tensor:
        """Scores (N, ..., I+1) of representations z (N, ..., D); column 0 (padding) is -inf."""
        scores = torch.matmul(z.reshape(z.shape[0], -1, z.shape[-1]), self.item_emb.transpose(1, 2))
        scores = scores.view(*z.shape[:-1], -1)  # (N, ..., I+1)
        return scores.index_fill(-1, torch.zeros(1, dtype=torch.long, device=z.device), float("-inf"))


def _attention(q: Tensor, kv: Tensor, layout: Layout, heads: int, p: float, streams: int, last_only: bool) -> Tensor:
    """Causal multi-head attention of token queries over the real keys of their own sequence.

    q (N, R, Tq, D) with Tq = T, or B last-position queries; kv (N, R, T, 2D). Tokens are placed in the
    (B, Lb) grid, `streams` consecutive rows side by side, and scaled_dot_product_attention runs on it.
    """
    N, R, T, D2 = kv.shape
    B, Lb, S, E = layout.batch, layout.width, streams, D2 // 2 // heads
    G = N * R // S

    def to_grid(t: Tensor, parts: int) -> Tensor:  # (N, R, T, parts*D) -> (parts, G, B, H, S*Lb, E)
        if layout.grid is not None:
            t = t.new_zeros(N, R, B * Lb, t.shape[-1]).index_copy(2, layout.grid, t)  # (N, R, B*Lb, parts*D)
        t = t.view(G, S, B, Lb, parts, heads, E).permute(4, 0, 2, 5, 1, 3, 6)  # (parts, G, B, H, S, Lb, E)
        return t.reshape(parts, G, B, heads, S * Lb, E)

    k, v = to_grid(kv, 2)  # (G, B, H, S*Lb, E) each
    if last_only:
        q = q.view(G, S, B, heads, E).permute(0, 2, 3, 1, 4)  # (G, B, H, S, E)
    else:
        q = to_grid(q, 1)[0]  # (G, B, H, S*Lb, E)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.mask(S, last_only), dropout_p=p)
    if last_only:
        return out.permute(0, 3, 1, 2, 4).reshape(N, R, B, D2 // 2)  # (N, R, B, D)
    out = out.view(G, B, heads, S, Lb, E).permute(0, 3, 1, 4, 2, 5).reshape(N, R, B * Lb, D2 // 2)
    return out if layout.grid is None else out.index_select(2, layout.grid)  # (N, R, T, D)


def load_official(path: str, cfg: ModelConfig, num_items: int) -> SASRecStack:
    """Load a released FLAME anchor (a plain SASRec state dict) as a 1-network stack.

    Keys: item_emb.weight, pos_emb.weight, layernorm.*, seq_encoder.mhas.{i}.{w_Q,w_K,w_V,w,layernorm}.*,
    seq_encoder.ffns.{i}.{w1,w2,layernorm}.*. Linear weights are stored (out, in) and are transposed here.
    """
    sd = torch.load(path, map_location="cpu", weights_only=True)
    rows, pos_len, hidden = sd["item_emb.weight"].shape[0], *sd["pos_emb.weight"].shape
    layers = len({k.split(".")[2] for k in sd if k.startswith("seq_encoder.mhas.")})
    if (rows - 1, pos_len, hidden, layers) != (num_items, cfg.max_len, cfg.hidden, cfg.layers):
        raise ValueError(
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
