# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training FLAME and its baselines
#
# This chapter trains the four methods of the book (Single, Ensemble-Scratch, Ensemble-Guide and FLAME),
# and beside them the three related systems that chapter 5 describes (EMKD, CANet and multi-teacher
# distillation, CKD), under one protocol, and compares them in two ways: the accuracy of the selected model
# on the test split (mean ± standard deviation over seeds) and how fast each method gets there (validation
# NDCG@20 against epochs and against training seconds). Every number below is either computed in this
# chapter under the chosen parameter profile, or loaded from a results record that a documented command
# produced; each table says which. The quick profile trains a few epochs on MovieLens-100K on a CPU, which
# is enough to check the machinery and see the early phase of training, not to reproduce the paper's
# numbers; the main table (Table 3) and the convergence comparison (Table 5) read the full-profile records
# that the sweep writes, whatever this chapter's own profile.
#
# **After this chapter you can** state the protocol every number here follows and why history items must
# be excluded explicitly; read a main table with mean ± sd over seeds and tell a difference from seed
# noise with a per-user paired test; measure convergence in epochs and seconds, with and without the
# anchor's pretraining; and make, record and reuse runs with the library (`experiments.run`, the sweep).
#
# **Prerequisites.** Chapters 1 and 2; leave-one-out evaluation and full ranking; mean and standard
# deviation over seeds; a paired test (the Wilcoxon signed-rank test compares two methods user by user
# without assuming normal differences).

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
import plotly.express as px
import seaborn as sns
import torch
from IPython.display import Markdown, display
from matplotlib import pyplot as plt

import flamebook
from flame_core.analysis import convergence
from flame_core.experiments import anchor_metrics, load, load_records, pretraining_seconds
from flame_core.metrics import mask_history, metrics_from_ranks, target_ranks
from flame_core.registry import display_name
from flame_core.release import RELEASED_ANCHORS
from flamebook import released

# %% tags=["parameters"]
dataset = "ml-100k"  # a name (ml-100k, or a file in $FLAME_DATA_DIR) or a path
device = "cpu"  # "cpu", "cuda" or "auto"
epochs = 3  # epoch budget (lambda anneals over the paper's 200 epochs whatever the budget)
seeds = [42, 43]  # one run per method and seed
max_len = 10  # L, the input window (the official default is 50)
profile = "quick"  # the label of this parameter set, printed with every table
runs_dir = "_build/runs"  # finished runs are reused from here (shared with the other chapters)
output_dir = "_build/outputs/03_training"  # metrics.json and figures
results_dir = "results"  # committed provenance records (python -m flame_core train ... --record results)
fraction = 0.95  # convergence: first epoch that reaches this fraction of the best validation NDCG@20 of a run
related = ["emkd", "canet", "ckd"]  # related systems (chapter 5) trained for the main table; [] leaves them out
full_profile = "full"  # the records of the main table (Table 3): the sweep's full profile
table_datasets = ["amazon-toys", "amazon-beauty", "amazon-games", "amazon-sports", "yelp", "ml-100k"]  # its rows
released_dir = "../shared/official_weights"  # the release's anchors (Table 4); relative to the repository root

# %% tags=["hide-input"]
out = flamebook.setup(output_dir, seed=seeds[0])
methods = ["single", "ensemble_scratch", "ensemble_guide", "flame", *related]
PROTOCOL = flamebook.protocol(dataset, max_len, epochs, profile, device, seeds)
print(PROTOCOL)

# %% [markdown]
# ## The protocol
#
# All methods share the protocol of the official FLAME release, implemented once in `flame_core`:
#
# - **Leave-one-out split.** For each user the last item is the test target (input: everything before
#   it), the second to last the validation target (input: everything before that), and every prefix of
#   the remaining items predicts its next item for training. Inputs are the last `max_len` items,
#   left-padded.
# - **Truncation.** Like the official code, only each user's last `max_len + 3` items are kept before
#   splitting. On MovieLens-100K, whose users have long histories (the mean length is printed below),
#   this discards most of the data; on the Amazon and Yelp files, with much shorter sequences, it keeps
#   almost everything. Earlier items are neither trained on nor excluded from ranking.
# - **Full ranking.** The target is ranked against every item, with no sampled negatives and no
#   subsampled users; its rank is the number of items scoring strictly higher. Metrics are HR@k and
#   NDCG@k in percent.
# - **History excluded.** Items of the user's input history get the score $-\infty$ and cannot be
#   recommended. The official code sets them to $0$ instead, which does not exclude them: a history item
#   still outranks the target whenever the target's score is negative. This is our one departure from
#   the official protocol (the methods depart in two more places: independent path attention and our
#   own anchor, see the introduction); we measure its effect below.
# - **Selection on validation, test once.** Each epoch is evaluated on the validation split; the epoch
#   with the best validation NDCG@20 is selected (early stopping after 30 epochs without improvement),
#   and the test split is evaluated once, with the selected weights.
#
# What truncation costs on the chosen dataset, computed from the library's own split:

# %%
data, split = load(dataset, max_len)
_, split_all = load(dataset, max_len, None)
lengths = np.array([len(s) for s in data.sequences])
truncation = pd.DataFrame(
    {
        "interactions": [int(lengths.sum()), int(np.minimum(lengths, max_len + 3).sum())],
        "training samples": [split_all.train_targets.numel(), split.train_targets.numel()],
    },
    index=["all items", f"last max_len + 3 = {max_len + 3} items"],
)
truncation["share of interactions"] = (truncation["interactions"] / lengths.sum()).map("{:.0%}".format)
print(data.stats())
truncation

# %% [markdown]
# ## Training the methods
#
# Each method is trained once per seed with the default settings (two members for Ensemble-Scratch; the
# official module split `emb|enc` with independent path attention for FLAME; the related systems with the
# settings chapter 5 lists: three EMKD members, CANet's routing space scaled to $d = 64$, three CKD
# teachers). Ensemble-Guide and FLAME
# first need the frozen anchor: a Single SASRec trained with the same settings and its own seed
# (`anchor_seed`), selected on validation and cached. One anchor per dataset and settings serves every
# seed, as the release ships one anchor per dataset, and no learnable network starts from the anchor's
# initial weights; CKD's teachers are pretrained and cached the same way, with other seeds and sizes.
# `flamebook.experiment`
# reuses a finished run with the same data and settings from `runs_dir`, so the other chapters and a
# second execution of this one do not train again.

# %%
runs = {
    (m, s): flamebook.experiment(dataset, m, epochs, runs_dir, max_len=max_len, device=device, seed=s)
    for m in methods
    for s in seeds
}
print({f"{m}/{s}": ("reused" if e.reused else "trained") for (m, s), e in runs.items()})

# %% [markdown]
# A check of that claim: the frozen network inside each FLAME run, evaluated alone on the test split,
# is the same anchor for every seed, and it is one more Single run (seed `anchor_seed`) beside the
# Single runs of the table.

# %%
anchor_check = pd.DataFrame(
    [
        {
            "seed": s,
            "Single test NDCG@20": runs[("single", s)].results["test"]["NDCG@20"],
            "anchor test NDCG@20": anchor_metrics(flame.method, flame.split)["NDCG@20"],
            "anchor seed": flame.method.cfg.flame.anchor_seed,
        }
        for s in seeds
        for flame in [runs[("flame", s)]]
    ]
)
anchor_check

# %% [markdown]
# ## The main table
#
# Test metrics of the selected epoch, mean ± standard deviation over the seeds (the standard deviation
# is over as many runs as there are seeds, so with two seeds it is a rough indication only).

# %% tags=["hide-input"]
KEYS = list(flamebook.METRIC_KEYS)
rows = pd.DataFrame(
    [
        {
            "method": display_name(m),
            "seed": s,
            "selected epoch": e.results["best_epoch"],
            **{k: e.results["test"][k] for k in KEYS},
            "valid NDCG@20": e.results["valid"]["NDCG@20"],
        }
        for (m, s), e in runs.items()
    ]
)


main = rows.groupby("method", sort=False)[KEYS + ["valid NDCG@20"]].agg(flamebook.mean_sd)
main.insert(0, "selected epochs", rows.groupby("method", sort=False)["selected epoch"].agg(lambda v: list(v)))
display(
    Markdown(
        f"**Table 1.** Test metrics (percent), mean ± sd over seeds {seeds}: the four methods of the "
        f"book, then the related systems of chapter 5. Protocol: {PROTOCOL}."
    )
)
main

# %% [markdown]
# The ranking of the methods after a handful of epochs says little about the ranking after convergence:
# under the quick profile every method is still improving when its budget ends (see the convergence
# section), and the alignment weight $\lambda_e$ follows the paper's schedule over $R = 200$ epochs, so a
# budget of a few epochs trains FLAME with the alignment at nearly full weight (each run's history logs
# its $\lambda_e$; chapter 4 shows them). The paper's comparison needs the full profile.
#
# ### The cost of the official history convention
#
# To see what excluding history items changes, we re-rank the test targets of the Single run (first
# seed) with history scores set to $0$, as the official code does, instead of $-\infty$. Both use the
# same scores and the library's ranking; only the value written into the history columns differs.

# %%
single = runs[("single", seeds[0])]
inputs, targets, history = single.split.inputs("test")
with torch.no_grad():
    scores = torch.cat([single.method.scores(inputs[i : i + 1024]) for i in range(0, len(inputs), 1024)])
official = scores.clone().scatter_(1, history, 0.0)  # (U, I+1): the official convention
official[:, 0] = float("-inf")  # padding column
ours = mask_history(scores.clone(), history)  # (U, I+1): history excluded, as everywhere in flame_core
rank_ours, rank_official = target_ranks(ours, targets), target_ranks(official, targets)  # (U,) each
history_effect = pd.DataFrame(
    {
        "history score 0 (official)": metrics_from_ranks(rank_official),
        "history score -inf (ours)": metrics_from_ranks(rank_ours),
    }
).T
history_effect = history_effect.loc[:, KEYS]
display(
    Markdown(
        f"**Table 2.** Test metrics (percent) of Single (seed {seeds[0]}) under the two history "
        f"conventions. Protocol otherwise as Table 1: {PROTOCOL}."
    )
)
history_effect.round(2)

# %% [markdown]
# The official convention can only lower a metric: a history item outranks the target under the score $0$
# exactly when the target's own score is negative, and it never helps the target. So the two conventions
# differ only for users whose target scores below zero, and only at cut-offs such a target could reach:
# a negative-scoring target is in the top 20 only if fewer than 20 unseen items score above it. For the
# run above:

# %% tags=["hide-input"]
target_scores = scores.gather(1, targets[:, None]).squeeze(1)  # (U,)
negative_share = 100 * (target_scores < 0).double().mean().item()
changed = rank_official != rank_ours  # (U,)
print(
    f"test targets with a negative score: {negative_share:.2f}% of {len(targets)} users; "
    f"rank changed for {int(changed.sum())} users, of whom {int((changed & (rank_ours < 20)).sum())} "
    "were in our top 20"
)
gap = history_effect.loc["history score -inf (ours)"] - history_effect.loc["history score 0 (official)"]
gap.rename("ours minus official (points)").round(2)

# %% [markdown]
# When the gap is small, as it is whenever the users with negative target scores were out of the top 20
# anyway, the difference is one of principle. It grows for models or losses that push most scores below
# zero, and at larger cut-offs; excluding history explicitly makes the metric independent of the scale
# of the scores.
#
# ## The main table: the full profile, from records
#
# The paper's comparison needs the full protocol: 200 epochs at most with early stopping (patience 30),
# `max_len` 50, $\lambda$ annealed over 200 epochs, three seeds. Those runs are made by the sweep, on a GPU
# where one is available, and stored under `results/` as one record per run with its provenance (command,
# git revision, dataset statistics, seed, budget, whether it converged, device, date, the sessions of a run
# resumed across processes (the first epoch, revision and machine of each), and each test user's rank, so
# that methods can be compared user by user):
#
# ```bash
# python -m flame_core sweep --profile full --datasets amazon-toys,amazon-beauty,amazon-games,amazon-sports,yelp \
#     --released ../shared/official_weights --device cuda
# python -m flame_core sweep --profile full --datasets ml-100k --device cpu        # the CPU part of the table
# ```
#
# The table reads every record of the full profile. For each dataset and method: the test NDCG@20 and
# HR@20 (mean ± sd over seeds), how many runs stopped early on validation (`converged`; the others ran
# out of the 200-epoch budget), the gain over Single (the row's mean against the mean of all of Single's
# seeds), and a paired test a reviewer can check: per test user, NDCG@20 averaged over the seeds both
# methods ran, the mean difference from Single with its 95% confidence interval, and the two-sided
# Wilcoxon signed-rank p-value (no normality assumed). While a row lacks some of Single's seeds, the two
# compare different seeds of Single and their signs can differ. "FLAME
# (released anchor)" is FLAME trained from the official release's frozen network instead of one we
# pretrained; the release ships anchors for amazon-toys, amazon-beauty and amazon-games (and ML-1M) only, so its
# row says "no released anchor" elsewhere. Cells nobody has run yet say "not run". Each p-value is one of
# many comparisons with Single in the table, and the sentences below call a row significant at p < 0.05
# without correcting for that: a p just under 0.05, above all on one seed, asks for more seeds before it
# counts as a finding (a Bonferroni correction over k comparisons would ask for p < 0.05 / k). The two
# tests can disagree: the confidence interval is the paired t-test's, on the mean of the per-user
# differences, while the Wilcoxon test ranks them and drops the many users whose NDCG@20 does not change
# at all. Where one finds a difference and the other does not, the sentence says so.

# %% tags=["hide-input"]
records = load_records(flamebook.resolve(results_dir))
full = [r for r in records if r["profile"] == full_profile]
flames = ["FLAME", flamebook.RELEASED_VARIANT]  # the method, from an anchor we pretrained or from the release's
variants = ["Single", "Ensemble-Scratch", "Ensemble-Guide", *flames, "EMKD", "CANet", "CKD"]
numbers_full = flamebook.main_numbers(full, table_datasets, variants)
main_full = flamebook.main_table(numbers_full)
devices = sorted({r["device"] for r in full}) or ["-"]
display(
    Markdown(
        f"**Table 3.** The main table: test metrics (percent) of every `{full_profile}` record in "
        f"`{results_dir}/` ({len(full)} runs; devices: {', '.join(devices)}). Protocol: leave-one-out, "
        "full ranking over all items, history excluded, selected on validation NDCG@20, at most 200 "
        "epochs with patience 30, max_len 50, lambda annealed over 200 epochs."
    )
)
main_full

# %% tags=["remove-input"]
findings = []
for d in table_datasets:
    compared = [
        m for m in flames if numbers_full.loc[(d, m), "comparison"] in (flamebook.PER_USER, flamebook.RANKS_NOT_STORED)
    ]
    for m in compared:
        row, numbers = main_full.loc[(d, m)], numbers_full.loc[(d, m)]
        findings.append(
            f"On **{d}**, {m} reaches test NDCG@20 {row['NDCG@20']} against Single's "
            f"{main_full.loc[(d, 'Single'), 'NDCG@20']} ({row[flamebook.GAIN]}%; "
            f"{flamebook.per_user_text(numbers, numbers_full.loc[(d, 'Single')])}): "
            f"{flamebook.verdict(numbers)} Single, with {row['converged']} runs stopped early"
            f"{flamebook.disagreement(numbers)}."
        )
    others = numbers_full.loc[d].drop(index=["Single", *flames])
    versus = flamebook.against_single(others, numbers_full.loc[(d, "Single")])
    if compared:
        if versus:
            findings[-1] += f" The other methods run there, against Single per test user: {versus}."
        if modules := flamebook.modules_sentence(full, d):
            findings[-1] += f" {modules}."
    elif versus:
        findings.append(
            f"On **{d}**, where FLAME has no full record yet, the methods that ran there, against Single "
            f"({main_full.loc[(d, 'Single'), 'NDCG@20']}) per test user: {versus}."
        )
missing = [d for d in table_datasets if not flamebook.ran(numbers_full.loc[d]).index.isin(flames).any()]
findings.append(
    f"Not run yet (no full record of FLAME from either anchor): {', '.join(missing)}."
    if missing
    else "Every dataset of the table has full FLAME records."
)
display(Markdown("\n\n".join(findings)))

# %% [markdown]
# ### The release's anchors as a reference point
#
# The release ships the frozen networks it trained FLAME with, for amazon-toys, amazon-beauty and
# amazon-games, and they answer two questions that Table 3 leaves open. Is our Single, trained here with
# the full profile, as strong as the network the paper's authors trained? A weak baseline would flatter
# every method compared with it. And how far does FLAME trained from that anchor get beyond the frozen
# network that guided it, which a reader could deploy instead at the same cost? Each anchor is evaluated
# exactly as every run is (the full profile's split, full ranking, history excluded) and compared user by
# user on the test split, as Table 3 compares methods with Single: per user, NDCG@20 averaged over the
# seeds of the compared row, its mean difference from the anchor's in points with a 95% confidence
# interval, and the Wilcoxon signed-rank p.

# %% tags=["hide-input"]
anchor_folder = flamebook.resolve(released_dir)
found, unavailable = released.available(table_datasets, anchor_folder)
anchors = {  # evaluated once per book build (papermill's run), reused by nbval's
    d: flamebook.measured(
        output_dir, f"released-anchor-{d}", lambda d=d: released.anchor_record(d, anchor_folder, device)
    )
    for d in found
}
if anchors:
    anchor_numbers = released.numbers(full, anchors)
    files = ", ".join(f"`{a['file']}`" for a in anchors.values())
    display(
        Markdown(
            f"**Table 4.** The release's anchors ({files}) "
            f"evaluated by `flame_core`, against the `{full_profile}` records of Single and of FLAME trained from "
            "that anchor: validation NDCG@20 (the selected epoch's, mean over seeds), test NDCG@20 and HR@20 "
            "(percent, mean ± sd over seeds) and the per-user paired comparison with the anchor. Protocol as "
            "Table 3."
        )
    )
    display(released.table(anchor_numbers))
    anchor_lines = [
        f"{released.sentence(d, anchor_numbers)} {released.together(d, anchor_numbers, numbers_full)}".rstrip()
        for d in anchors
    ]
else:
    anchor_lines = []
if unavailable:
    anchor_lines.append(f"Not evaluated here (anchors looked for in `{released_dir}`): {'; '.join(unavailable)}.")
display(Markdown("\n\n".join(anchor_lines) or "No dataset of the table has a released anchor."))

# %% [markdown]
# ## Convergence, the paper's way
#
# The paper reports that FLAME reaches Single's best validation NDCG@20 up to
# 7.69 times faster. We measure the same thing in every pair of full records of one seed: the training
# seconds Single needs to reach its own best validation NDCG@20, against the seconds FLAME needs to reach
# that same value (evaluation excluded), once without and once with the seconds spent pretraining
# FLAME's anchor, which the paper's comparison does not count. Seconds are wall-clock times on the device
# each record names, under whatever else that machine ran. Every CPU record so far was trained beside other
# work, and not always at one priority (the amazon-beauty Single ran at the lowest priority while FLAME from
# the released anchor ran at the normal one, and both shared the cores with test runs), so on the CPU their
# wall seconds say little and their epochs are the figure to read. Runs also log each epoch's CPU seconds,
# the training process's own CPU time, which work beside it does not inflate the way it inflates wall time;
# a pair of CPU records that logged them for every epoch compares by those, and Table 5's `clock` column
# says which clock each row read (CPU records written before runs logged CPU seconds have only wall
# seconds; on a GPU the host's CPU time says nothing of the device's work, so GPU records compare by wall
# seconds). A record also names the machine that timed it
# (the CPU's or GPU's model, the cores it could use and torch's threads); two records that name different
# machines do not compare in seconds. Records written before records named their machine say only "cpu" or
# "cuda", and the sentences below Table 5 say where a speed-up in seconds rests on such a pair. FLAME
# trained from the release's anchor is compared the same way, in its own row; the release does not say how
# long its anchor trained, so that row has no figure with the pretraining included.

# %% tags=["hide-input"]
conv_full = flamebook.convergence_table(full, table_datasets, flames)
if len(conv_full):
    summary = flamebook.convergence_summary(conv_full)
    display(
        Markdown(
            f"**Table 5.** Epochs and training seconds to Single's best validation NDCG@20, means over "
            f"the seeds both ran; speed-up = Single's / the method's (above 1: FLAME is faster; the paper "
            f"claims up to {flamebook.PAPER_SPEEDUP}), and the smallest and largest seed's speed-up in epochs "
            "(min, max). A seed where FLAME never reaches Single's best "
            "counts as not reached and leaves its speed-up out; a seed whose two records ran on different "
            "devices, or name different machines, leaves its seconds and their speed-ups out (its epochs still "
            'compare); "machines named" counts, of the seeds whose seconds make the speed-up, those whose records '
            "both name their machine. "
            "FLAME from the released anchor has no anchor seconds: the release does not say how long its anchor "
            "trained; nor has a run whose anchor names another machine than the run's."
        )
    )
    display(summary.round(2))
    lines = [flamebook.convergence_sentence(d, m, r) for (d, m), r in summary.iterrows()]
    display(Markdown("\n\n".join(lines)))
    shown = list(dict.fromkeys(summary.index.get_level_values("dataset")))
    curves_full = pd.concat(
        [flamebook.record_curves(full, d, ["Single", *flames]).assign(dataset=d) for d in shown], ignore_index=True
    )
    fig, axes = plt.subplots(len(shown), 2, figsize=(11, 3.6 * len(shown)), squeeze=False)
    for d, ax_row in zip(shown, axes):
        part = curves_full[curves_full["dataset"] == d]
        for ax, x in zip(ax_row, ("epoch", "seconds")):
            sns.lineplot(part, x=x, y="valid NDCG@20", hue="method", units="seed", estimator=None, ax=ax)
            for best in conv_full.loc[conv_full["dataset"] == d, "Single best valid NDCG@20"].unique():
                ax.axhline(best, color="grey", lw=0.6, ls=":")
            label = x if x == "epoch" else f"{part['clock'].iloc[0]} seconds of training"
            ax.set(title=f"{d}: full records", xlabel=label, ylabel="validation NDCG@20 (%)")
    fig.tight_layout()
    fig.savefig(out / "convergence_full.png", dpi=120)
    plt.show()
else:
    summary = pd.DataFrame()
    display(
        Markdown(
            "No dataset has full records of both Single and FLAME yet: the comparison appears here "
            "once the sweep above has recorded them."
        )
    )

# %% [markdown]
# ## Every committed record
#
# Records of other profiles (shorter budgets, earlier versions of the library) are listed too, grouped by
# dataset, method and profile; each number carries its label, and `converged` says whether every run of a
# group stopped early on validation.

# %% tags=["hide-input"]
if records:
    recs = flamebook.records_frame(records)
    grouped = flamebook.records_summary(recs)
    display(
        Markdown(
            f"**Table 6.** Test metrics (percent) of the {len(records)} committed records in "
            f"`{results_dir}/`, by dataset, method and profile (mean ± sd where a group has several "
            "seeds); `code` names the git revisions that trained each group (`unlogged` for epochs of a "
            "resumed run trained before runs logged their sessions)."
        )
    )
    display(grouped)
else:
    recs = pd.DataFrame()
    display(Markdown(f"No records in `{results_dir}/` yet."))

# %% [markdown]
# ## Convergence under this chapter's profile
#
# How fast does each method learn in this chapter's own runs? We plot validation NDCG@20 after every
# epoch, against the epoch and against the cumulative training seconds (evaluation time excluded). The
# seconds of Ensemble-Guide and FLAME do not include pretraining their anchor, nor CKD's its teachers';
# the last columns of the convergence table add that cost, the pretrained networks' own training seconds
# as the anchor cache stores them.

# %% tags=["hide-input"]
curves = pd.DataFrame(
    [
        {
            "method": display_name(m),
            "seed": s,
            "epoch": row["epoch"],
            "valid NDCG@20": row["valid/NDCG@20"],
            "seconds": row["train_seconds"],
        }
        for (m, s), e in runs.items()
        for row in e.results["history"]
    ]
)
curves["training seconds"] = curves.groupby(["method", "seed"])["seconds"].cumsum()
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
sns.lineplot(curves, x="epoch", y="valid NDCG@20", hue="method", marker="o", errorbar="sd", ax=axes[0])
sns.lineplot(
    curves,
    x="training seconds",
    y="valid NDCG@20",
    hue="method",
    units="seed",
    estimator=None,
    marker="o",
    ax=axes[1],
    legend=False,
)
axes[0].set_xticks(sorted(curves["epoch"].unique()))
fig.suptitle(f"Validation NDCG@20 (%), {dataset}, seeds {seeds}, budget {epochs} epochs, profile '{profile}'")
fig.tight_layout()
fig.savefig(out / "convergence.png", dpi=120)

# %% [markdown]
# `flame_core.analysis.convergence` reads, from a run's history, the first epoch whose validation
# NDCG@20 reaches a fraction of the run's best, and the training seconds spent until then. FLAME's
# speed-up over a method divides the method's seconds by FLAME's: above 1, the method needs longer than
# FLAME to reach the same fraction of *its own* best; below 1, FLAME is the slower one. When every run
# is still improving at the end of its budget, the best is the last epoch and the numbers mostly measure
# seconds per epoch.

# %% tags=["hide-input"]
conv = pd.DataFrame(
    [
        {
            "method": display_name(m),
            "seed": s,
            **convergence(e.results["history"], fraction=fraction),
            "pretraining seconds": pretraining_seconds(e.method, e.data),
        }
        for (m, s), e in runs.items()
    ]
)
conv["seconds incl. pretraining"] = conv["seconds"] + conv["pretraining seconds"]
conv_table = conv.groupby("method", sort=False)[["best", "epochs", "seconds", "seconds incl. pretraining"]].mean()
conv_table["FLAME speed-up"] = conv_table["seconds"] / conv_table.loc["FLAME", "seconds"]
conv_table["FLAME speed-up incl. pretraining"] = (
    conv_table["seconds incl. pretraining"] / conv_table.loc["FLAME", "seconds incl. pretraining"]
)
display(
    Markdown(
        f"**Table 7.** Epochs and training seconds to reach {fraction:.0%} of each run's best "
        f"validation NDCG@20 (means over seeds {seeds}); FLAME speed-up = the method's seconds / FLAME's "
        "seconds (above 1: FLAME gets there faster). "
        f"Protocol: {PROTOCOL}."
    )
)
conv_table.round(2)

# %% [markdown]
# The committed records, when present, usually run longer and at the official `max_len`, so their
# histories show more of each curve. The same reading, per record. Their seconds are wall-clock times on
# the machine and at the date stored in each record, under whatever else that machine was running: compare
# seconds within one source, not across sources.

# %% tags=["hide-input"]
if records:
    rec_conv = pd.DataFrame(
        [
            {
                "method": display_name(r["method"]),
                "dataset": r["dataset"],
                "profile": r["profile"],
                "seed": r["seed"],
                "converged": r["converged"],
                **convergence(r["history"], fraction=fraction),
            }
            for r in records
        ]
    )
    display(
        Markdown(
            f"**Table 8.** Convergence of the committed records in `{results_dir}/` ({fraction:.0%} "
            "of each run's best validation NDCG@20; seconds exclude any anchor pretraining)."
        )
    )
    display(rec_conv.round(2))
else:
    rec_conv = pd.DataFrame()
    print(f"no records in {results_dir}/")

# %% [markdown]
# An interactive version of the curves: hover for the values, click a legend entry to hide a method.
# Where records exist, their longer curves are drawn beside this chapter's runs.

# %% tags=["hide-input"]
inter = curves.assign(source=f"this chapter ({profile})")
if records:
    rec_curves = pd.DataFrame(
        [
            {
                "method": display_name(r["method"]),
                "seed": r["seed"],
                "epoch": row["epoch"],
                "valid NDCG@20": row["valid/NDCG@20"],
                "seconds": row["train_seconds"],
                "source": f"record ({r['profile']})",
            }
            for r in records
            if r["dataset"] == dataset
            for row in r["history"]
        ]
    )
    if len(rec_curves):
        rec_curves["training seconds"] = rec_curves.groupby(["method", "seed"])["seconds"].cumsum()
        inter = pd.concat([inter, rec_curves], ignore_index=True)
inter["run"] = inter["method"] + " seed " + inter["seed"].astype(str) + ", " + inter["source"]
fig = px.line(
    inter,
    x="training seconds",
    y="valid NDCG@20",
    color="method",
    line_group="run",
    line_dash="source",
    markers=True,
    hover_data=["run", "epoch"],
    title=f"Validation NDCG@20 (%) against training seconds, {dataset}",
)
fig.show()

# %% [markdown]
# ## What we learned
#
# - One protocol for every method: leave-one-out, truncation to the last `max_len + 3` items, full
#   ranking with the history excluded (the official code's $0$ does not exclude it), selection on
#   validation NDCG@20 and a single test evaluation.
# - The main table (Table 3) reads the full-profile records: mean ± sd over seeds, how many runs
#   converged, the gain over Single and a per-user paired test; Table 4 measures our Single and FLAME
#   trained from the release's anchor against that anchor itself; convergence (Table 5) counts seconds to
#   Single's best with and without the anchor's pretraining.
# - What the numbers of this build show:

# %% tags=["remove-input"]
valid_by_method = rows.groupby("method", sort=False)["valid NDCG@20"].mean()
flame_valid, single_valid = valid_by_method["FLAME"], valid_by_method["Single"]
quick = (
    f"In this chapter's own runs ({epochs} epochs, profile '{profile}', {dataset}, seeds {seeds}) the best "
    f"mean validation NDCG@20 is {valid_by_method.max():.2f} ({valid_by_method.idxmax()}); FLAME reaches "
    f"{flame_valid:.2f} against Single's {single_valid:.2f}. A budget this short, with lambda near 1, shows how "
    "training starts, not where it ends, and decides nothing about the methods."
)
full_note = (
    ("From the full records: " + " ".join(findings))
    if len(full)
    else ("No full-profile record exists yet, so this build cannot say whether FLAME beats Single.")
)
speed_note = " ".join(lines) if len(summary) else "Convergence speed-ups need full records of both methods."
anchor_note = " ".join(anchor_lines) if anchors else "No released anchor was evaluated in this build."
display(Markdown("\n\n".join([quick, full_note, anchor_note, speed_note])))

# %% [markdown]
# ## Exercises
#
# 1. From the committed full records of one dataset, find the first epoch where FLAME's validation
#    NDCG@20 reaches Single's best, seed by seed. Does the answer depend on the seed?
# 2. The alignment weight is annealed over $R = 200$ epochs whatever the budget. Train FLAME with
#    `anneal_epochs=epochs` (the schedule compressed into the budget) and compare its first epochs with
#    the default's: which is closer to Single, and why?
# 3. Table 2 uses Single's scores. Compute the same comparison for FLAME. Is the gap between the two
#    history conventions larger or smaller, and why could it depend on the method?
# 4. Change `fraction` to 0.8 and 0.99. Which speed-up ratios are stable, and which are artefacts of a
#    short budget?
# 5. Train one epoch of Single at the official window `max_len = 50`. How do the number of training
#    samples and the seconds per epoch change on MovieLens-100K, where the truncation keeps only each
#    user's last `max_len + 3` items?
#
# ### Solutions
#
# Each solution is a cell to unfold; it runs when the chapter runs, so its numbers are this build's.

# %% [markdown]
# **Solution 1.** `flamebook.convergence_table`, read by Table 5, holds the answer seed by seed for every seed
# both methods ran.

# %% tags=["hide-cell"]
if len(conv_full):
    columns = ["dataset", "method", "seed", "Single best valid NDCG@20", "Single epochs", "method epochs", "reached"]
    print(conv_full[columns].round(2).to_string(index=False))
else:
    print("no dataset has full records of both Single and FLAME yet; rerun after the sweep has recorded them")

# %% [markdown]
# **Solution 2.** The compressed schedule turns the alignment off within the budget; the default keeps it
# near full weight.

# %% tags=["hide-cell"]
compressed = flamebook.experiment(
    dataset, "flame", epochs, runs_dir, max_len=max_len, device=device, seed=seeds[0], anneal_epochs=epochs
)
default, single_run = runs[("flame", seeds[0])], runs[("single", seeds[0])]
print(
    pd.DataFrame(
        {
            "lambda (R = 200)": [h["lambda"] for h in default.results["history"]],
            f"lambda (R = {epochs})": [h["lambda"] for h in compressed.results["history"]],
            "valid NDCG@20 (R = 200)": [h["valid/NDCG@20"] for h in default.results["history"]],
            f"valid NDCG@20 (R = {epochs})": [h["valid/NDCG@20"] for h in compressed.results["history"]],
            "Single": [h["valid/NDCG@20"] for h in single_run.results["history"]],
        },
        index=pd.RangeIndex(1, epochs + 1, name="epoch"),
    ).round(3)
)

# %% [markdown]
# **Solution 3.** The same re-ranking with FLAME's scores.

# %% tags=["hide-cell"]
flame_run = runs[("flame", seeds[0])]
with torch.no_grad():
    f_scores = torch.cat([flame_run.method.scores(inputs[i : i + 1024]) for i in range(0, len(inputs), 1024)])
f_official = f_scores.clone().scatter_(1, history, 0.0)
f_official[:, 0] = float("-inf")
f_gap = {
    k: metrics_from_ranks(target_ranks(mask_history(f_scores.clone(), history), targets))[k]
    - metrics_from_ranks(target_ranks(f_official, targets))[k]
    for k in KEYS
}
f_negative = 100 * (f_scores.gather(1, targets[:, None]) < 0).double().mean().item()
print(pd.DataFrame({"Single": gap, "FLAME": pd.Series(f_gap)}).round(3))
print(
    f"targets with a negative score: Single {negative_share:.1f}%, FLAME {f_negative:.1f}% (the gap grows with "
    "that share: it depends on the scale the method gives its scores)"
)

# %% [markdown]
# **Solution 4.** The convergence table at two more fractions.

# %% tags=["hide-cell"]
for frac in (0.8, 0.99):
    c = (
        pd.DataFrame(
            [
                {"method": display_name(m), **convergence(e.results["history"], fraction=frac)}
                for (m, s), e in runs.items()
            ]
        )
        .groupby("method", sort=False)["seconds"]
        .mean()
    )
    print(f"fraction {frac}: FLAME speed-up = " + ", ".join(f"{m} {v / c['FLAME']:.2f}" for m, v in c.items()))

# %% [markdown]
# **Solution 5.** One epoch of Single at `max_len` 50 against the chapter's window.

# %% tags=["hide-cell"]
wide = flamebook.experiment(dataset, "single", 1, runs_dir, max_len=50, device=device, seed=seeds[0])
narrow = runs[("single", seeds[0])]
print(
    f"training samples: {len(narrow.split.train_targets):,} at max_len {max_len}, "
    f"{len(wide.split.train_targets):,} at max_len 50"
)
print(
    f"seconds per epoch: {narrow.results['history'][0]['train_seconds']:.1f} vs "
    f"{wide.results['history'][0]['train_seconds']:.1f}; valid NDCG@20 after one epoch: "
    f"{narrow.results['history'][0]['valid/NDCG@20']:.2f} vs {wide.results['history'][0]['valid/NDCG@20']:.2f}"
)

# %% tags=["remove-cell"]
random_ndcg20 = 100 * sum(1 / np.log2(r + 2) for r in range(20)) / runs[("single", seeds[0])].data.num_items
all_metrics = rows[KEYS + ["valid NDCG@20"]].to_numpy()
metrics = {
    "chapter": "03_training",
    "dataset": dataset,
    "profile": profile,
    "epochs": epochs,
    "seeds": seeds,
    "max_len": max_len,
    "test": rows.groupby("method", sort=False)[KEYS].mean().to_dict(orient="index"),
    "valid_NDCG@20": valid_by_method.to_dict(),
    "convergence": conv_table.reset_index().to_dict(orient="records"),
    "history_convention": history_effect.to_dict(orient="index"),
    "negative_target_share": negative_share,
    "records": len(records),
    "full_records": len(full),
    "main_table": main_full.reset_index().to_dict(orient="records"),
    "released_anchors": {d: {"valid": a["valid"], "test": a["test"]} for d, a in anchors.items()},
    "released_unavailable": unavailable,
    "convergence_full": summary.reset_index().to_dict(orient="records"),
    "checks": [
        {"name": "methods present", "value": int(rows["method"].nunique()), "op": "==", "bound": len(methods)},
        {"name": "runs present", "value": len(runs), "op": "==", "bound": len(methods) * len(seeds)},
        {
            "name": "every method learns: lowest mean valid NDCG@20 over a random ranking's",
            "value": float(valid_by_method.min() / random_ndcg20),
            "op": ">",
            "bound": 2.0,
        },
        {
            "name": "main table: a row per dataset and method",
            "value": len(main_full),
            "op": "==",
            "bound": len(table_datasets) * len(variants),
        },
        {
            "name": "main table: cells without a record say 'not run' (or 'no released anchor')",
            "value": int(
                sum(
                    main_full.loc[(d, v)].isin([flamebook.NOT_RUN, flamebook.NO_ANCHOR]).all()
                    == any(r["dataset"] == d and flamebook.variant(r) == v for r in full)
                    for d in table_datasets
                    for v in variants
                )
            ),
            "op": "==",
            "bound": 0,
        },
        {
            "name": "released anchors: each of the table's datasets with one is evaluated or says why not",
            "value": len(found) + len(unavailable),
            "op": "==",
            "bound": sum(d in RELEASED_ANCHORS for d in table_datasets),
        },
        {
            "name": "released Toys anchor: test NDCG@20 off the published 7.02 by (where evaluated)",
            "value": abs(anchors["amazon-toys"]["test"]["NDCG@20"] - 7.02) if "amazon-toys" in anchors else 0.0,
            "op": "<",
            "bound": 0.005,
        },
        {
            "name": "records of the full profile that stored per-user ranks",
            "op": "==",
            "bound": len(full),
            "value": sum(bool(r.get("test_ranks")) for r in full),
        },
        {"name": "metrics >= 0", "value": float(all_metrics.min()), "op": ">=", "bound": 0.0},
        {"name": "metrics <= 100", "value": float(all_metrics.max()), "op": "<=", "bound": 100.0},
        {"name": "convergence epochs positive", "value": int(conv["epochs"].min()), "op": ">", "bound": 0},
        {"name": "convergence seconds positive", "value": float(conv["seconds"].min()), "op": ">", "bound": 0.0},
        {
            "name": "history excluded never lowers HR@20",
            "value": float(
                history_effect.loc["history score -inf (ours)", "HR@20"]
                - history_effect.loc["history score 0 (official)", "HR@20"]
            ),
            "op": ">=",
            "bound": 0.0,
        },
        {
            "name": "one anchor for every seed (spread of its test NDCG@20 over the FLAME runs)",
            "value": float(anchor_check["anchor test NDCG@20"].max() - anchor_check["anchor test NDCG@20"].min()),
            "op": "<=",
            "bound": 1e-6 if device == "cpu" else 0.05,
        },
        {
            "name": "anchor seed differs from every learnable seed",
            "value": int(anchor_check["anchor seed"].isin(seeds).sum()),
            "op": "==",
            "bound": 0,
        },
        {
            "name": "records carry provenance",
            "value": sum(all(r.get(k) for k in ("command", "git", "date", "dataset_stats")) for r in records),
            "op": "==",
            "bound": len(records),
        },
    ],
}
print(flamebook.write_metrics(output_dir, metrics))
pd.DataFrame(metrics["checks"])
