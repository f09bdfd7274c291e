"""Speed benchmark: step times of Single and FLAME (packed, padded, CUDA graph), the next-item loss two ways,
stacked seeds, a naive reference SASRec, a full epoch with validation, evaluation, memory.

Everything is measured on one machine in one run, so the ratios compare like with like:

    python bench/speed.py                                 # amazon-toys from $FLAME_DATA_DIR, CPU
    python bench/speed.py --dataset ml-100k --steps 10
    python bench/speed.py --device cuda                   # on a GPU: adds the captured (CUDA graph) step

Steps are timed through the engine's own `EpochRunner` (the batch gathered on the device, the logged values
summed there, one synchronisation at the end), eagerly with the packed and the padded layout and, on CUDA,
as a replayed CUDA graph. The variants are timed side by side (`measure.steps_ms_side_by_side`: five
rounds that each run every variant in turn, the median round per variant), so that a machine whose speed
drifts during the run slows them alike and their ratios hold. Stacked seeds: S = 3 replicas of a method in
one stacked model against S = 1 (side by side too), in the layout the engine uses by default (packed on CPU,
graph on CUDA). Seeds in parallel processes (CPU): three seeds' steps as the sweep runs them with
``--parallel W`` (W processes of cores/W threads at once, at least one; with W = 2 the third seed after
the first two) against one process with every core training the seeds one after another, the wall time of
the whole, alternated over rounds.
The naive reference (`bench/naive.py`) is SASRec written with `torch.nn` blocks, the way a user would, timed
on random batches of the same split in the same rounds as the engine's variants.

It prints a table and writes the same figures as JSON (``--json``, default bench/results/speed-DATASET-DEVICE.json)
for the efficiency chapter. The measuring functions (timed steps, FLOPs of real tokens, peak memory, the matmul
peak) are the library's (`flame_core.measure`), shared with that chapter.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch

from flame_core.config import ModelConfig
from flame_core.data import build_split, load_dataset
from flame_core.engine import EpochRunner, evaluate_replicas, make_optimizer
from flame_core.measure import (
    matmul_peak_gflops,
    peak_rss_mb,
    random_order,
    score_head_ms,
    step_flops,
    step_ms,
    steps_ms_side_by_side,
    sync,
    untrained,
)
from flame_core.utils import (
    atomic_json,
    git_revision,
    machine_name,
    resolve_device,
    seed_everything,
    threads_per_process,
    usable_cores,
)

try:
    from bench.naive import naive_training
except ImportError:  # run as a script: bench/ is on sys.path
    from naive import naive_training

PARALLEL_METHODS = ("single", "flame")
WAIT_S = 900  # a worker that died (out of memory, say) breaks the barrier instead of hanging the benchmark


def seeds_child(args: argparse.Namespace, threads: int, seeds: int, start, queue) -> None:
    """One worker of the parallel-seeds measurement: `seeds` seeds' worth of steps of each method in turn,
    starting with its siblings at the barrier `start`; puts (method, finish time) for each."""
    torch.set_num_threads(threads)
    seed_everything(0)
    data = load_dataset(args.dataset)
    split = build_split(data, 50)
    runners = {}
    for method in PARALLEL_METHODS:
        m = untrained(method, data, ModelConfig(), torch.device("cpu"))
        runners[method] = EpochRunner(m, make_optimizer(m, torch.device("cpu")), split, args.batch_size)
        runners[method].run(random_order(split, 1, 4 * args.batch_size, seed=1))  # warm-up
    for method, runner in runners.items():
        orders = [random_order(split, 1, args.steps * args.batch_size, seed=s) for s in range(seeds)]
        start.wait(WAIT_S)
        for order in orders:
            runner.run(order)
        queue.put((method, time.perf_counter()))


def seeds_wall_ms(args: argparse.Namespace, workers: int, seeds: int = 3) -> dict[str, float]:
    """Milliseconds per seed-step of `seeds` seeds trained by `workers` processes of cores/workers threads at
    once (worker w takes seeds w, w + workers, ...), wall time from the common start to the last finish."""
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(workers + 1), ctx.Queue()
    threads = threads_per_process(workers)
    shares = [len(range(w, seeds, workers)) for w in range(workers)]
    children = [ctx.Process(target=seeds_child, args=(args, threads, n, start, queue)) for n in shares]
    for child in children:
        child.start()
    out = {}
    for method in PARALLEL_METHODS:
        start.wait(WAIT_S)
        t0 = time.perf_counter()
        ends = [queue.get(timeout=WAIT_S) for _ in children]
        assert {m for m, _ in ends} == {method}
        out[method] = (max(t for _, t in ends) - t0) * 1000 / (seeds * args.steps)
    for child in children:
        child.join()
    return out


def parallel_seeds(args: argparse.Namespace, seeds: int = 3) -> dict:
    """Three seeds in W parallel processes (each W of `args.seed_workers`) against one after another in one
    process with every core, alternated over `args.seed_rounds` rounds, the median round of each."""
    runs = {w: [] for w in (1, *args.seed_workers)}
    for _ in range(args.seed_rounds):
        for w, times in runs.items():
            times.append(seeds_wall_ms(args, w, seeds))
    ms = {w: {m: statistics.median(r[m] for r in times) for m in PARALLEL_METHODS} for w, times in runs.items()}
    side_by_side = [
        {
            "workers": w,
            "threads_per_worker": threads_per_process(w),
            **{m: {"ms": ms[w][m], "over_separate": ms[w][m] / ms[1][m]} for m in PARALLEL_METHODS},
        }
        for w in args.seed_workers
    ]
    return {"seeds": seeds, "separate_ms": ms[1], "side_by_side": side_by_side}


def epoch_child(args: argparse.Namespace, replicas: int, queue) -> None:
    """Full FLAME epochs of `replicas` stacked seeds in a fresh process (its peak RSS is the epochs' own):
    on CUDA a first epoch (with the graph's capture) and a second one, then the validation pass."""
    torch.set_num_threads(args.threads) if args.threads else None
    device = resolve_device(args.device)
    seed_everything(0)
    data = load_dataset(args.dataset)
    split = build_split(data, 50).to(device)
    seeds = tuple(range(42, 42 + replicas)) if replicas > 1 else None
    method = untrained("flame", data, ModelConfig(), device, seeds=seeds)
    runner = EpochRunner(method, make_optimizer(method, device), split, args.batch_size)
    gens = [torch.Generator().manual_seed(s) for s in method.seeds]
    seconds = []
    for epoch in range(1, 3 if device.type == "cuda" else 2):
        t0 = time.perf_counter()
        method.start_epoch(epoch)
        order = torch.stack([torch.randperm(split.train_inputs.shape[0], generator=g) for g in gens]).to(device)
        runner.run(order)
        seconds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    evaluate_replicas(method, split, "valid")
    valid = time.perf_counter() - t0
    queue.put(
        {
            "epoch_seconds": seconds[-1],
            "first_epoch_seconds": seconds[0],
            "valid_seconds": valid,
            "epoch_with_valid_seconds": seconds[-1] + valid,
            "graph": runner.graph is not None,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def run_epoch_child(args, replicas: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=epoch_child, args=(args, replicas, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    seed_everything(0)
    data = load_dataset(args.dataset)
    split = build_split(data, 50).to(device)
    model = ModelConfig()
    lengths = (split.train_inputs[:4096] > 0).sum(1).cpu()  # a sample of lengths for the FLOP count per batch
    lengths = lengths[torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0))[: args.batch_size]]
    out = header(data, device, args) | {
        "amp": False,
        "compile": args.compile,
        "training_samples": split.train_inputs.shape[0],
    }
    out["matmul_peak_gflops"] = matmul_peak_gflops(device)
    variants = {"single": ("single", {}), "flame": ("flame", {}), "flame_rec_path": ("flame", {"rec_from": "path"})}
    layouts = [("packed_ms", True, False), ("padded_ms", False, False)] + ([("graph_ms", False, True)] if cuda else [])
    timed = {
        (name, key): (untrained(method, data, model, device, packed=packed, **changes), graph)
        for name, (method, changes) in variants.items()
        for key, packed, graph in layouts
    }
    naive = {"naive": naive_training(data.num_items, split.train_inputs, split.train_targets, args.batch_size)}
    ms = steps_ms_side_by_side(timed, split, args.steps, args.batch_size, loops=naive)  # all in each round
    rows = {}
    for name, (method, changes) in variants.items():
        row = {key: ms[(name, key)] for key, _, _ in layouts}
        m = timed[(name, layouts[0][0])][0]
        if args.compile:  # torch.compile of the loss (reduce-overhead on CUDA: graphs of forward and backward)
            m = untrained(method, data, model, device, packed=False, **changes)
            m.loss = torch.compile(m.loss, mode="reduce-overhead" if cuda else "default")
            row["compiled_padded_ms"] = step_ms(m, split, args.steps, args.batch_size, False)
        row["best_ms"] = min(row.values())
        flops = step_flops(m, lengths)
        row["gflops_per_step"] = flops / 1e9
        row["achieved_gflops"] = flops / 1e9 / (row["best_ms"] / 1000)
        rows[name] = row
    del timed
    for row in rows.values():
        row["ratio_to_single"] = row["best_ms"] / rows["single"]["best_ms"]
        row["packed_speedup"] = row["padded_ms"] / row["packed_ms"]
        if "graph_ms" in row:
            row["graph_speedup"] = row["padded_ms"] / row["graph_ms"]
    out["steps_ms"] = rows
    head = score_head_ms(args.batch_size, data.num_items, model.hidden, max(args.steps, 10), device)
    out["score_head_ms"] = {**head, "autograd_over_fused": head["autograd"] / head["item_cross_entropy"]}
    out["naive_sasrec_ms"] = ms["naive"]
    out["naive_over_single"] = out["naive_sasrec_ms"] / rows["single"]["best_ms"]
    out["stacked"] = {"layout": "graph" if cuda else "packed", "replicas": 3}
    stacked = {
        (method, n): (untrained(method, data, model, device, seeds=seeds), None)
        for method in ("single", "flame")
        for n, seeds in ((1, None), (3, (42, 43, 44)))
    }
    ms = steps_ms_side_by_side(stacked, split, args.steps, args.batch_size)
    del stacked
    for method in ("single", "flame"):
        one, three = ms[(method, 1)], ms[(method, 3)]
        out["stacked"][method] = {
            "x1_ms": one,
            "x3_ms": three,
            "x3_over_x1": three / one,
            "x3_over_3_x1": three / (3 * one),
        }
    if not cuda and usable_cores() > 1 and args.seed_rounds:
        out["parallel_seeds"] = parallel_seeds(args)
    m = untrained("single", data, model, device)
    evaluate_replicas(m, split, "test")  # warm-up
    t0 = time.perf_counter()
    evaluate_replicas(m, split, "test")
    sync(device)
    out["eval_seconds_all_users"] = time.perf_counter() - t0
    out["eval_users"] = split.test_targets.shape[0]
    if not args.no_epoch:
        one = run_epoch_child(args, 1)
        keys = ("epoch_seconds", "first_epoch_seconds", "valid_seconds", "epoch_with_valid_seconds")
        out.update({k: one[k] for k in keys})
        out["epoch_peak_rss_mb"], out["epoch_graph"] = one["peak_rss_mb"], one["graph"]
        three = run_epoch_child(args, 3)
        out["stacked_epoch"] = {
            "replicas": 3,
            **three,
            "x3_over_x1": three["epoch_seconds"] / one["epoch_seconds"],
            "x3_over_3_x1": three["epoch_seconds"] / (3 * one["epoch_seconds"]),
        }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def table(r: dict) -> str:
    cols = [c for c in ("packed_ms", "padded_ms", "graph_ms", "compiled_padded_ms") if c in r["steps_ms"]["single"]]
    lines = [
        f"speed benchmark: {r['dataset']} ({r['training_samples']:,} training samples), device {r['device']} "
        f"({r['machine']}), torch {r['torch']}, {r['threads']} threads, batch {r['batch_size']}, "
        f"{r['steps']} timed steps, {r['date']}, code {r.get('code', 'unnamed')}",
        f"{'step (ms)':16s} " + " ".join(f"{c[:-3]:>9s}" for c in cols) + f" {'vs single':>9s} {'GFLOP/s':>8s}",
    ]
    for name, row in r["steps_ms"].items():
        lines.append(
            f"{name:16s} "
            + " ".join(f"{row[c]:9.2f}" for c in cols)
            + f" {row['ratio_to_single']:9.2f} {row['achieved_gflops']:8.1f}"
        )
    lines.append(
        f"{'naive SASRec':16s} {r['naive_sasrec_ms']:9.2f}  (torch.nn, padded, eager): "
        f"{r['naive_over_single']:.2f}x our fastest Single step"
    )
    lines.append(
        f"matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s; FLAME step reaches "
        f"{100 * r['steps_ms']['flame']['achieved_gflops'] / r['matmul_peak_gflops']:.2f}% of it"
    )
    if "score_head_ms" in r:
        h = r["score_head_ms"]
        lines.append(
            f"next-item loss over all items, forward and backward: autograd through the scores {h['autograd']:.2f} ms, "
            f"item_cross_entropy {h['item_cross_entropy']:.2f} ms ({h['autograd_over_fused']:.2f}x)"
        )
    st = r["stacked"]
    for method in ("single", "flame"):
        row = st[method]
        lines.append(
            f"stacked seeds, {method} ({st['layout']}): 1 seed {row['x1_ms']:.2f} ms, "
            f"3 seeds {row['x3_ms']:.2f} ms per step = {row['x3_over_x1']:.2f}x one seed, "
            f"{row['x3_over_3_x1']:.2f}x three separate"
        )
    if "parallel_seeds" in r:
        ps = r["parallel_seeds"]
        lines.append(
            f"{ps['seeds']} seeds one after another in one process: "
            + ", ".join(f"{m} {ps['separate_ms'][m]:.2f} ms per seed-step" for m in PARALLEL_METHODS)
        )
        for row in ps["side_by_side"]:
            lines.append(
                f"{ps['seeds']} seeds in {row['workers']} processes side by side, {row['threads_per_worker']} "
                "thread(s) each: "
                + ", ".join(f"{m} {row[m]['ms']:.2f} ms ({row[m]['over_separate']:.2f}x)" for m in PARALLEL_METHODS)
            )
    lines.append(f"evaluation of all {r['eval_users']:,} users (test split): {r['eval_seconds_all_users']:.2f} s")
    if "epoch_seconds" in r:
        lines.append(
            f"one full FLAME epoch: {r['epoch_seconds']:.2f} s + validation {r['valid_seconds']:.2f} s = "
            f"{r['epoch_with_valid_seconds']:.2f} s (first epoch {r['first_epoch_seconds']:.2f} s), "
            f"peak RSS {r['epoch_peak_rss_mb']:.0f} MB"
        )
        se = r["stacked_epoch"]
        lines.append(
            f"three stacked FLAME seeds: epoch {se['epoch_seconds']:.2f} s = {se['x3_over_x1']:.2f}x "
            "one seed's, "
            f"{se['x3_over_3_x1']:.2f}x three separate; peak RSS {se['peak_rss_mb']:.0f} MB"
        )
    lines.append(f"peak RSS of the benchmark process: {r['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def header(data, device: torch.device, args: argparse.Namespace) -> dict:
    """What every benchmark result starts with: the data, the machine, the settings, the date and the code."""
    return {
        "dataset": data.name,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": machine_name(device),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code": git_revision(),  # the commit of flame_core that ran, as records name it
    }


def bench_main(argv, doc: str, name: str, run, table, arguments=lambda p: None) -> int:
    """The command line every benchmark shares: parse the common options and the script's own (`arguments`),
    run, print the table, write the JSON (default bench/results/NAME-DATASET-DEVICE.json) atomically."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--dataset", default="amazon-toys")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 4 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="where to write the JSON result")
    arguments(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(table(result))
    path = Path(args.json or Path(__file__).parent / "results" / f"{name}-{result['dataset']}-{args.device}.json")
    atomic_json(path, result)
    print(f"written: {path}")
    return 0


def arguments(p: argparse.ArgumentParser) -> None:
    """speed.py's own options."""
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of the padded variants' loss (static shapes), eager steps around it",
    )
    p.add_argument("--no-epoch", action="store_true", help="skip the full-epoch measurement")
    p.add_argument(
        "--seed-rounds",
        type=int,
        default=3,
        help="rounds of the parallel-seeds measurement on a CPU (0 skips it; default: 3)",
    )
    p.add_argument(
        "--seed-workers",
        type=lambda text: tuple(int(w) for w in text.split(",")),
        default=(2, 3),
        metavar="W,W,...",
        help="processes side by side in the parallel-seeds measurement (default: 2,3)",
    )


def main(argv=None) -> int:
    return bench_main(argv, __doc__, "speed", run, table, arguments)


if __name__ == "__main__":
    sys.exit(main())
