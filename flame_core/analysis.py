"""Analysis utilities (the book, chapters 02 and 04): representations, per-view hits, PER maps, t-SNE, convergence.

A *view* is one representation a method can produce for a user: an ensemble member, or a modular path.
Views are scored with the item table of the network that embedded their input (members: their own;
paths: the network of the path's embedding module, since SASRec ties input and output embeddings).

PER map (our reading; the paper's definition was not available): for views i and j, the share of users
whose target view i ranks in the top K while view j does not; the diagonal is each view's HR@K. Large
off-diagonal entries mean the views' errors complement each other.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flame_core.data import Split
from flame_core.methods import Method
from flame_core.metrics import mask_history, target_ranks


@torch.no_grad()
def representations(
    method: Method, split: Split, which: str = "test", max_users: int | None = None, batch_size: int = 1024
) -> tuple[list[str], Tensor]:
    """Every view's last-position representation of the users of a split: (names, (V, U, D)) on the CPU."""
    method.eval()
    inputs, _, _ = split.inputs(which)
    inputs = inputs[:max_users] if max_users else inputs
    names, chunks = [], []
    for start in range(0, inputs.shape[0], batch_size):
        names, z = method.views(inputs[start : start + batch_size])  # (V, b, D)
        chunks.append(z.cpu())
    return names, torch.cat(chunks, dim=1)  # (V, U, D)


@torch.no_grad()
def view_ranks(method: Method, split: Split, which: str = "test", batch_size: int = 1024) -> tuple[list[str], Tensor]:
    """Rank of each user's target under every view: (names, (V, U)) int64, full ranking, history excluded."""
    method.eval()
    inputs, targets, history = split.inputs(which)
    tables = method.view_tables()  # (V, I+1, D)
    names, ranks = [], []
    for start in range(0, inputs.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        names, z = method.views(inputs[sl])  # (V, b, D)
        scores = torch.bmm(z, tables.transpose(1, 2))  # (V, b, I+1)
        ranks.append(torch.stack([target_ranks(mask_history(s, history[sl]), targets[sl]) for s in scores]).cpu())
    return names, torch.cat(ranks, dim=1)  # (V, U)


def per_map(ranks: Tensor, k: int = 20) -> np.ndarray:
    """PER map (V, V) from ranks (V, U): [i, j] = share of users in view i's top k but not view j's; [i, i] = HR@k."""
    hit = (ranks < k).double()  # (V, U)
    both = hit @ hit.T / hit.shape[1]  # (V, V): share of users both views hit
    return (hit.mean(1)[:, None] - both + torch.diag(torch.diag(both))).numpy()


def tsne(reps: Tensor, names: list[str], users: int = 300, seed: int = 0, perplexity: float = 30.0) -> dict:
    """2-D t-SNE (scikit-learn) of the first `users` users' representations of every view.

    Returns {"x": (V*users,), "y": ..., "view": names repeated, "user": user index}.
    """
    from sklearn.manifold import TSNE  # optional dependency (the book extra)

    V, U, D = reps.shape
    users = min(users, U)
    flat = reps[:, :users].reshape(V * users, D).double().numpy()  # (V*users, D)
    coords = TSNE(
        n_components=2, perplexity=min(perplexity, (V * users - 1) / 3), random_state=seed, init="pca"
    ).fit_transform(flat)
    return {"x": coords[:, 0], "y": coords[:, 1], "view": np.repeat(names, users), "user": np.tile(np.arange(users), V)}


def convergence(history: list[dict], key: str = "valid/NDCG@20", fraction: float = 0.95) -> dict:
    """Epochs and training seconds until `key` first reaches `fraction` of its best value."""
    values = np.array([row[key] for row in history])
    seconds = np.cumsum([row["train_seconds"] for row in history])
    first = int(np.argmax(values >= fraction * values.max()))
    return {"best": float(values.max()), "epochs": first + 1, "seconds": float(seconds[first]), "fraction": fraction}


def user_ndcg(ranks: np.ndarray | Tensor, k: int = 20) -> np.ndarray:
    """Per-user NDCG@k (0..1) of target ranks (U,): 1 / log2(rank + 2) when rank < k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def paired_comparison(a: np.ndarray, b: np.ndarray) -> dict:
    """How per-user values a (U,) differ from b (U,) for the same users: the mean difference in points
    (percent), its 95% confidence interval (paired t), and the two-sided p-values of the paired t-test and of
    the Wilcoxon signed-rank test (which assumes no normality; users with equal values are dropped), and the
    side the signed ranks favour (`wilcoxon_side`: +1 where a's gains outrank its losses, -1, or 0), which can
    differ from the mean's sign when many small gains meet a few large losses."""
    from scipy import stats  # installed with scikit-learn (the book extra)

    diff = 100.0 * (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))  # (U,)
    n, mean = diff.size, float(diff.mean())
    sem = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * sem) if n > 1 else float("nan")
    t_p = float(stats.ttest_rel(a, b).pvalue) if n > 1 and sem > 0 else float("nan")
    w_p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    moved = diff[diff != 0]
    ranks = stats.rankdata(np.abs(moved))  # average ranks for ties, as the test uses
    side = int(np.sign(ranks[moved > 0].sum() - ranks[moved < 0].sum()))
    return {
        "users": n,
        "mean_diff": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "t_p": t_p,
        "wilcoxon_p": w_p,
        "wilcoxon_side": side,
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
    }


def time_to_reach(
    history: list[dict], target: float, key: str = "valid/NDCG@20", clock: str = "train_seconds"
) -> dict | None:
    """The first epoch whose `key` reaches `target`, and the training seconds spent until its end by `clock`
    (wall seconds, or "train_cpu_seconds": the process's CPU seconds; NaN where an epoch lacks them); None
    when the run never reaches it."""
    seconds = 0.0
    for row in history:
        seconds += row.get(clock, float("nan"))
        if row[key] >= target:
            return {"epoch": row["epoch"], "seconds": seconds}
    return None
