"""A plain, padded, one-network-at-a-time SASRec written independently of flame_core.backbone.

It follows the released code literally (manual attention with an additive mask, full (B, L) layout, every
module applied path by path) and serves as the reference the tensorized, packed, prefix-shared code must
match.
"""

import math

import torch
import torch.nn.functional as F


def weights(stack, n):
    """Network n of a SASRecStack as a dict of plain tensors."""
    return {name: p[n] for name, p in stack.named_parameters()}


def embed(w, seq, eps):
    L = seq.shape[1]
    x = w["item_emb"][seq] + w["pos_emb"][torch.arange(L)]
    return F.layer_norm(x, x.shape[-1:], w["emb_ln_w"], w["emb_ln_b"], eps)


def block(w, i, x, pad, heads, eps, streams=1):
    """x (B, S*L, D) with S streams side by side, pad (B, L) True at padding."""
    B, SL, D = x.shape
    L, E = SL // streams, D // heads
    qkv = x @ w["qkv_w"][i] + w["qkv_b"][i]
    q, k, v = (t.view(B, SL, heads, E).transpose(1, 2) for t in qkv.split(D, -1))
    att = q @ k.transpose(-1, -2) / math.sqrt(E)
    col = torch.arange(SL) % L
    allowed = (col[None, :] <= col[:, None]) & ~pad.repeat(1, streams)[:, None, :]
    att = att.masked_fill(~allowed[:, None], -1e9).softmax(-1)
    h = (att @ v).transpose(1, 2).reshape(B, SL, D) @ w["out_w"][i] + w["out_b"][i]
    x = F.layer_norm(x + h, (D,), w["ln1_w"][i], w["ln1_b"][i], eps)
    h = F.gelu(x @ w["ff1_w"][i] + w["ff1_b"][i]) @ w["ff2_w"][i] + w["ff2_b"][i]
    return F.layer_norm(x + h, (D,), w["ln2_w"][i], w["ln2_b"][i], eps)


def forward(w, seq, layers, heads, eps):
    """Whole network, last-position representation (B, D)."""
    x = embed(w, seq, eps)
    for i in range(layers):
        x = block(w, i, x, seq == 0, heads, eps)
    return x[:, -1]


def path_forward(nets, path, plan, seq, heads, eps):
    """One modular path computed from scratch: module m by network path[m]; (B, D)."""
    x = None
    for choice, stages in zip(path, plan):
        w = nets[choice]
        for stage in stages:
            x = embed(w, seq, eps) if stage == "emb" else block(w, int(stage[1:]), x, seq == 0, heads, eps)
    return x[:, -1]


def shared_paths(nets, seq, layers, heads, eps):
    """Released shared attention, split emb|enc: dict name -> (B, D) for LL, FL, LF, FF."""
    L = seq.shape[1]
    x0 = torch.cat([embed(nets[0], seq, eps), embed(nets[1], seq, eps)], 1)  # (B, 2L, D): L stream, F stream
    out = {}
    for c, letter in enumerate("LF"):
        x = x0
        for i in range(layers):
            x = block(nets[c], i, x, seq == 0, heads, eps, streams=2)
        out["L" + letter], out["F" + letter] = x[:, L - 1], x[:, 2 * L - 1]
    return out
