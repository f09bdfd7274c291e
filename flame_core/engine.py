"""The training engine: epochs of shuffled batches, validation every epoch, early stopping, one test.

Protocol (README, "The protocol"): model selection on validation NDCG@20 only, patience in epochs, the best
weights restored at the end and the test split evaluated once with them. A run directory holds

    config.json      the model and training configuration
    history.jsonl    one line per epoch: losses, lambda, validation metrics, seconds (wall, and this
                     process's CPU seconds, which other work on the machine does not inflate)
    checkpoint.pt    everything needed to resume after the last finished epoch (weights, optimiser, RNGs);
                     while training, the one it replaced stays beside it as checkpoint.prev.pt
    results.json     the final record: selected epoch, validation and test metrics, cost, the method's
                     own `report` (e.g. CANet's routing and FLOPs) and the run's `sessions`: one per
                     process that trained it (first epoch, git revision, machine, start time)

Stacked seeds (`train_stacked`): a method with S replicas trains them in one process, each on its own
shuffled batches (its own seeded generator), with its own early stopping and selected weights; the run goes
on until every replica has stopped or the budget ends (a stopped replica still computes, its selection is
final). The stacked checkpoint lives in its own folder; each replica gets a run directory of the usual
form. With dropout off a stacked run equals S separate runs.

How a step runs (`EpochRunner`): forward, backward and Adam, with the batch gathered on the device and the
logged values summed on the device, so an epoch needs no host synchronisation until its end, where the
sums are read and a non-finite loss stops the run (naming the first bad step). On CUDA, for a method that
is ``graph_safe`` and a padded layout, the whole step is captured once as a CUDA graph (after two eager
warm-up steps) and replayed for every full batch; the epoch's last, shorter batch runs eagerly, so its loss
is exact. Adam keeps its step counter on the device (``capturable``) on CUDA. Methods that draw paths
afresh each step (``--num-paths K`` with uniform sampling) or group a batch by data (CANet) run eagerly.

The method's hooks: `prepare(split)` runs once before the first epoch (also on resume), and
`epoch_indices(epoch, ...)` gives each epoch's samples (default: all of them, shuffled with the seeded
generator, so curricula like ckd's plug in without touching the loop).

Every file is written atomically; ``resume=True`` continues from checkpoint.pt (verified on load; a damaged
one falls back to checkpoint.prev.pt, one epoch older: `flame_core.files`) and, on CPU with the same seed,
reproduces the uninterrupted run to floating-point rounding (a CPU reduction may sum in another order
when its tensors lie at other addresses). A non-finite loss stops the run with a clear message and leaves
the last good checkpoint in place.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from flame_core.data import Split
from flame_core.files import CHECKPOINT, PREVIOUS, FileError, first_line, load_checkpoint, save_checkpoint
from flame_core.methods import Method
from flame_core.metrics import encode_ranks, evaluate_views
from flame_core.utils import (
    atomic_json,
    atomic_torch_save,
    atomic_write,
    git_revision,
    keep_freed_memory,
    machine_fingerprint,
    seed_everything,
)

SELECT_KEY = "NDCG@20"
WARMUP_STEPS = 2  # eager steps before a CUDA graph is captured (Adam's state, library handles)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@torch.no_grad()
def evaluate_replicas(
    method: Method, split: Split, which: str, batch_size: int = 1024, members: bool = True
) -> list[dict]:
    """Full-ranking metrics of each replica of `method` on split "valid" or "test", from one pass over the
    users; with `members`, each member's NDCG@20 too (key ``member{k}/NDCG@20``)."""
    return _evaluate(method, split, which, batch_size, members)[0]


def _evaluate(method: Method, split: Split, which: str, batch_size: int, members: bool) -> tuple[list[dict], Tensor]:
    """`evaluate_replicas`, and the served scores' per-user ranks of each replica (S, U) on the CPU."""
    was_training = method.training
    method.eval()
    inputs, targets, history = split.inputs(which)
    names = method.eval_view_names(members)
    each, ranks = evaluate_views(
        lambda seq: method.eval_views(seq, members).flatten(0, 1), inputs, targets, history, batch_size
    )
    method.train(was_training)
    V, out = len(names), []
    for s in range(method.replicas):
        metrics = dict(each[s * V])
        metrics.update({f"{name}/{SELECT_KEY}": each[s * V + v][SELECT_KEY] for v, name in enumerate(names) if v})
        out.append(metrics)
    return out, ranks[::V]  # (S, U): each replica's served view


def evaluate(method: Method, split: Split, which: str, batch_size: int = 1024, members: bool = True) -> dict:
    """`evaluate_replicas` of a method with one replica."""
    if method.replicas != 1:
        raise ValueError(f"evaluate: the method holds {method.replicas} stacked replicas; use evaluate_replicas")
    return evaluate_replicas(method, split, which, batch_size, members)[0]


def make_optimizer(method: Method, device: torch.device) -> torch.optim.Adam:
    """Adam over the trainable parameters, updating them all in one multi-tensor pass (`foreach`, torch's
    default on CUDA only; on the CPU it gives the same values as the per-tensor loop at a third of the time);
    on CUDA with its state on the device, so a graph can capture it."""
    params = [p for p in method.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=method.cfg.lr, capturable=device.type == "cuda", foreach=True)


class EpochRunner:
    """The training steps of an epoch, eager or (on CUDA) as a captured CUDA graph; see the module docstring.

    `graph=None` decides by the device, ``cfg.cuda_graph``, the method's ``graph_safe`` and its layout.
    """

    def __init__(
        self, method: Method, opt: torch.optim.Optimizer, split: Split, batch_size: int, graph: bool | None = None
    ):
        self.method, self.opt, self.split, self.batch_size = method, opt, split, batch_size
        device = split.train_targets.device
        if device.type == "cpu":
            keep_freed_memory()  # a step's freed tensors are reused, not faulted in afresh
        if graph is None:
            graph = method.cfg.cuda_graph and method.graph_safe and not method.packed(device)
        self.use_graph = bool(graph) and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.idx: Tensor | None = None  # the captured step's sample indices, (B,) or (S, B)
        self.warm = 0
        self.acc: dict[str, Tensor] = {}  # per-replica sums (S,) of the logged values; "_steps", "_bad_*"

    def _step(self, idx: Tensor) -> None:
        """Forward, backward and Adam on the samples `idx`; the logged values are added on the device."""
        loss, logs = self.method.loss((self.split.train_inputs[idx], self.split.train_targets[idx]))
        loss = loss.reshape(-1)  # (S,)
        loss.sum().backward()
        self.opt.step()
        logs = {"loss": loss.detach(), **{k: v.reshape(-1) for k, v in logs.items()}}  # (S,) each
        if not self.acc:
            self.acc = {k: torch.zeros_like(v) for k, v in logs.items()}
            self.acc.update(
                _steps=torch.zeros_like(loss[:1]), _bad_step=torch.zeros_like(loss), _bad_value=torch.zeros_like(loss)
            )
        for key, value in logs.items():
            self.acc[key].add_(value)
        steps = self.acc["_steps"].add_(1)
        first_bad = ~torch.isfinite(logs["loss"]) & (self.acc["_bad_step"] == 0)  # (S,)
        self.acc["_bad_step"].copy_(torch.where(first_bad, steps, self.acc["_bad_step"]))
        self.acc["_bad_value"].copy_(torch.where(first_bad, logs["loss"], self.acc["_bad_value"]))

    def _eager_step(self, idx: Tensor) -> None:
        self.opt.zero_grad(set_to_none=self.graph is None)  # after capture the graph owns the gradients
        self._step(idx)

    def _graph_step(self, idx: Tensor) -> None:
        if self.graph is None:
            if self.warm < WARMUP_STEPS:  # real steps, on a side stream as capture requires
                self.warm += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._eager_step(idx)
                torch.cuda.current_stream().wait_stream(side)
                return
            self.idx = idx.clone()
            self.opt.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):  # records the step; the replay below runs it
                    self._step(self.idx)
            except RuntimeError as err:  # nothing ran: say why and go on eagerly
                warnings.warn(
                    f"CUDA graph capture of the training step failed ({err}); the steps run eagerly", stacklevel=2
                )
                self.graph, self.use_graph = None, False
                self._eager_step(idx)
                return
        self.idx.copy_(idx)
        self.graph.replay()

    def run(self, order: Tensor, desc: str = "", progress: bool = False) -> dict[str, list[float]]:
        """One pass over `order` (S, X') (each replica's samples, on the device) in batches of batch_size;
        returns each logged value's per-replica mean over the steps. Raises TrainingDiverged when a loss was
        not finite."""
        for value in self.acc.values():
            value.zero_()
        B, single = self.batch_size, self.method.replicas == 1
        for start in tqdm(range(0, order.shape[1], B), desc=desc, leave=False, disable=not progress):
            idx = order[0, start : start + B] if single else order[:, start : start + B]  # (B,) or (S, B)
            if self.use_graph and idx.shape[-1] == B:
                self._graph_step(idx)
            else:
                self._eager_step(idx)
        sums = {k: v.tolist() for k, v in self.acc.items()}  # the epoch's one synchronisation
        steps, bad = sums.pop("_steps")[0], sums.pop("_bad_step")
        bad_value = sums.pop("_bad_value")
        for s, step in enumerate(bad):
            if step:
                who = f", seed {self.method.seeds[s]}" if not single else ""
                raise TrainingDiverged(f"{desc}{who}, step {int(step)}: the loss is {bad_value[s]}")
        return {k: [v / steps for v in values] for k, values in sums.items()}


def _rng_state(gens: list[torch.Generator]) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": [g.get_state() for g in gens]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gens: list[torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for g, g_state in zip(gens, state["shuffle"]):
        g.set_state(g_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(method: Method, state: dict, path: Path) -> None:
    """Load a checkpoint's weights; weights of other settings (sizes, method) raise FileError naming the file."""
    try:
        method.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        raise FileError(
            f"{path}: weights of other settings than this run's ({first_line(err)}); resume with the "
            "settings that wrote it, or start afresh with --overwrite"
        ) from None


def selected_weights(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[dict, int]:
    """The selected weights of a finished run directory (one replica's) and the epoch they come from."""
    ckpt = load_checkpoint(run_dir, device, keys=("best_weights", "state"), log=lambda s: None)
    if ckpt is None:
        raise FileError(f"{Path(run_dir) / CHECKPOINT}: no such file (expected the selected weights of a run)")
    return ckpt["best_weights"][0], ckpt["state"]["replicas"][0]["best_epoch"]


def train(
    method: Method,
    split: Split,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[list[dict]], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train `method` (one replica) on `split` (both on the same device) and return the results record.

    `out_dir` receives config.json, history.jsonl, checkpoint.pt and results.json (None: nothing is
    written and nothing can be resumed). `on_epoch(rows)` is called after each epoch's checkpoint with the
    epoch's history rows (one per replica still training).
    """
    if method.replicas != 1:
        raise ValueError(f"train: the method holds {method.replicas} stacked replicas; use train_stacked")
    out = Path(out_dir) if out_dir is not None else None
    return _train(method, split, ckpt_dir=out, dirs=[out], resume=resume, on_epoch=on_epoch, log=log)[0]


def train_stacked(
    method: Method,
    split: Split,
    stack_dir: str | Path,
    run_dirs: list[str | Path],
    resume: bool = False,
    on_epoch: Callable[[list[dict]], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train the S replicas of a stacked method; returns one results record per replica (seed order).

    `stack_dir` holds the stacked run's config.json and checkpoint.pt (what `resume` continues from);
    `run_dirs` (S folders) each get a replica's config.json and history.jsonl as epochs finish and, at the
    end, its results.json and a checkpoint.pt with its selected weights.
    """
    if len(run_dirs) != method.replicas:
        raise ValueError(f"train_stacked: {method.replicas} replicas need as many run directories, got {len(run_dirs)}")
    dirs = [Path(d) for d in run_dirs]
    return _train(method, split, ckpt_dir=Path(stack_dir), dirs=dirs, resume=resume, on_epoch=on_epoch, log=log)


def _train(
    method: Method,
    split: Split,
    ckpt_dir: Path | None,
    dirs: list[Path | None],
    resume: bool,
    on_epoch: Callable[[list[dict]], None] | None,
    log: Callable[[str], None],
) -> list[dict]:
    cfg, S, seeds = method.cfg, method.replicas, method.seeds
    ckpt_path = ckpt_dir / CHECKPOINT if ckpt_dir else None
    opt = make_optimizer(method, split.train_targets.device)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    reps = [
        {"best": float("-inf"), "best_epoch": 0, "bad": 0, "history": [], "seconds": 0.0, "stopped": False}
        for _ in range(S)
    ]
    best, start = [method.replica_state(s) for s in range(S)], 0
    ckpt = None
    if resume and ckpt_dir is not None:
        ckpt = load_checkpoint(ckpt_dir, split.train_targets.device, keys=("method", "best_weights", "state"), log=log)
        if ckpt is not None and "optimizer" not in ckpt:
            raise ValueError(
                f"{ckpt_path}: the selected weights of a replica trained stacked; resume the stacked "
                "run (the same --seeds) instead"
            )
    if ckpt is not None:
        load_weights(method, ckpt["method"], ckpt_path)
        opt.load_state_dict(ckpt["optimizer"])
        best, reps, start = ckpt["best_weights"], ckpt["state"]["replicas"], ckpt["state"]["epoch"]
        _set_rng_state(ckpt["rng"], gens)
        log(f"resumed from {ckpt_dir} after epoch {start}")
    else:
        seed_everything(seeds[0])
    _log_session(reps, start, split.train_targets.device)
    _write_configs(method, ckpt_dir, dirs)
    method.prepare(split)
    runner = EpochRunner(method, opt, split, cfg.batch_size)
    num_samples, device = split.train_inputs.shape[0], split.train_inputs.device
    for epoch in range(start + 1, cfg.epochs + 1):
        if all(rep["stopped"] for rep in reps):
            break
        method.start_epoch(epoch)
        t0, c0 = time.perf_counter(), time.process_time()
        order = torch.stack([method.epoch_indices(epoch, num_samples, g) for g in gens]).to(device)  # (S, X')
        try:
            losses = runner.run(order, f"epoch {epoch}", cfg.progress)
        except TrainingDiverged as err:
            kept = f"the last good checkpoint ({ckpt_path}, epoch {start}) is kept" if ckpt_path else "nothing saved"
            raise TrainingDiverged(f"{err}; training stopped, {kept}. Try a lower --lr.") from None
        t1, c1 = time.perf_counter(), time.process_time()
        valid = evaluate_replicas(method, split, "valid", cfg.eval_batch_size)
        t2 = time.perf_counter()
        rows = []
        for s, rep in enumerate(reps):
            if rep["stopped"]:
                continue
            row = {
                "epoch": epoch,
                "lambda": method.lam,
                **{k: v[s] for k, v in losses.items()},
                **{f"valid/{k}": v for k, v in valid[s].items()},
                "train_seconds": t1 - t0,
                # this process's CPU time (all its threads), which other work on the machine does not add to
                "train_cpu_seconds": c1 - c0,
                "eval_seconds": t2 - t1,
            }
            rep["history"].append(row)
            rep["seconds"] += t1 - t0
            if valid[s][SELECT_KEY] > rep["best"]:
                rep.update(best=valid[s][SELECT_KEY], best_epoch=epoch, bad=0)
                best[s] = method.replica_state(s)
            else:
                rep["bad"] += 1
            rep["stopped"] = rep["bad"] >= cfg.patience
            log(("" if S == 1 else f"seed {seeds[s]}  ") + _epoch_line(row, rep, list(losses)))
            rows.append(row)
        start = epoch
        if ckpt_dir:
            save_checkpoint(
                ckpt_dir,
                {
                    "method": method.state_dict(),
                    "optimizer": opt.state_dict(),
                    "best_weights": best,
                    "state": {"epoch": epoch, "replicas": reps},
                    "rng": _rng_state(gens),
                },
            )
        for d, rep in zip(dirs, reps):
            if d:
                atomic_write(d / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rep["history"]))
        if on_epoch:
            on_epoch(rows)
    out = _finish(method, split, best, reps, dirs, stacked=S > 1)
    if ckpt_dir:
        (ckpt_dir / PREVIOUS).unlink(missing_ok=True)  # finished: the last checkpoint holds the selection
    return out


UNLOGGED = {"git": None, "machine": None, "started": None}  # epochs trained before runs logged their sessions


def _log_session(reps: list[dict], start: int, device: torch.device) -> None:
    """Append this process's session to each replica's: the first epoch it trains, the code's revision, the
    machine and the time it started. A run resumed across commits or machines thus says which epochs each
    trained; a checkpoint written before sessions were logged gets one unlogged session from epoch 1."""
    session = {
        "first_epoch": start + 1,
        "git": git_revision(),
        "machine": machine_fingerprint(device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    for rep in reps:
        earlier = rep.setdefault("sessions", [{"first_epoch": 1, **UNLOGGED}] if start else [])
        earlier.append(dict(session))


def _write_configs(method: Method, ckpt_dir: Path | None, dirs: list[Path | None]) -> None:
    model = method.model_cfg.to_dict()
    for seed, d in zip(method.seeds, dirs):
        if d:
            train = method.cfg.replace(seed=seed).to_dict()
            atomic_json(d / "config.json", {"model": model, "train": train, "stacked_with": list(method.seeds)})
    if ckpt_dir and ckpt_dir not in dirs:
        stack = {"model": model, "train": method.cfg.to_dict(), "seeds": list(method.seeds)}
        atomic_json(ckpt_dir / "config.json", stack)


def _cpu_seconds(history: list[dict]) -> float | None:
    """The training CPU seconds of a run's epochs, or None where some epochs were trained before runs logged
    them (a run resumed from an older checkpoint)."""
    if all("train_cpu_seconds" in row for row in history):
        return sum(row["train_cpu_seconds"] for row in history)
    return None


def _epoch_line(row: dict, rep: dict, keys: list[str]) -> str:
    losses = " ".join(f"{k}={row[k]:.4f}" for k in keys)
    star = " *" if rep["best_epoch"] == row["epoch"] else ""
    return (
        f"epoch {row['epoch']:3d}  {losses}  valid NDCG@20={row['valid/NDCG@20']:.2f} "
        f"HR@20={row['valid/HR@20']:.2f}  {row['train_seconds']:.1f}s{star}"
    )


def _finish(
    method: Method, split: Split, best: list[dict], reps: list[dict], dirs: list[Path | None], stacked: bool
) -> list[dict]:
    """Restore each replica's selected weights, evaluate test once, time inference, write results.json."""
    cfg, S = method.cfg, method.replicas
    for s in range(S):
        method.load_replica_state(s, best[s])
    t0 = time.perf_counter()
    tests, ranks = _evaluate(method, split, "test", cfg.eval_batch_size, members=False)
    infer = (time.perf_counter() - t0) / S
    if len(method.eval_view_names()) > 1:  # an ensemble: each member's test metrics too
        tests = evaluate_replicas(method, split, "test", cfg.eval_batch_size)
    users, report = split.test_targets.shape[0], method.report(split) if S == 1 else {}
    out = []
    for s, (rep, test, d) in enumerate(zip(reps, tests, dirs)):
        selected = rep["history"][rep["best_epoch"] - 1] if rep["best_epoch"] else {}
        results = {
            "method": cfg.method,
            "seed": method.seeds[s],
            "stacked_with": list(method.seeds) if stacked else [],
            "best_epoch": rep["best_epoch"],
            "epochs_run": len(rep["history"]),
            "stopped_early": len(rep["history"]) < cfg.epochs,
            "valid": {k[len("valid/") :]: v for k, v in selected.items() if k.startswith("valid/")},
            "test": test,
            "test_ranks": encode_ranks(ranks[s]),  # per user, for paired tests between methods
            "parameters": method.num_parameters(),
            "train_seconds": rep["seconds"],
            "train_cpu_seconds": _cpu_seconds(rep["history"]),
            "inference_seconds_per_1000_users": 1000.0 * infer / max(users, 1),
            "report": report,
            "sessions": rep["sessions"],
            "history": rep["history"],
        }
        if d:
            if stacked:  # the replica's own checkpoint: its selected weights, in the form of a one-replica run
                state = {"epoch": len(rep["history"]), "replicas": [rep]}
                atomic_torch_save(d / CHECKPOINT, {"method": best[s], "best_weights": [best[s]], "state": state})
            atomic_json(d / "results.json", results)
        out.append(results)
    return out
