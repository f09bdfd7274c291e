"""Speed benchmark: step times of Single and FLAME, packed vs padded, a full epoch, evaluation, memory.

Everything is measured on one machine in one run, so the ratios compare like with like:

    python bench/speed.py                                 # amazon-toys from $FLAME_DATA_DIR, CPU
    python bench/speed.py --dataset ml-100k --steps 10
    python bench/speed.py --device cuda --amp --compile   # on a GPU

It prints a table and writes the same figures as JSON (``--json``, default bench/results/speed-DATASET-DEVICE.json)
for the efficiency chapter. FLOP counts are those of the real tokens (padding excluded): forward FLOPs of each
network pass, times 3 where weights are trained (forward, input and weight gradients), times 2 for frozen
modules that only pass gradients through, times 1 for passes without autograd.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from flame_core.backbone import SASRecStack
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import build_split, load_dataset
from flame_core.engine import _run_epoch, evaluate
from flame_core.methods import build_method, needs_anchor
from flame_core.utils import atomic_json, resolve_device, seed_everything


def matmul_peak_gflops(device: torch.device, dtype=torch.float32, n: int = 2048, reps: int = 10) -> float:
    """Measured throughput of a large square matrix product: the machine's practical peak."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (not inherited through fork/exec, unlike ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_flops(lengths: torch.Tensor, cfg: ModelConfig, num_items: int, scores: bool) -> float:
    """Forward FLOPs of one network pass over sequences of `lengths` (real tokens only, last-query final block)."""
    D, K = cfg.hidden, cfg.layers
    n = lengths.double()
    tokens, pairs = n.sum().item(), (n * (n + 1) / 2).sum().item()
    full = (K - 1) * (24 * D * D * tokens + 4 * D * pairs)  # QKV, output, FFN per token; QK^T and AV per pair
    last = 4 * D * D * tokens + 20 * D * D * len(n) + 4 * D * tokens  # K, V of all tokens; the rest for the last
    return full + last + (2 * D * (num_items + 1) * len(n) if scores else 0.0)


def step_flops(method: str, cfg: TrainConfig, lengths, model: ModelConfig, num_items: int) -> float:
    """FLOPs of one training step (see the module docstring for the multipliers)."""
    one = pass_flops(lengths, model, num_items, scores=False)
    head = 2 * model.hidden * (num_items + 1) * len(lengths)
    if method == "single":
        return 3 * (one + head)
    paths = 4 if cfg.split == "emb|enc" else 2  # LL, FL trained; LF passes gradients through F; FF without
    rec = 3 * one if cfg.rec_from == "separate" else 0.0
    if paths == 2:  # ensemble_guide: L trained, F without autograd
        return 3 * (one + head) + one + rec
    return 3 * (2 * one + head) + 2 * one + one + rec


def time_steps(method, split, steps: int, batch_size: int, amp: bool, device) -> float:
    """Mean milliseconds of a training step (forward, backward, Adam) over `steps` random batches."""
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    loss_fn = method.loss
    method.train()

    def step():
        idx = torch.randint(0, split.train_inputs.shape[0], (batch_size,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext():
            loss, _ = loss_fn((split.train_inputs[idx], split.train_targets[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return 1000 * (time.perf_counter() - t0) / steps


def make(method: str, data, model: ModelConfig, device, compile_: bool, **changes):
    cfg = TrainConfig(method=method, progress=False, **changes)
    m = build_method(data.num_items, model, cfg).to(device)
    if needs_anchor(method):
        m.set_frozen(SASRecStack(1, data.num_items, model, seeds=[7]).to(device))  # speed does not need a trained one
    if compile_ and not m.cfg.packed:  # packed batches have data-dependent shapes: compiling them recompiles
        m.loss = torch.compile(m.loss)  # at nearly every step (measured: no end within 15 minutes on CPU)
    return m


def epoch_child(args: argparse.Namespace, queue) -> None:
    """One full FLAME epoch in a fresh process, so its peak RSS is the epoch's own."""
    torch.set_num_threads(args.threads) if args.threads else None
    device = resolve_device(args.device)
    seed_everything(0)
    data = load_dataset(args.dataset)
    split = build_split(data, 50).to(device)
    model = ModelConfig()
    method = make("flame", data, model, device, False)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    t0 = time.perf_counter()
    _run_epoch(method, opt, split, torch.Generator().manual_seed(0), 256, "bench epoch", False)
    _sync(device)
    seconds = time.perf_counter() - t0
    queue.put({"epoch_seconds": seconds, "epoch_peak_rss_mb": peak_rss_mb()})


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    seed_everything(0)
    data = load_dataset(args.dataset)
    split = build_split(data, 50).to(device)
    model = ModelConfig()
    lengths = (split.train_inputs[:4096] > 0).sum(1).cpu()  # a sample of lengths for the FLOP count per batch
    lengths = lengths[torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0))[: args.batch_size]]
    out = {"dataset": data.name, "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "batch_size": args.batch_size, "steps": args.steps,
           "amp": args.amp, "compile": args.compile, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "training_samples": split.train_inputs.shape[0]}  # fmt: skip
    out["matmul_peak_gflops"] = matmul_peak_gflops(device, torch.bfloat16 if args.amp else torch.float32)
    variants = {"single": ("single", {}), "flame": ("flame", {}), "flame_rec_path": ("flame", {"rec_from": "path"})}
    rows = {}
    for name, (method, changes) in variants.items():
        row = {}
        for packed in (True, False):
            m = make(method, data, model, device, args.compile, packed=packed, **changes)
            row["packed_ms" if packed else "padded_ms"] = time_steps(m, split, args.steps, args.batch_size, args.amp, device)
        flops = step_flops(method, m.cfg, lengths, model, data.num_items)
        row["gflops_per_step"] = flops / 1e9
        row["achieved_gflops"] = flops / 1e9 / (row["packed_ms"] / 1000)
        rows[name] = row
    for row in rows.values():
        row["ratio_to_single"] = row["packed_ms"] / rows["single"]["packed_ms"]
        row["packed_speedup"] = row["padded_ms"] / row["packed_ms"]
    out["steps_ms"] = rows
    m = make("single", data, model, device, False)
    evaluate(m, split, "test")  # warm-up
    t0 = time.perf_counter()
    evaluate(m, split, "test")
    _sync(device)
    out["eval_seconds_all_users"] = time.perf_counter() - t0
    out["eval_users"] = split.test_targets.shape[0]
    if not args.no_epoch:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=epoch_child, args=(args, queue))
        child.start()
        out.update(queue.get())
        child.join()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def table(r: dict) -> str:
    lines = [f"speed benchmark: {r['dataset']} ({r['training_samples']:,} training samples), device {r['device']}, "
             f"torch {r['torch']}, {r['threads']} threads, batch {r['batch_size']}, {r['steps']} timed steps, "
             f"amp={r['amp']} compile={r['compile']}, {r['date']}",
             f"{'step':16s} {'packed ms':>10s} {'padded ms':>10s} {'packed x':>9s} {'vs single':>9s} {'GFLOP/s':>8s}"]  # fmt: skip
    for name, row in r["steps_ms"].items():
        lines.append(f"{name:16s} {row['packed_ms']:10.1f} {row['padded_ms']:10.1f} {row['packed_speedup']:9.2f} "
                     f"{row['ratio_to_single']:9.2f} {row['achieved_gflops']:8.1f}")  # fmt: skip
    lines.append(f"matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s; FLAME step reaches "
                 f"{100 * r['steps_ms']['flame']['achieved_gflops'] / r['matmul_peak_gflops']:.1f}% of it")  # fmt: skip
    lines.append(f"evaluation of all {r['eval_users']:,} users (test split): {r['eval_seconds_all_users']:.2f} s")
    if "epoch_seconds" in r:
        lines.append(f"one full FLAME epoch: {r['epoch_seconds']:.1f} s, peak RSS {r['epoch_peak_rss_mb']:.0f} MB")
    lines.append(f"peak RSS of the benchmark process: {r['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="amazon-toys")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 3 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (meant for cuda)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training loss of the padded variants (static shapes; packed ones stay eager)")
    p.add_argument("--no-epoch", action="store_true", help="skip the full-epoch measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="where to write the JSON result")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(table(result))
    path = Path(args.json or Path(__file__).parent / "results" / f"speed-{result['dataset']}-{args.device}.json")
    atomic_json(path, result)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
