"""Modular paths: a network cut into M modules, two networks (learnable L, frozen F), 2^M paths.

A path is a tuple of M choices (0 = learnable, 1 = frozen), named by its letters: ``LF`` is the learnable
embedding followed by the frozen encoder. Paths that share their first m choices share the computation of
those modules: `evaluate_paths` works level by level, applying each network's module m to the states of
the prefixes that need it, so the full enumeration costs sum_m 2^m module calls instead of M * 2^M. With
K sampled paths only the prefixes they need are computed. The purely frozen prefix runs without autograd.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from flame_core.backbone import Layout, SASRecStack, StackedLayout
from flame_core.config import ConfigError, module_split_parts

Path = tuple[int, ...]
LETTERS = "LF"


def module_plan(split: str, layers: int) -> list[list[str]]:
    """The stages of each module: "net" -> [[emb, b0, b1]], "emb|enc" -> [[emb], [b0, b1]], "emb|block|block"."""
    parts, blocks = module_split_parts(split), [f"b{i}" for i in range(layers)]
    if split == "net":
        return [["emb", *blocks]]
    if split == "emb|enc":
        return [["emb"], blocks]
    if len(parts) - 1 != layers:
        raise ConfigError(f"module_split {split!r}: one 'block' per Transformer block, and the network has {layers}")
    return [["emb"]] + [[b] for b in blocks]


def block_split(layers: int) -> str:
    """The module split with one module per Transformer block: "emb|block|block" for two layers."""
    return "|".join(["emb"] + ["block"] * layers)


def all_paths(num_modules: int) -> list[Path]:
    """The 2^M paths in a fixed order: pure learnable first, pure frozen last."""
    return list(itertools.product((0, 1), repeat=num_modules))


def path_name(path: Path) -> str:
    return "".join(LETTERS[c] for c in path)


def sample_paths(num_modules: int, k: int, generator: torch.Generator | None = None) -> list[Path]:
    """K distinct paths drawn uniformly, always including the pure learnable path (first)."""
    paths = all_paths(num_modules)
    if k >= len(paths):
        return paths
    others = torch.randperm(len(paths) - 1, generator=generator)[: k - 1] + 1
    return [paths[0]] + [paths[i] for i in sorted(others.tolist())]


def run_module(
    net: SASRecStack,
    stages: list[str],
    x: Tensor | None,
    layout: Layout | StackedLayout,
    p: float,
    final: bool,
    streams: int = 1,
) -> Tensor:
    """Apply one module (its stages) of a stack to rows x (N, R, T, D); "emb" takes no input.

    Returns (N, R, T, D), or (N, R, B, D) when `final` (the last block computes the last position only).
    """
    for stage in stages:
        if stage == "emb":
            x = net.embed(layout, p)[:, None]  # (N, 1, T, D)
        else:
            i = int(stage[1:])
            x = net.block(i, x, layout, p, last_only=final and i == net.cfg.layers - 1, streams=streams)
    return x


def take_rows(x: Tensor, rows: list[int]) -> Tensor:
    """x[:, rows] for a list of row indices (N, R, ...) -> (N, len(rows), ...), by slicing and concatenation:
    no index tensor is copied to the device, so a captured CUDA graph may contain it."""
    runs, start = [], 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[k - 1] + 1:
            runs.append(x[:, rows[start] : rows[k - 1] + 1])
            start = k
    return runs[0] if len(runs) == 1 else torch.cat(runs, dim=1)


def evaluate_paths(
    learn: SASRecStack,
    frozen: SASRecStack,
    plan: list[list[str]],
    layout: Layout | StackedLayout,
    paths: list[Path],
    p_learn: float,
    p_frozen: float,
    shared: bool = False,
) -> Tensor:
    """Last-position representations (N, P, B, D) of `paths`, computing each needed prefix once.

    Network n of `learn` pairs with network n of `frozen` (N = 1, or S stacked replicas). `shared` is the
    released code's attention for split emb|enc: both embedding streams are concatenated and attend to each
    other in the encoder (streams=2), so the encoder level runs on both prefixes.
    """
    nets, drops = (learn, frozen), (p_learn, p_frozen)
    prefixes: list[Path] = [()]
    states: Tensor | None = None  # (N, rows, T, D) for the prefixes
    for m, stages in enumerate(plan):
        needed = {path[: m + 1] for path in (all_paths(len(plan)) if shared else paths)}
        outs, new_prefixes = [], []
        for c in (0, 1):
            ext = [pre for pre in prefixes if pre + (c,) in needed]
            groups = [ext]
            if c == 1 and not shared:  # the pure frozen prefix needs no graph: its own call
                groups = [[pre for pre in ext if 0 not in pre], [pre for pre in ext if 0 in pre]]
            for group in groups:
                if not group:
                    continue
                x = None if m == 0 else take_rows(states, [prefixes.index(pre) for pre in group])  # (N, R, T, D)
                frozen_only = c == 1 and all(0 not in pre for pre in group)
                with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_only):
                    out = run_module(
                        nets[c], stages, x, layout, p=drops[c], final=m == len(plan) - 1, streams=2 if shared else 1
                    )
                outs.append(out)
                new_prefixes += [pre + (c,) for pre in group]
        states, prefixes = torch.cat(outs, dim=1), new_prefixes
    return take_rows(states, [prefixes.index(path) for path in paths])  # (N, P, B, D)
