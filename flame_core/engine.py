"""The training engine: epochs of shuffled batches, validation every epoch, early stopping, one test.

Protocol (DESIGN.md section 2): model selection on validation NDCG@20 only, patience in epochs, the best
weights restored at the end and the test split evaluated once with them. A run directory holds

    config.json      the model and training configuration
    history.jsonl    one line per epoch: losses, lambda, validation metrics, seconds
    checkpoint.pt    everything needed to resume after the last finished epoch (weights, optimiser, RNGs)
    results.json     the final record: selected epoch, validation and test metrics, cost, and the method's
                     own `report` (e.g. CANet's routing and FLOPs)

The method's hooks: `prepare(split)` runs once before the first epoch (also on resume), and
`epoch_indices(epoch, ...)` gives each epoch's samples (default: all of them, shuffled with the seeded
generator, so curricula like ckd's plug in without touching the loop).

Every file is written atomically; ``resume=True`` continues from checkpoint.pt and, on CPU with the same
seed, reproduces the uninterrupted run exactly. A non-finite loss stops the run with a clear message and
leaves the last good checkpoint in place.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from flame_core.data import Split
from flame_core.methods import EnsembleScratch, Method
from flame_core.metrics import evaluate_scores, evaluate_views
from flame_core.utils import atomic_json, atomic_torch_save, atomic_write, seed_everything

SELECT_KEY = "NDCG@20"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@torch.no_grad()
def evaluate(method: Method, split: Split, which: str, batch_size: int = 1024, members: bool = True) -> dict:
    """Full-ranking metrics of `method` on split "valid" or "test" (plus each member's NDCG@20 for ensembles)."""
    was_training = method.training
    method.eval()
    inputs, targets, history = split.inputs(which)
    if members and isinstance(method, EnsembleScratch):  # the served scores and each member's, from one pass

        def served_and_members(seq):
            member = method.member_scores(seq)  # (N, b, I+1)
            return torch.cat([method.combine(member)[None], member])  # (1+N, b, I+1)

        (metrics, *each), _ = evaluate_views(served_and_members, inputs, targets, history, batch_size)
        metrics.update({f"member{k}/{SELECT_KEY}": m[SELECT_KEY] for k, m in enumerate(each)})
    else:
        metrics, _ = evaluate_scores(method.scores, inputs, targets, history, batch_size)
    method.train(was_training)
    return metrics


def _run_epoch(method: Method, opt: torch.optim.Optimizer, split: Split, gen: torch.Generator,
               batch_size: int, desc: str, progress: bool, epoch: int = 1) -> dict:  # fmt: skip
    """One pass over the epoch's shuffled training samples; returns the mean of each logged loss."""
    method.train()
    order = method.epoch_indices(epoch, split.train_inputs.shape[0], gen).to(split.train_inputs.device)  # (S',)
    sums: dict[str, torch.Tensor] = {}
    steps = range(0, order.shape[0], batch_size)
    for step, start in enumerate(tqdm(steps, desc=desc, leave=False, disable=not progress)):
        idx = order[start : start + batch_size]  # (B,)
        loss, logs = method.loss((split.train_inputs[idx], split.train_targets[idx]))
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{desc}, step {step + 1}: the loss is {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for key, value in {"loss": loss.detach(), **logs}.items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: float(value) / len(steps) for key, value in sums.items()}


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(method: Method, split: Split, out_dir: str | Path | None = None, resume: bool = False,
          on_epoch: Callable[[dict], None] | None = None, log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Train `method` on `split` (both on the same device) and return the results record.

    `out_dir` receives config.json, history.jsonl, checkpoint.pt and results.json (None: nothing is
    written and nothing can be resumed). `on_epoch(row)` is called after each epoch's checkpoint.
    """
    cfg = method.cfg
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out else None
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "best": float("-inf"), "best_epoch": 0, "bad": 0, "history": [], "seconds": 0.0}
    best_weights = copy.deepcopy(method.state_dict())
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=split.train_targets.device, weights_only=False)
        method.load_state_dict(ckpt["method"])
        opt.load_state_dict(ckpt["optimizer"])
        best_weights, state = ckpt["best_weights"], ckpt["state"]
        _set_rng_state(ckpt["rng"], gen)
        log(f"resumed from {ckpt_path} after epoch {state['epoch']}")
    else:
        seed_everything(cfg.seed)
    if out:
        atomic_json(out / "config.json", {"model": method.model_cfg.to_dict(), "train": cfg.to_dict()})
    method.prepare(split)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["bad"] >= cfg.patience:
            break
        method.start_epoch(epoch)
        t0 = time.perf_counter()
        try:
            losses = _run_epoch(method, opt, split, gen, cfg.batch_size, f"epoch {epoch}", cfg.progress, epoch)
        except TrainingDiverged as err:
            kept = f"the last good checkpoint ({ckpt_path}, epoch {state['epoch']}) is kept" if out else "nothing saved"
            raise TrainingDiverged(f"{err}; training stopped, {kept}. Try a lower --lr.") from None
        t1 = time.perf_counter()
        valid = evaluate(method, split, "valid", cfg.eval_batch_size)
        t2 = time.perf_counter()
        row = {"epoch": epoch, "lambda": method.lam, **losses, **{f"valid/{k}": v for k, v in valid.items()},
               "train_seconds": t1 - t0, "eval_seconds": t2 - t1}  # fmt: skip
        state["history"].append(row)
        state["seconds"] += t1 - t0
        if valid[SELECT_KEY] > state["best"]:
            state.update(best=valid[SELECT_KEY], best_epoch=epoch, bad=0)
            best_weights = copy.deepcopy(method.state_dict())
        else:
            state["bad"] += 1
        state["epoch"] = epoch
        if out:
            atomic_torch_save(ckpt_path, {"method": method.state_dict(), "optimizer": opt.state_dict(),
                                          "best_weights": best_weights, "state": state, "rng": _rng_state(gen)})  # fmt: skip
            atomic_write(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
        log(_epoch_line(row, state, list(losses)))
        if on_epoch:
            on_epoch(row)
    return _finish(method, split, best_weights, state, out)


def _epoch_line(row: dict, state: dict, keys: list[str]) -> str:
    losses = " ".join(f"{k}={row[k]:.4f}" for k in keys)
    star = " *" if state["best_epoch"] == row["epoch"] else ""
    return (f"epoch {row['epoch']:3d}  {losses}  valid NDCG@20={row['valid/NDCG@20']:.2f} "
            f"HR@20={row['valid/HR@20']:.2f}  {row['train_seconds']:.1f}s{star}")  # fmt: skip


def _finish(method: Method, split: Split, best_weights: dict, state: dict, out: Path | None) -> dict:
    """Restore the selected weights, evaluate test once, time inference, write results.json."""
    method.load_state_dict(best_weights)
    t0 = time.perf_counter()
    test = evaluate(method, split, "test", method.cfg.eval_batch_size, members=False)
    infer = time.perf_counter() - t0
    test.update(evaluate(method, split, "test", method.cfg.eval_batch_size) if isinstance(method, EnsembleScratch) else {})
    users = split.test_targets.shape[0]
    selected = state["history"][state["best_epoch"] - 1] if state["best_epoch"] else {}
    results = {
        "method": method.cfg.method,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "stopped_early": state["epoch"] < method.cfg.epochs,
        "valid": {k[len("valid/") :]: v for k, v in selected.items() if k.startswith("valid/")},
        "test": test,
        "parameters": method.num_parameters(),
        "train_seconds": state["seconds"],
        "inference_seconds_per_1000_users": 1000.0 * infer / max(users, 1),
        "report": method.report(split),
        "history": state["history"],
    }
    if out:
        atomic_json(out / "results.json", results)
    return results
