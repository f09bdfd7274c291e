"""Cost of a training step of every method, the related ones included, against Single; and EMKD's logit
distillation computed a pair of members at a time against the library's one pass over the members.

    python bench/related.py                              # amazon-toys from $FLAME_DATA_DIR, CPU
    python bench/related.py --dataset ml-100k --steps 10
    python bench/related.py --device cuda

Every method of the registry trains with random weights (`measure.untrained`: its anchor or teachers random
too, since cost does not depend on what the weights hold) through the engine's `EpochRunner`, timed side by
side (`measure.steps_ms_side_by_side`: rounds that run every variant in turn, the median round per variant),
so the ratios to Single hold on a machine whose speed drifts. The ratios say how much longer an epoch of each
method takes than Single's and so how many device hours a cell of the main table needs.

EMKD's distillation sums KL(p_i||p_j) + KL(p_j||p_i) over the pairs of its N members, over the whole
catalogue. `pairwise_symmetric_kl` (`bench/naive.py`) writes it a pair at a time, as the formula reads; the
library (`losses.symmetric_kl`) rewrites the sum in one pass over the members. The EMKD step with the pairwise
form runs in the same rounds (the library's EMKD with the loss function swapped), and both forms are
evaluated on the same scores to show they agree.
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock

import torch

import flame_core.emkd
from flame_core.config import ModelConfig
from flame_core.data import build_split, load_dataset
from flame_core.engine import EpochRunner, make_optimizer
from flame_core.losses import symmetric_kl
from flame_core.measure import steps_ms_side_by_side, untrained
from flame_core.registry import REGISTRY
from flame_core.utils import resolve_device, seed_everything

try:
    from bench.naive import pairwise_symmetric_kl
    from bench.speed import bench_main, header
except ImportError:  # run as a script: bench/ is on sys.path
    from naive import pairwise_symmetric_kl
    from speed import bench_main, header

PAIRWISE = "emkd, pairwise KL"


def pairwise_emkd(data, split, model: ModelConfig, device, batch_size: int):
    """A training loop of EMKD with the pairwise KL swapped in (`steps_ms_side_by_side`'s `loops`)."""
    method = untrained("emkd", data, model, device)
    runner = EpochRunner(method, make_optimizer(method, device), split, batch_size)

    def steps(order: torch.Tensor) -> None:
        with mock.patch.object(flame_core.emkd, "symmetric_kl", pairwise_symmetric_kl):
            runner.run(order[None])

    return steps


def kl_agreement(num_items: int, batch_size: int, members: int, device) -> float:
    """Largest relative difference between the two forms of the KL on random float32 scores of the
    catalogue's size, over three spreads of the members (far apart to nearly equal)."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for spread in (4.0, 0.1, 0.01):
        base = 4 * torch.randn(1, batch_size, num_items + 1, generator=gen)
        scores = (base + spread * torch.randn(members, batch_size, num_items + 1, generator=gen)).to(device)
        scores[..., 0] = float("-inf")
        one, pairs = symmetric_kl(scores).item(), pairwise_symmetric_kl(scores).item()
        worst = max(worst, abs(one - pairs) / abs(pairs))
    return worst


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    seed_everything(0)
    data = load_dataset(args.dataset)
    split = build_split(data, 50).to(device)
    model = ModelConfig()
    methods = {name: (untrained(name, data, model, device), None) for name in REGISTRY}
    loops = {PAIRWISE: pairwise_emkd(data, split, model, device, args.batch_size)}
    ms = steps_ms_side_by_side(methods, split, args.steps, args.batch_size, rounds=args.rounds, loops=loops)
    members = methods["emkd"][0].cfg.emkd.emkd_members
    return header(data, device, args) | {
        "rounds": args.rounds,
        "num_items": data.num_items,
        "steps_ms": {name: ms[name] for name in REGISTRY},
        "over_single": {name: ms[name] / ms["single"] for name in REGISTRY},
        "emkd_kl": {
            "members": members,
            "pairwise_step_ms": ms[PAIRWISE],
            "one_pass_step_ms": ms["emkd"],
            "step_speedup": ms[PAIRWISE] / ms["emkd"],
            "max_relative_difference": kl_agreement(data.num_items, args.batch_size, members, device),
        },
    }


def arguments(p: argparse.ArgumentParser) -> None:
    """related.py's own options."""
    p.add_argument("--rounds", type=int, default=5, help="rounds the timed steps are spread over")


def table(r: dict) -> str:
    lines = [
        f"{r['dataset']} on {r['device']} ({r['machine']}, {r['threads']} threads, torch {r['torch']}, "
        f"code {r['code']}): batch {r['batch_size']}, {r['steps']} timed steps a method in {r['rounds']} rounds",
        f"{'method':<18}{'ms / step':>12}{'x Single':>10}",
    ]
    for name, ms in r["steps_ms"].items():
        lines.append(f"{name:<18}{ms:>12.1f}{r['over_single'][name]:>10.2f}")
    k = r["emkd_kl"]
    lines.append(
        f"EMKD step with the KL a pair at a time: {k['pairwise_step_ms']:.1f} ms against "
        f"{k['one_pass_step_ms']:.1f} ms in one pass over its {k['members']} members ({k['step_speedup']:.2f}x); "
        f"the two forms differ by at most {k['max_relative_difference']:.1e} (relative, float32)"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    return bench_main(argv, __doc__, "related", run, table, arguments)


if __name__ == "__main__":
    sys.exit(main())
