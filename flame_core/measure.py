"""Measuring training cost: steps timed as the engine runs them (alone, or several side by side), the
next-item loss's two implementations side by side, FLOPs of real tokens, activation memory, peak memory, and
the machine's matrix-product peak. The benchmark (bench/speed.py) and the efficiency chapter use these same
functions, so their figures mean the same thing.

FLOP counts are those of the real tokens (padding excluded): forward FLOPs of each network pass, times 3
where weights are trained (forward, input and weight gradients), times 2 for frozen modules that only pass
gradients through, times 1 for passes without autograd.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch

from flame_core.backbone import SASRecStack
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Interactions, Split
from flame_core.engine import EpochRunner, make_optimizer
from flame_core.losses import item_cross_entropy, rec_loss
from flame_core.methods import Method, build_method
from flame_core.utils import keep_freed_memory


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype=torch.float32, n: int = 2048, reps: int = 10) -> float:
    """Measured throughput of a large square matrix product: the machine's practical peak."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (not inherited through fork/exec, unlike ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pass_flops(lengths: torch.Tensor, cfg: ModelConfig, num_items: int, scores: bool) -> float:
    """Forward FLOPs of one network pass over sequences of `lengths` (real tokens only, last-query final block)."""
    D, K = cfg.hidden, cfg.layers
    n = lengths.double()
    tokens, pairs = n.sum().item(), (n * (n + 1) / 2).sum().item()
    full = (K - 1) * (24 * D * D * tokens + 4 * D * pairs)  # QKV, output, FFN per token; QK^T and AV per pair
    last = 4 * D * D * tokens + 20 * D * D * len(n) + 4 * D * tokens  # K, V of all tokens; the rest for the last
    return full + last + (2 * D * (num_items + 1) * len(n) if scores else 0.0)


def step_flops(method: Method, lengths: torch.Tensor) -> float:
    """FLOPs of one training step of `method` on sequences of `lengths` (see the module docstring).

    Networks trained side by side (Single, an ensemble's members) cost a trained pass and a scoring head
    each; FLAME's paths with split emb|enc cost LL and FL trained, LF passing gradients through the frozen
    encoder and FF without autograd, plus the separate L_rec pass; Ensemble-Guide's two paths L and F.
    """
    model, num_items = method.model_cfg, method.num_items
    one = pass_flops(lengths, model, num_items, scores=False)
    head = 2 * model.hidden * (num_items + 1) * len(lengths)
    plan = getattr(method, "plan", None)  # the module plan of a method with modular paths
    if plan is None:
        return 3 * (one + head) * method.served_networks
    rec = 3 * one if method.cfg.flame.rec_from == "separate" else 0.0
    if len(plan) == 1:  # ensemble_guide: L trained, F without autograd
        return 3 * (one + head) + one + rec
    return 3 * (2 * one + head) + 2 * one + one + rec


def untrained(
    method: str, data: Interactions, model: ModelConfig, device, seeds: tuple[int, ...] | None = None, **changes
) -> Method:
    """Method `method` with random weights, its pretrained networks (anchor, teachers) random too: cost does
    not depend on what the weights hold."""
    m = build_method(data.num_items, model, TrainConfig(method=method, progress=False, **changes), seeds).to(device)
    m.set_pretrained(
        [
            SASRecStack(1, data.num_items, spec_model, seeds=[7 + k]).to(device)
            for k, (_, spec_model, _) in enumerate(m.pretrained_specs())
        ]
    )
    return m


def random_order(split: Split, replicas: int, samples: int, seed: int = 0) -> torch.Tensor:
    """(S, samples) random training-sample indices on the split's device, one row per replica."""
    gen = torch.Generator().manual_seed(seed)
    X = split.train_inputs.shape[0]
    order = torch.stack([torch.randint(0, X, (samples,), generator=gen) for _ in range(replicas)])  # (S, samples)
    return order.to(split.train_inputs.device)


def step_ms(method: Method, split: Split, steps: int, batch_size: int, graph: bool | None = None) -> float:
    """Mean milliseconds of a training step (forward, backward, Adam) as the engine runs it (`EpochRunner`),
    after 4 warm-up steps (which capture the CUDA graph when one is used; `graph` None: the engine's choice)."""
    return steps_ms_side_by_side({"step": (method, graph)}, split, steps, batch_size, rounds=1)["step"]


def steps_ms_side_by_side(
    methods: dict[str, tuple[Method, bool | None]],
    split: Split,
    steps: int,
    batch_size: int,
    rounds: int = 5,
    loops: dict[str, Callable[[torch.Tensor], None]] | None = None,
) -> dict[str, float]:
    """Milliseconds per training step of several methods (name -> (method, graph)), timed side by side.

    Each method gets its own `EpochRunner` and 4 warm-up steps; then `rounds` rounds visit every method in
    turn for steps / rounds steps each (at least one), and each method's time is the median over the rounds
    of its mean step. A machine whose speed drifts while it measures (other programs, a shared host) then
    slows every method alike, so the ratios between them hold where one block per method would not.
    `loops` (name -> a function that trains on the batches of a (samples,) order of training-sample indices,
    `batch_size` at a time, and returns when the device is done) times code outside the library, such as a
    reference model, in the same rounds.
    """
    device, runs = split.train_inputs.device, {}
    for name, (method, graph) in methods.items():
        runner = EpochRunner(method, make_optimizer(method, device), split, batch_size, graph=graph)
        runner.run(random_order(split, method.replicas, 4 * batch_size, seed=1))  # warm-up
        if graph and device.type == "cuda" and runner.graph is None:
            raise RuntimeError(f"{name}: the CUDA graph was not captured")
        runs[name] = (runner.run, method.replicas)
    for name, loop in (loops or {}).items():
        loop(random_order(split, 1, 4 * batch_size, seed=1)[0])  # warm-up
        runs[name] = (lambda order, loop=loop: loop(order[0]), 1)
    per_round = max(1, steps // rounds)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, (run, replicas) in runs.items():
            order = random_order(split, replicas, per_round * batch_size, seed=r)
            sync(device)
            t0 = time.perf_counter()
            run(order)  # ends with the device's work done (the engine's one synchronisation an epoch)
            times[name].append(1000 * (time.perf_counter() - t0) / per_round)
    return {name: _median(ts) for name, ts in times.items()}


def score_head_ms(batch_size: int, num_items: int, hidden: int, steps: int, device) -> dict[str, float]:
    """Median milliseconds of the next-item loss, forward and backward, over a catalogue of `num_items`, two
    ways alternated in one loop: autograd through the score matrix (`rec_loss` of `SASRecStack.item_scores`,
    how the engine computed it before) and `item_cross_entropy` (how it does now). Random representations
    and table (the cost depends on the shapes only); on the CPU with freed memory kept, as the engine runs.
    """
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    gen = torch.Generator().manual_seed(0)
    net = SASRecStack(1, num_items, ModelConfig(hidden=hidden, layers=1, heads=1), seeds=[0]).to(device)
    z = torch.randn(1, batch_size, hidden, generator=gen).to(device).requires_grad_()
    target = torch.randint(1, num_items + 1, (1, batch_size), generator=gen).to(device)
    ways = {
        "autograd": lambda: rec_loss(net.item_scores(z)[0], target[0]),
        "item_cross_entropy": lambda: item_cross_entropy(z, net.item_emb, target).mean(),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for k in range(steps + 2):  # two warm-up rounds
        for name, loss in ways.items():
            sync(device)
            t0 = time.perf_counter()
            loss().backward()
            sync(device)
            if k >= 2:
                times[name].append(1000 * (time.perf_counter() - t0))
            z.grad = net.item_emb.grad = None
    return {name: _median(ts) for name, ts in times.items()}


def _median(values: list[float]) -> float:
    """The middle value (the upper one of an even count): a time the machine actually took."""
    return sorted(values)[len(values) // 2]


def activation_mb(method: Method, split: Split, batch_size: int, seed: int = 0) -> float:
    """MB of the tensors autograd saves for backward in one training step (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in method.parameters()}
    saved = {}  # storage address -> bytes, so views of one tensor count once

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    torch.manual_seed(seed)  # the same sampled paths on every call
    idx = random_order(split, 1, batch_size, seed)[0]
    method.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        method.loss((split.train_inputs[idx], split.train_targets[idx]))
    return sum(saved.values()) / 2**20
