"""The release's anchors as a reference point for the full records (chapter 3).

The official release ships the frozen network (the anchor) it trained FLAME with for amazon-toys,
amazon-beauty and amazon-games. Evaluated as every run here is evaluated, such an anchor answers two questions
the main table cannot: does our Single, trained with the full profile, reach the release's network (is the
baseline as strong as the paper's)? And how far does FLAME trained from that anchor get beyond the frozen
network that guided it? Both are compared user by user on the test split, as the main table compares methods
with Single.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flame_core.analysis import paired_comparison, user_ndcg
from flame_core.config import ModelConfig
from flame_core.experiments import evaluate_network, load, network_ranks
from flame_core.metrics import decode_ranks, encode_ranks, metrics_from_ranks
from flame_core.release import RELEASED_ANCHORS, state

from . import (
    NOT_RUN,
    PER_USER,
    RELEASED_VARIANT,
    delta_text,
    disagreement,
    metrics_over_seeds,
    p_text,
    per_user_cells,
    plus_minus,
    records_of,
    seeds_listed,
    user_ndcg_over_seeds,
    verdict,
)

ANCHOR = "released anchor"  # the reference row of each dataset
COMPARED = ("Single", RELEASED_VARIANT)  # what is compared with the anchor: our baseline, FLAME trained from it
DELTA = "Δ NDCG@20 vs anchor (95% CI)"
COLUMNS = ("seeds", "valid NDCG@20", "NDCG@20", "HR@20", DELTA, "p (Wilcoxon)")


def available(datasets: list[str], folder: str | Path) -> tuple[list[str], list[str]]:
    """The datasets of `datasets` whose released anchor lies in `folder` and whose data file is the release's
    (`flame_core.release.state`), and a reason for each other one that has a released anchor (naming no
    folder: the book shows it)."""
    found, missing = [], []
    for d in (d for d in datasets if d in RELEASED_ANCHORS):
        if not (Path(folder) / f"{d}.pt").is_file():
            missing.append(f"{d}: no file {d}.pt")
        elif (why := state(d)) != "available":
            missing.append(f"{d}: its data file is {why}")
        else:
            found.append(d)
    return found, missing


def anchor_record(dataset: str, folder: str | Path, device: str = "cpu") -> dict:
    """The release's anchor of `dataset` evaluated on the full profile's split (max_len 50, the last 53 items
    of each user kept), in a record's form: the file's name, validation and test metrics, the test users'
    ranks (`test_ranks`). JSON-able, so a chapter can keep it with `flamebook.measured`."""
    model = ModelConfig()  # the release's sizes, and the full profile's window
    _, split = load(dataset, model.max_len)
    split, path = split.to(device), Path(folder) / f"{dataset}.pt"
    valid = evaluate_network(path, model, split, "valid")
    ranks = network_ranks(path, model, split, "test")  # (U,)
    return {"file": path.name, "valid": valid, "test": metrics_from_ranks(ranks), "test_ranks": encode_ranks(ranks)}


def numbers(records: list[dict], anchors: dict[str, dict]) -> pd.DataFrame:
    """Dataset x (the anchor, Single, FLAME from the anchor): `state`, the seeds, test NDCG@20 and HR@20 (mean
    and sd over seeds), and each compared row's per-user paired comparison with the anchor (mean difference of
    NDCG@20 in points over the users, NDCG averaged over the row's seeds, 95% CI, Wilcoxon p), with
    `comparison` as in `flamebook.main_numbers` so that `flamebook.verdict` reads it."""
    rows = []
    for dataset, anchor in anchors.items():
        reference = user_ndcg(decode_ranks(anchor["test_ranks"]))  # (U,)
        rows.append(
            {
                "dataset": dataset,
                "row": ANCHOR,
                "state": "ran",
                "seeds": (),
                "valid NDCG@20": anchor["valid"]["NDCG@20"],
                "NDCG@20": anchor["test"]["NDCG@20"],
                "NDCG@20 sd": np.nan,  # one network: no spread over seeds
                "HR@20": anchor["test"]["HR@20"],
                "HR@20 sd": np.nan,
                "comparison": "reference",
            }
        )
        for name in COMPARED:
            rows.append({"dataset": dataset, "row": name, **_compared(records_of(records, dataset, name), reference)})
    return pd.DataFrame(rows).set_index(["dataset", "row"])


def _compared(recs: list[dict], reference: np.ndarray) -> dict:
    if not recs:
        return {"state": NOT_RUN, "seeds": (), "comparison": NOT_RUN}
    cells = {
        "state": "ran",
        "seeds": tuple(r["seed"] for r in recs),
        "valid NDCG@20": np.mean([r["valid"]["NDCG@20"] for r in recs]),
        **metrics_over_seeds(recs),
    }
    ranked = [r["seed"] for r in recs if r.get("test_ranks")]
    if not ranked:
        return {**cells, "comparison": "ranks not stored"}
    ours = user_ndcg_over_seeds(recs, ranked)  # (U,)
    if ours.shape != reference.shape:
        raise ValueError(
            f"the records hold {ours.size} test users and the anchor's split {reference.size}: "
            "the records were not made on the full profile's split"
        )
    return {**cells, "comparison": PER_USER, **per_user_cells(paired_comparison(ours, reference))}


def table(nums: pd.DataFrame) -> pd.DataFrame:
    """`numbers` as the book shows it: seeds, mean validation NDCG@20, test NDCG@20 and HR@20 (mean ± sd), the
    per-user difference from the anchor with its CI and p; a cell without a number says why."""
    rows = {}
    for key, row in nums.iterrows():
        if row["state"] != "ran":
            rows[key] = dict.fromkeys(COLUMNS, row["state"])
            continue
        rows[key] = {
            "seeds": ", ".join(map(str, row["seeds"])) or "(the release's)",
            "valid NDCG@20": f"{row['valid NDCG@20']:.2f}",
            "NDCG@20": plus_minus(row["NDCG@20"], row["NDCG@20 sd"]),
            "HR@20": plus_minus(row["HR@20"], row["HR@20 sd"]),
            DELTA: delta_text(row) if row["comparison"] == PER_USER else row["comparison"],
            "p (Wilcoxon)": p_text(row) if row["comparison"] == PER_USER else row["comparison"],
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(nums.index.names)[list(COLUMNS)]


def sentence(dataset: str, nums: pd.DataFrame) -> str:
    """What one dataset's rows of `numbers` say, computed: the anchor's figures, then Single and FLAME from the
    anchor against it (or that they were not run)."""
    rows = nums.loc[dataset]
    anchor = rows.loc[ANCHOR]
    said = [
        f"On **{dataset}** the release's anchor reaches test NDCG@20 {anchor['NDCG@20']:.2f} (validation "
        f"{anchor['valid NDCG@20']:.2f}) under this book's evaluation."
    ]
    for name, against in zip(COMPARED, ("the release's network", "the anchor it was trained from")):
        row = rows.loc[name]
        if row["state"] != "ran":
            said.append(f"{name} has no full record there yet.")
            continue
        text = f"{name} reaches {plus_minus(row['NDCG@20'], row['NDCG@20 sd'])} ({seeds_listed(row['seeds'])})"
        if row["comparison"] == PER_USER:
            text += f", {delta_text(row)} points per test user (Wilcoxon p = {p_text(row)}): {verdict(row)} {against}"
            text += disagreement(row)
        said.append(text + ".")
    return " ".join(said)


def together(dataset: str, nums: pd.DataFrame, main: pd.DataFrame) -> str:
    """One sentence reading this table with the main table (`flamebook.main_numbers`) for `dataset`: FLAME from
    the released anchor against Single and against its anchor, and Single against the anchor; empty unless
    both of FLAME's comparisons were made per user."""
    flame, versus_single = nums.loc[(dataset, RELEASED_VARIANT)], main.loc[(dataset, RELEASED_VARIANT)]
    if flame["comparison"] != PER_USER or versus_single["comparison"] != PER_USER:
        return ""
    single = nums.loc[(dataset, "Single")]
    text = (
        f"Read together on {dataset}: FLAME from the released anchor is {verdict(versus_single)} Single and "
        f"{verdict(flame)} the anchor it was trained from, while Single is {verdict(single)} that anchor"
    )
    if verdict(versus_single).endswith("better than") and not verdict(flame).endswith("better than"):
        text += (
            "; so far its advantage over Single does not show against the frozen anchor alone, which serves "
            "at the same cost"
        )
    return text + "."
