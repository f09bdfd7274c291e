"""Full-ranking metrics: history masking, target ranks, HR@k / NDCG@k, streamed evaluation.

The rank of a target is the number of items scoring strictly higher than it (0 is best). Items in the
user's input history and the padding column 0 are excluded by setting their scores to -inf. Ranks come
from one comparison pass over each batch's score matrix: no sorting, and the full (U, I+1) matrix is
never held at once.
"""

import base64
import zlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

RANK_CAP = 255  # stored per-user ranks are capped here (one byte each): every metric reads ranks below 20
KS_HR = (1, 5, 10, 20)  # cut-offs of hit rate
KS_NDCG = (5, 10, 20)  # cut-offs of NDCG
METRIC_KEYS = tuple(f"HR@{k}" for k in KS_HR) + tuple(f"NDCG@{k}" for k in KS_NDCG)


def mask_history(scores: Tensor, history: Tensor) -> Tensor:
    """Set the scores of every history item and of padding column 0 to -inf, IN PLACE; returns `scores`.

    scores (B, I+1) float; history (B, W) int64, left-padded with 0 (padding only re-masks column 0).
    """
    scores.scatter_(1, history, float("-inf"))  # (B, I+1): history items, and column 0 via padding
    scores[:, 0] = float("-inf")  # (B,) column 0 even when a row has no padding
    return scores


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """Rank of each target: the number of items scoring strictly higher. Ties favour the target.

    scores (B, I+1), targets (B,) int64 -> ranks (B,) int64.
    """
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    return (scores > target_scores).sum(1)  # (B,)


def metrics_from_ranks(ranks: Tensor) -> dict[str, float]:
    """HR@{1,5,10,20} and NDCG@{5,10,20} in percent, averaged over users, as Python floats.

    HR@k = [rank < k]; NDCG@k = 1 / log2(rank + 2) if rank < k else 0 (one relevant item).
    """
    return _metric_table(ranks[None])[0]


def _metric_table(ranks: Tensor) -> list[dict[str, float]]:
    """`metrics_from_ranks` of each row of ranks (V, U), computed where the ranks are, read with one copy."""
    ranks = ranks.double()  # (V, U)
    gain = 1.0 / torch.log2(ranks + 2.0)  # (V, U)
    columns = [(ranks < k).double().mean(1) for k in KS_HR]  # (V,) each
    columns += [torch.where(ranks < k, gain, 0.0).mean(1) for k in KS_NDCG]
    table = (100.0 * torch.stack(columns, dim=1)).tolist()  # (V, 7)
    return [dict(zip(METRIC_KEYS, row)) for row in table]


@torch.no_grad()
def evaluate_scores(
    score_fn: Callable[[Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    history: Tensor,
    batch_size: int = 1024,
) -> tuple[dict[str, float], Tensor]:
    """Stream users through `score_fn` in batches, mask history, rank targets; returns (metrics, ranks).

    score_fn maps inputs (b, L) to scores (b, I+1). inputs (U, L), targets (U,), history (U, W) live on
    any device (score_fn's); ranks (U,) int64 come back on the CPU. Scores may be masked in place.
    """
    metrics, ranks = evaluate_views(lambda s: score_fn(s)[None], inputs, targets, history, batch_size)
    return metrics[0], ranks[0]


@torch.no_grad()
def evaluate_views(
    score_fn: Callable[[Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    history: Tensor,
    batch_size: int = 1024,
) -> tuple[list[dict[str, float]], Tensor]:
    """`evaluate_scores` for V score matrices from one call: score_fn maps inputs (b, L) to (V, b, I+1)
    (for example an ensemble and each of its members); returns (metrics per view, ranks (V, U) on the CPU).
    Ranks stay on the scores' device until the end: one copy back, not one per batch."""
    ranks = []
    for start in range(0, inputs.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        scores = score_fn(inputs[sl])  # (V, b, I+1)
        V, b = scores.shape[:2]
        flat = mask_history(scores.reshape(V * b, -1), history[sl].to(scores.device).repeat(V, 1))  # (V*b, I+1)
        ranks.append(target_ranks(flat, targets[sl].to(scores.device).repeat(V)).view(V, b))  # (V, b)
    ranks = torch.cat(ranks, dim=1) if ranks else torch.zeros(1, 0, dtype=torch.long)  # (V, U)
    return _metric_table(ranks), ranks.cpu()


def format_table(rows: dict[str, dict[str, float]], keys=None) -> str:
    """Plain-text table: one row per name, one column per metric key (default HR/NDCG), 2 decimals."""
    keys = list(keys) if keys is not None else list(METRIC_KEYS)
    name_w = max([len("name")] + [len(n) for n in rows])
    cells = [[f"{r[k]:.2f}" for k in keys] for r in rows.values()]
    widths = [max([len(k)] + [len(c[j]) for c in cells]) for j, k in enumerate(keys)]
    lines = ["  ".join(["name".ljust(name_w)] + [k.rjust(w) for k, w in zip(keys, widths)])]
    for name, c in zip(rows, cells):
        lines.append("  ".join([name.ljust(name_w)] + [v.rjust(w) for v, w in zip(c, widths)]))
    return "\n".join(lines)


def encode_ranks(ranks: Tensor | np.ndarray) -> dict:
    """Per-user ranks (U,) stored compactly for a results record: min(rank, RANK_CAP) as one byte per user,
    zlib-compressed and base64-encoded (a few KB for twenty thousand users). `decode_ranks` reverses it."""
    capped = np.minimum(np.asarray(ranks, dtype=np.int64), RANK_CAP).astype(np.uint8)  # (U,)
    data = base64.b64encode(zlib.compress(capped.tobytes(), 9)).decode("ascii")
    return {"encoding": f"uint8 min(rank, {RANK_CAP}), zlib, base64", "users": int(capped.size), "data": data}


def decode_ranks(blob: dict) -> np.ndarray:
    """The capped per-user ranks (U,) int64 of `encode_ranks`' output."""
    ranks = np.frombuffer(zlib.decompress(base64.b64decode(blob["data"])), dtype=np.uint8).astype(np.int64)
    if ranks.size != blob["users"]:
        raise ValueError(f"stored ranks hold {ranks.size} users, the record says {blob['users']}")
    return ranks
