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
# # Related methods: EMKD, CANet and multi-teacher distillation
#
# FLAME is not the only way to get more than one network's worth of knowledge into a sequential
# recommender. This chapter compares it with three related systems that `flame_core` implements behind
# the same `Method` interface: **EMKD**, an ensemble of networks that distil into each other and is
# served whole; **CANet**, one supernet from which a router picks a smaller or larger submodel per user;
# and **CKD**, a student distilled from several pretrained teachers, easy samples first. EMKD and CANet
# are systems the FLAME paper relates itself to; multi-teacher distillation is our addition, the closest
# design to FLAME's frozen anchor (a pretrained network teaching a learnable one), not a baseline of the
# paper. Each gets a
# section on what it trains, what it runs at inference and its extra losses, with the settings read from
# the library's `TrainConfig`, and a plain statement of where our version departs from the paper. Then
# all five methods (Single, FLAME and the three) are trained under the chapter's parameters for every
# seed, and a table puts their accuracy next to their cost: seconds per training epoch, inference time,
# trainable parameters, networks evaluated at inference and the networks each must pretrain first.
# CANet's routing and its average cost per user get their own figures.
#
# **After this chapter you can** describe what EMKD, CANet and multi-teacher distillation train and serve,
# and where our versions depart from their papers; compare methods on accuracy next to training cost,
# inference cost, parameters and pretraining; and read CANet's routing and cost per user.
#
# **Prerequisites.** Chapters 1 and 3; knowledge distillation (a student matching a teacher's softened
# output distribution, KL divergence); the Gumbel-softmax trick (sampling a discrete choice with a
# gradient); curriculum learning (easy samples first).

# %% tags=["hide-input"]
import math

import numpy as np
import pandas as pd
import plotly.express as px
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib import pyplot as plt

import flamebook
from flame_core.canet import ROUTER_HIDDEN
from flame_core.experiments import load, load_records, pretrained_metrics, pretraining_seconds
from flame_core.methods import build_method
from flame_core.registry import display_name

# %% tags=["parameters"]
dataset = "ml-100k"  # a name (ml-100k, or a file in $FLAME_DATA_DIR) or a path
device = "cpu"  # "cpu", "cuda" or "auto"
epochs = 3  # epoch budget of every method (and of the pretrained anchor and teachers)
seeds = [42, 43]  # one run per method and seed
max_len = 10  # L, the input window (the official default is 50)
profile = "quick"  # the label of this parameter set, printed with every table
runs_dir = "_build/runs"  # finished runs are reused from here (shared with the other chapters)
output_dir = "_build/outputs/05_related_methods"  # metrics.json and figures
results_dir = "results"  # committed provenance records (python -m flame_core train ... --record results)
ndcg_floor = 0.5  # check: every related method's valid NDCG@20 (percent) is above this floor

# %% tags=["hide-input"]
out = flamebook.setup(output_dir, seed=seeds[0])
methods = ["single", "flame", "emkd", "canet", "ckd"]
PROTOCOL = flamebook.protocol(dataset, max_len, epochs, profile, device, seeds)
print(PROTOCOL)

# %% [markdown]
# ## The settings of the three systems
#
# Each related method reads its own settings object of `TrainConfig` (`cfg.emkd`, `cfg.canet`, `cfg.ckd`),
# whose names carry the method's prefix (`emkd_`, `canet_`, `ckd_`) on the command line and in records.
# The runs of this chapter use the defaults; the table lists them as the configuration of the first seed
# holds them. The protocol's settings (`batch_size`, `lr`) are the official FLAME release's, as for every
# other method in the book.

# %%
# NBVAL_CHECK_OUTPUT
cfgs = {m: flamebook.configs(m, epochs, max_len, device=device, seed=seeds[0])[1] for m in methods}
settings = pd.DataFrame(
    [
        {"method": display_name(m), "setting": name, "value": str(value)}
        for m in ("emkd", "canet", "ckd")
        for name, value in cfgs[m].settings().items()
    ]
)
shared = {k: getattr(cfgs["emkd"], k) for k in ("batch_size", "lr")}
print(f"protocol: {shared}")
settings.set_index(["method", "setting"])

# %% [markdown]
# To describe each system with its real sizes we build the three methods, untrained, on the chosen
# dataset (building is cheap; nothing is trained or pretrained here).

# %%
data, split = load(dataset, max_len)
model = flamebook.configs("single", epochs, max_len)[0]
built = {m: build_method(data.num_items, model, cfgs[m]) for m in ("emkd", "canet", "ckd")}
print(data.stats())


# %% tags=["hide-input"]
def md_table(rows: dict) -> Markdown:
    """A two-column markdown table (aspect, value) from a dict."""
    return Markdown("| | |\n|---|---|\n" + "\n".join(f"| **{k}** | {v} |" for k, v in rows.items()))


# %% [markdown]
# ## EMKD: an ensemble that distils into itself
#
# EMKD (Du et al., SIGIR 2023, "Ensemble Modeling with Contrastive Knowledge Distillation for Sequential
# Recommendation") trains $N$ networks in parallel. Besides each member's next-item loss, the members
# exchange knowledge in two ways: *logit distillation*, a symmetric KL divergence between every pair of
# members' softened score distributions, and *contrastive distillation*: each sequence gets an augmented
# view (a contiguous crop, or item masking), and an InfoNCE loss pulls together a member's representations
# of the original and the augmented sequence (intra-network) and one member's original with another
# member's augmented view (cross-network), with the other sequences of the batch as negatives. All
# members are kept and their scores summed at inference, so EMKD serves $N$ networks.
#
# **Where we adapted it.** EMKD's members are BERT4Rec networks trained by masked-item prediction; ours
# are the same SASRec as every other method here, trained with next-item cross-entropy, so that the
# comparison isolates the training scheme rather than the backbone. EMKD's attribute prediction task is
# omitted: our datasets carry no item attributes. Because SASRec has no mask token, masking an item
# means deleting it (`flame_core.augment.delete`).

# %% tags=["remove-input"]
# NBVAL_CHECK_OUTPUT
c = cfgs["emkd"].emkd
md_table(
    {
        "what trains": f"{c.emkd_members} SASRec members (seeds s..s+{c.emkd_members - 1}), "
        f"{built['emkd'].num_parameters()['trainable']:,} parameters in all",
        "losses": f"sum of members' L_rec + {c.emkd_distill_weight:g} × symmetric KL (temperature "
        f"{c.emkd_temperature:g}) + {c.emkd_contrast_weight:g} × (intra + cross InfoNCE, tau {c.emkd_tau:g})",
        "augmentation": f"per sequence, with probability 1/2 each: a crop keeping {c.emkd_crop:.0%} of its items, "
        f"or deletion of {c.emkd_mask:.0%} of them",
        "at inference": f"sum of the {c.emkd_members} members' scores ({c.emkd_members} networks)",
        "pretraining": "none",
    }
)

# %% [markdown]
# ## CANet: one person, one model
#
# CANet (Liu et al., "One Person, One Model") serves each user with a submodel of its own size. A
# supernet holds the weights of the largest model; a submodel with embedding size $e$, hidden size $h$
# and depth $d$ uses the first $e$ or $h$ rows and columns of every weight and exits after block $d$, so
# all submodels share their weights. A light router reads the user's sequence and picks $e$, $h$ and $d$
# with a Gumbel-softmax (hard in the forward pass, differentiable in the backward pass), so the routing is
# learnt from the recommendation loss itself. Two regularisers shape it: a *uniform* loss keeps the
# batch's routing distribution from collapsing onto one submodel, and a *guide* loss pushes easy users
# (those the smallest submodel already ranks well) towards small submodels and hard users towards
# large ones. Its selling point is inference cost: the average multiply-adds per user, which we report
# against the largest submodel's.
#
# **Where we adapted it.** The paper's routing space is for larger hidden sizes; we scale it to the
# book's $d = 64$: embedding and hidden sizes from `canet_sizes` and depth from one block up to the
# backbone's number of blocks. The router is a one-block SASRec with its own, smaller embeddings.

# %% tags=["remove-input"]
# NBVAL_CHECK_OUTPUT
c, canet_model = cfgs["canet"].canet, built["canet"]
md_table(
    {
        "what trains": f"a SASRec supernet (D = {model.hidden}, {model.layers} blocks, plus input and output "
        f"transformations and residual scales) and a router (a 1-block SASRec with d = {ROUTER_HIDDEN}); "
        f"{canet_model.num_parameters()['trainable']:,} parameters in all",
        "routing space": f"embedding size × hidden size in {set(c.canet_sizes)}, depth in "
        f"{set(range(1, model.layers + 1))}: {len(canet_model.routes)} submodels",
        "losses": f"L_rec of the routed submodel + {c.canet_uniform_weight:g} × uniform routing loss + "
        f"{c.canet_guide_weight:g} × guide loss (easy user: the smallest submodel ranks the target in "
        f"its top {c.canet_guide_k})",
        "router": f"Gumbel-softmax, tau {c.canet_tau:g}, hard and straight-through in training; argmax at inference",
        "at inference": "the router and the one submodel it picks (1 network, sliced)",
        "pretraining": "none",
    }
)

# %% [markdown]
# ## CKD: several teachers, easy samples first
#
# Multi-teacher knowledge distillation after CKD-MDSR: a student learns from several pretrained teachers
# at once. For every training sample, each teacher's softened distribution over the batch's targets is a
# distillation target, and the teachers are weighted per sample by how *confident* the teacher is in the
# true target and how much it *agrees* with the other teachers, so a teacher that is unsure or
# idiosyncratic on a sample counts less there. A curriculum orders the training samples from easy to hard
# (difficulty: the teachers' mean cross-entropy of the target) and lets epoch $e$ train on the easiest
# share $c(e) = \min(1, c_0 + (1 - c_0)\,e/E)$ of them. Only the student is served.
#
# **Where we adapted it.** The teachers are Single SASRecs of different seeds and sizes, pretrained on the
# same split and cached exactly like FLAME's anchor (a teacher with the same seed and size *is* the anchor
# of that seed). The distillation uses the batch's targets as candidates rather than all items.

# %% tags=["remove-input"]
# NBVAL_CHECK_OUTPUT
c, ckd_model = cfgs["ckd"].ckd, built["ckd"]
teachers = pd.DataFrame(
    [
        {"teacher": name, "hidden": m.hidden, "seed": t.seed, "epoch budget": t.epochs}
        for name, m, t in ckd_model.pretrained_specs()
    ]
).set_index("teacher")
display(
    md_table(
        {
            "what trains": f"the student, a default SASRec (seed s), {ckd_model.num_parameters()['trainable']:,} "
            f"parameters; the {c.ckd_teachers} teachers are frozen "
            f"({ckd_model.num_parameters()['frozen']:,} parameters)",
            "losses": f"L_rec + {c.ckd_distill_weight:g} × teacher-weighted KL to each teacher (temperature "
            f"{c.ckd_temperature:g}, in-batch targets as candidates)",
            "curriculum": f"c0 = {c.ckd_curriculum_start:g}, E = {c.ckd_curriculum_epochs}",
            "at inference": "the student only (1 network)",
            "pretraining": f"{c.ckd_teachers} teachers (below)",
        }
    )
)
print(f"teachers of seed {seeds[0]}:")
display(teachers)
print(
    "share of the training samples per epoch c(e):",
    {e: round(ckd_model.sample_share(e), 3) for e in range(1, epochs + 1)},
)

# %% [markdown]
# Note what the last line means for this chapter's budget: with a horizon $E$ longer than the epoch
# budget, CKD never sees its whole training set, and each of its epochs is shorter than the others'.
#
# ## All methods under one budget
#
# Each method is trained once per seed with the default settings, by `flamebook.experiment`, which reuses
# a finished run with the same data and settings from `runs_dir` (chapter 3 trains the same runs when the
# book is built in order). FLAME first pretrains its anchor and CKD its teachers, or finds them in the
# anchor cache.

# %%
runs = {
    (m, s): flamebook.experiment(dataset, m, epochs, runs_dir, max_len=max_len, device=device, seed=s)
    for m in methods
    for s in seeds
}
print({f"{m}/{s}": ("reused" if e.reused else "trained") for (m, s), e in runs.items()})


# %% tags=["hide-input"]
KEYS = ["HR@20", "NDCG@10", "NDCG@20"]
rows = pd.DataFrame(
    [
        {
            "method": display_name(m),
            "seed": s,
            **{k: e.results["test"][k] for k in KEYS},
            "valid NDCG@20": e.results["valid"]["NDCG@20"],
            "s / epoch": float(np.median([h["train_seconds"] for h in e.results["history"]])),
            "infer s / 1k users": e.results["inference_seconds_per_1000_users"],
            "trainable params": e.results["parameters"]["trainable"],
            "networks at inference": e.method.served_networks,
            "pretrained networks": len(e.method.pretrained_specs()),
            "pretraining s": pretraining_seconds(e.method, e.data),
            "sample share / epoch": float(np.mean([e.method.sample_share(h["epoch"]) for h in e.results["history"]])),
        }
        for (m, s), e in runs.items()
    ]
)
rows.round(2)

# %% [markdown]
# ## Accuracy next to cost
#
# Test metrics of the selected epoch are mean ± standard deviation over the seeds (with two seeds the
# standard deviation is a rough indication only). Seconds per epoch are the median over a run's epochs
# of its training time (evaluation excluded), averaged over seeds; the ratio divides by Single's. The
# pretraining seconds are those of the cached anchor or teachers, summed, as the anchor cache stores
# them (`flame_core.anchor.cached_anchor_results`). **Timings are wall-clock seconds on this machine and
# vary with its load**: read the ratios, not the absolute values, and expect them to move by some tens of
# percent between builds.

# %% tags=["hide-input"]
by_method = rows.groupby("method", sort=False)
table = by_method[KEYS + ["valid NDCG@20"]].agg(flamebook.mean_sd)
cost = by_method[["s / epoch", "infer s / 1k users", "pretraining s", "sample share / epoch"]].mean()
table["s / epoch"] = cost["s / epoch"].map("{:.2f}".format)
table["× Single"] = (cost["s / epoch"] / cost.loc["Single", "s / epoch"]).map("{:.2f}".format)
table["infer s / 1k users"] = cost["infer s / 1k users"].map("{:.3f}".format)
table["trainable params"] = by_method["trainable params"].first().map("{:,}".format)
table["networks at inference"] = by_method["networks at inference"].first()
table["pretrained networks"] = by_method["pretrained networks"].first()
table["pretraining s"] = cost["pretraining s"].map("{:.1f}".format)
table["sample share / epoch"] = cost["sample share / epoch"].map("{:.2f}".format)
display(
    Markdown(
        f"**Table 1.** Accuracy (test, percent, mean ± sd over seeds {seeds}) and cost of FLAME and "
        f"the related methods. Protocol: {PROTOCOL}. Seconds are wall-clock on this machine and vary "
        "with its load; `pretraining s` is the training time of the anchor or teachers (from the anchor "
        "cache), not included in `s / epoch`; `sample share / epoch` is the share of the training samples an "
        "epoch visits (CKD's curriculum)."
    )
)
table

# %% [markdown]
# How to read the cost columns:
#
# - **EMKD** pays for its members twice: every training step runs them on the original and the augmented
#   sequences, and inference evaluates all of them (`networks at inference`).
# - **FLAME** evaluates its modular paths in training, but serves one network; its anchor is pretrained
#   once per dataset and settings (`pretrained networks` 1).
# - **CANet** trains one supernet plus a router, and its trainable parameters are those of the largest
#   submodel plus the router's; at inference it runs the router and one sliced submodel. On a CPU
#   with small batches, grouping users by route costs time of its own, so its measured seconds can
#   exceed what its multiply-adds (next section) suggest.
# - **CKD** trains one student but pretrains its teachers first and runs them, without gradients, in
#   every step. Under the curriculum its early epochs visit only part of the samples, which lowers its
#   seconds per epoch without making a step cheaper.
#
# ## The members and the teachers
#
# EMKD's test record holds each member's NDCG@20 beside the ensemble's, and the library evaluates CKD's
# frozen teachers alone (`experiments.pretrained_metrics`): does the served model beat its parts?

# %% tags=["hide-input"]
parts = []
for s in seeds:
    emkd, ckd = runs[("emkd", s)], runs[("ckd", s)]
    members = {k.split("/")[0]: v for k, v in emkd.results["test"].items() if k.startswith("member")}
    parts += [{"seed": s, "method": "EMKD", "network": k, "test NDCG@20": v} for k, v in members.items()]
    parts.append(
        {
            "seed": s,
            "method": "EMKD",
            "network": "sum of members (served)",
            "test NDCG@20": emkd.results["test"]["NDCG@20"],
        }
    )
    for name, metrics_ in pretrained_metrics(ckd.method, ckd.split).items():
        parts.append({"seed": s, "method": "CKD", "network": name, "test NDCG@20": metrics_["NDCG@20"]})
    parts.append(
        {"seed": s, "method": "CKD", "network": "student (served)", "test NDCG@20": ckd.results["test"]["NDCG@20"]}
    )
parts = pd.DataFrame(parts)
display(
    Markdown(
        f"**Table 2.** Test NDCG@20 (percent) of EMKD's members and CKD's teachers alone, against the "
        f"model each method serves. Protocol: {PROTOCOL}."
    )
)
display(parts.pivot_table(index=["method", "network"], columns="seed", values="test NDCG@20", sort=False).round(2))
served = parts["network"].str.endswith("(served)")
best_part = parts[~served].groupby(["method", "seed"])["test NDCG@20"].max()
gain = parts[served].set_index(["method", "seed"])["test NDCG@20"] - best_part
print("served model minus its best part (points):", {f"{m}/{s}": round(v, 2) for (m, s), v in gain.items()})

# %% [markdown]
# A positive difference means the served model beats the best of its parts. Under a budget of a few epochs
# this need not hold for either method: EMKD's members are trained from scratch with two extra loss terms,
# and CKD's student has seen only part of its training set (CKD's curriculum) while its teachers were
# trained on all of it for the same number of epochs.
#
# ## CANet: cost per user and routing
#
# `CANet.report` routes every test user with the selected weights and counts the multiply-adds of the
# submodel each one gets, on that user's real tokens (input transformation, the blocks up to the exit,
# the classifier, and the scores of all items); one multiply-add is two FLOPs. The largest submodel's
# figure, over the same users, is the reference: a ratio below 1 is CANet's saving. The router's own
# cost is listed beside it.

# %% tags=["hide-input"]
canet_rows = pd.DataFrame(
    [
        {
            "seed": s,
            **{
                k: runs[("canet", s)].results["report"][k]
                for k in (
                    "users",
                    "macs_per_user",
                    "flops_per_user",
                    "largest_macs_per_user",
                    "relative_cost",
                    "router_macs_per_user",
                )
            },
        }
        for s in seeds
    ]
).set_index("seed")
canet_rows["largest_flops_per_user"] = 2 * canet_rows["largest_macs_per_user"]
display(
    Markdown(
        f"**Table 3.** CANet's average inference cost per test user (multiply-adds and FLOPs), "
        f"against its largest submodel. Protocol: {PROTOCOL}."
    )
)
canet_rows.style.format(
    {c: "{:,.0f}" for c in canet_rows.columns if c != "relative_cost"} | {"relative_cost": "{:.3f}"}
)

# %% [markdown]
# Where the users go: the share of test users per submodel (embedding size, hidden size, depth) and per
# decision.

# %% tags=["hide-input"]
routing = pd.DataFrame(
    [
        {"seed": str(s), "route": route, "share": share}
        for s in seeds
        for route, share in runs[("canet", s)].results["report"]["routes"].items()
    ]
)
decisions = pd.DataFrame(
    [
        {"seed": str(s), "option": f"{d} {opt}", "share": share}
        for s in seeds
        for d in ("embedding", "hidden", "depth")
        for opt, share in runs[("canet", s)].results["report"][d].items()
    ]
)
fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1.3]})
sns.barplot(routing, x="route", y="share", hue="seed", ax=axes[0])
axes[0].tick_params(axis="x", rotation=60, labelsize=8)
axes[0].set(ylabel="share of test users", title="per submodel (e: embedding, h: hidden, d: depth)")
sns.barplot(decisions, y="option", x="share", hue="seed", ax=axes[1], legend=False)
axes[1].set(xlabel="share of test users", ylabel="", title="per decision")
fig.suptitle(f"CANet routing of the test users, {dataset}, seeds {seeds}, {epochs} epochs, profile '{profile}'")
fig.tight_layout()
fig.savefig(out / "canet_routing.png", dpi=120)
plt.show()
top = routing.loc[routing.groupby("seed")["share"].idxmax()].set_index("seed")
print("most frequent submodel per seed:", {s: f"{r.route} ({r.share:.1%} of users)" for s, r in top.iterrows()})

# %% [markdown]
# The router can concentrate most users on one submodel: the uniform loss that counters this has a small
# weight (`canet_uniform_weight` in the settings table), and the guide loss pulls every user that the
# smallest submodel already ranks well towards small sizes. When that happens, CANet's average cost is
# close to that one submodel's and its accuracy is that of a small model; whether a longer budget or a
# larger uniform weight spreads the users out is exercise 3. What holds at any budget is the accounting:
# the cost of a user is the cost of the submodel the router picks for that user.
#
# ## Accuracy against training cost, interactively
#
# One point per method and seed: seconds per training epoch against test NDCG@20. Hover for the details
# of a run; click a legend entry to hide a method.

# %% tags=["hide-input"]
points = rows.assign(seed=rows["seed"].astype(str))
fig = px.scatter(
    points,
    x="s / epoch",
    y="NDCG@20",
    color="method",
    symbol="seed",
    size="networks at inference",
    hover_data={
        "valid NDCG@20": ":.2f",
        "HR@20": ":.2f",
        "infer s / 1k users": ":.3f",
        "trainable params": ":,",
        "pretrained networks": True,
        "pretraining s": ":.1f",
    },
    title=f"Test NDCG@20 (%) against training seconds per epoch, {dataset}, profile '{profile}'",
)
fig.update_layout(
    height=450, xaxis_title="median training seconds per epoch (this machine)", yaxis_title="test NDCG@20 (%)"
)
fig.show()

# %% [markdown]
# ## Results from committed records
#
# Longer runs are made with the command line and stored under `results/` with their provenance (the
# command, git revision, dataset statistics, seed, epoch budget, whether the run converged, device and
# date), for example
#
# ```bash
# python -m flame_core train --method ckd --dataset ml-100k --epochs 50 --seed 42 --record results --profile budget-50
# ```
#
# The table groups the records of this chapter's five methods by dataset, method and profile.

# %% tags=["hide-input"]
records = [r for r in load_records(flamebook.resolve(results_dir)) if r["method"] in methods]
if records:
    recs = flamebook.records_frame(records, KEYS)
    grouped = flamebook.records_summary(recs, KEYS)
    missing = sorted(set(display_name(m) for m in ("emkd", "canet", "ckd")) - set(recs["method"]))
    display(
        Markdown(
            f"**Table 4.** Test metrics (percent) of the {len(records)} committed records of these methods "
            f"in `{results_dir}/`, each group labelled with its profile, epoch budget and max_len "
            "(mean ± sd where a group has several seeds). `converged` is true only if every run "
            "stopped early on validation; `code` names the git revisions that trained the group. "
            + (f"No records yet for {', '.join(missing)}." if missing else "")
        )
    )
    display(grouped)
else:
    missing = [display_name(m) for m in ("emkd", "canet", "ckd")]
    display(
        Markdown(
            f"No records of these methods in `{results_dir}/` yet: the table stays empty until a "
            "command such as the one above has been run with `--record`."
        )
    )

# %% [markdown]
# ## What we learned
#
# - The three related systems spend their extra effort in different places. EMKD trains and serves
#   several networks; CANet trains one supernet and a router, and serves a submodel whose size varies
#   per user; CKD pretrains several teachers, trains one student with them and serves the student. FLAME
#   pretrains one anchor, trains one learnable network against its modular paths and serves that network.
# - Our versions keep SASRec for every method (EMKD's BERT4Rec and attribute task are not used), scale
#   CANet's routing space to $d = 64$, and build CKD's teachers as cached Single runs like FLAME's anchor.
# - Table 1 compares them under one protocol. Under the quick profile it is a few epochs on one small
#   dataset: no method has converged and CKD's curriculum has not reached its full training set, so the
#   accuracy columns rank how fast each method starts, not where it ends; the paper-scale comparison
#   needs the full profile. What the quick numbers do show, and what generalises, is the cost
#   structure: the networks evaluated at inference, the pretraining each method needs, the ratios of
#   seconds per epoch (within one machine and one build), and CANet's average cost per user against its
#   largest submodel, which follows from where its router sends the users.
# - What this build's numbers show:

# %% tags=["remove-input"]
ndcg = by_method["NDCG@20"].mean()
ratio = cost["s / epoch"] / cost.loc["Single", "s / epoch"]
canet_cost = np.mean([runs[("canet", s)].results["report"]["relative_cost"] for s in seeds])
lines = [
    f"Test NDCG@20 after {epochs} epochs ({profile} profile, {dataset}, seeds {seeds}): "
    + ", ".join(f"{m} {v:.2f}" for m, v in ndcg.sort_values(ascending=False).items())
    + f". FLAME is {'above' if ndcg['FLAME'] > ndcg['Single'] else 'below'} Single by "
    f"{abs(ndcg['FLAME'] - ndcg['Single']):.2f} points in this budget.",
    "Seconds per epoch against Single's: "
    + ", ".join(f"{m} {v:.2f}x" for m, v in ratio.items())
    + f"; CANet serves its users at {canet_cost:.2f} of its largest submodel's multiply-adds, EMKD with "
    f"{int(by_method['networks at inference'].first()['EMKD'])} networks, the others with one.",
]
full = [r for r in records if r["profile"] == "full"]  # the paper's protocol, whatever this build's profile
names = [display_name(m) for m in methods]
for d in sorted({r["dataset"] for r in full}):
    t = flamebook.main_numbers(full, [d], names).loc[d]
    if len(ran := flamebook.ran(t)) > 1 and "Single" in ran.index:
        lines.append(
            f"Under the full protocol on {d} (records, at most 200 epochs with early stopping, max_len 50): "
            f"{flamebook.records_sentence(t)}."
        )
display(Markdown("\n\n".join(lines)))

# %% [markdown]
# ## Exercises
#
# 1. From the runs' histories, which method gains most validation NDCG@20 between its first and its last
#    epoch? What would a longer budget change for CKD, whose curriculum has not reached every sample?
# 2. EMKD with `emkd_members = 2` has the same number of networks as Ensemble-Scratch in chapter 1. Train
#    it (`flamebook.experiment(..., emkd_members=2)`) and compare its accuracy and its seconds per epoch
#    with Ensemble-Scratch's: what do the distillation and the contrastive views add?
# 3. Set `canet_uniform_weight = 1.0`. How do the routing distribution and the average cost per user move?
# 4. CKD's teacher `teacher0` of seed $s$ is a Single SASRec of seed $s+1$, pretrained and cached like
#    FLAME's anchor (whose seed is `anchor_seed`, 0). Train CKD with a single teacher
#    (`ckd_teachers = 1`) and compare it with FLAME: both distil from one pretrained SASRec, one through
#    its output distribution, the other through modular representations.
#
# ### Solutions
#
# Each solution is a cell to unfold; it runs when the chapter runs, so its numbers are this build's.

# %% [markdown]
# **Solution 1.** Gains over the budget, from each run's history (mean over seeds).

# %% tags=["hide-cell"]
gains = pd.DataFrame(
    [
        {
            "method": display_name(m),
            "gain": e.results["history"][-1]["valid/NDCG@20"] - e.results["history"][0]["valid/NDCG@20"],
        }
        for (m, s), e in runs.items()
    ]
)
gains = gains.groupby("method", sort=False)["gain"].mean().sort_values(ascending=False)
print(
    "validation NDCG@20 gained from the first to the last epoch: "
    + ", ".join(f"{m} {v:+.2f}" for m, v in gains.items())
)
ckd_cfg = cfgs["ckd"].ckd
print(
    f"CKD trains on {ckd_model.sample_share(epochs):.0%} of the samples at epoch {epochs}; its curriculum reaches "
    f"all of them at epoch {ckd_cfg.ckd_curriculum_epochs}"
)

# %% [markdown]
# **Solution 2.** EMKD with two members beside Ensemble-Scratch with two (the run of chapter 1, reused).

# %% tags=["hide-cell"]
emkd2 = flamebook.experiment(
    dataset, "emkd", epochs, runs_dir, max_len=max_len, device=device, seed=seeds[0], emkd_members=2
)
scratch2 = flamebook.experiment(
    dataset, "ensemble_scratch", epochs, runs_dir, max_len=max_len, device=device, seed=seeds[0]
)
for name, r in (("EMKD, 2 members", emkd2), ("Ensemble-Scratch, 2 members", scratch2)):
    res = r.results
    print(
        f"{name}: test NDCG@20 {res['test']['NDCG@20']:.2f}, "
        f"{np.median([h['train_seconds'] for h in res['history']]):.1f} s per epoch"
    )

# %% [markdown]
# **Solution 3.** A stronger pull towards uniform routing.

# %% tags=["hide-cell"]
uniform = flamebook.experiment(
    dataset, "canet", epochs, runs_dir, max_len=max_len, device=device, seed=seeds[0], canet_uniform_weight=1.0
)
for name, r in (("canet_uniform_weight 0.01 (default)", runs[("canet", seeds[0])]), ("1.0", uniform)):
    rep = r.results["report"]
    top = max(rep["routes"], key=rep["routes"].get)
    print(
        f"{name}: relative cost {rep['relative_cost']:.2f}, most used route {top} "
        f"({rep['routes'][top]:.0%} of users), test NDCG@20 {r.results['test']['NDCG@20']:.2f}"
    )

# %% [markdown]
# **Solution 4.** CKD with one teacher against FLAME, both from one pretrained SASRec.

# %% tags=["hide-cell"]
one_teacher = flamebook.experiment(
    dataset, "ckd", epochs, runs_dir, max_len=max_len, device=device, seed=seeds[0], ckd_teachers=1
)
for name, r in (
    ("CKD, one teacher", one_teacher),
    ("CKD, three teachers", runs[("ckd", seeds[0])]),
    ("FLAME", runs[("flame", seeds[0])]),
):
    print(
        f"{name}: test NDCG@20 {r.results['test']['NDCG@20']:.2f}, pretrained networks "
        f"{len(r.method.pretrained_specs())}"
    )

# %% tags=["remove-cell"]
test_values = rows[KEYS].to_numpy()
seconds = cost["s / epoch"]
shares = {s: runs[("canet", s)].results["report"] for s in seeds}
share_error = max(
    abs(sum(rep[key].values()) - 1.0) for rep in shares.values() for key in ("routes", "embedding", "hidden", "depth")
)
random_hr20 = 100 * 20 / data.num_items  # expected HR@20 of a uniformly random ranking of all items
random_ndcg20 = 100 * sum(1 / math.log2(r + 2) for r in range(20)) / data.num_items
print(f"random ranking of {data.num_items} items: HR@20 ≈ {random_hr20:.2f}%, NDCG@20 ≈ {random_ndcg20:.2f}%")
checks = [
    {"name": "runs present", "value": len(runs), "op": "==", "bound": len(methods) * len(seeds)},
    {"name": "non-finite test metrics", "value": int((~np.isfinite(test_values)).sum()), "op": "==", "bound": 0},
    {"name": "test metrics >= 0", "value": float(test_values.min()), "op": ">=", "bound": 0.0},
    {"name": "test metrics <= 100", "value": float(test_values.max()), "op": "<=", "bound": 100.0},
    *[
        {
            "name": f"{display_name(m)} valid NDCG@20, lowest seed (random ranking: {random_ndcg20:.2f})",
            "value": float(rows.loc[rows["method"] == display_name(m), "valid NDCG@20"].min()),
            "op": ">",
            "bound": ndcg_floor,
        }
        for m in ("emkd", "canet", "ckd")
    ],
    {
        "name": "CANet macs per user / largest submodel's (highest seed)",
        "value": float(canet_rows["relative_cost"].max()),
        "op": "<",
        "bound": 1.0,
    },
    {"name": "CANet routing shares sum to 1 (max abs error)", "value": share_error, "op": "<", "bound": 1e-9},
    {
        "name": "EMKD networks at inference minus Single's",
        "value": int(table.loc["EMKD", "networks at inference"] - table.loc["Single", "networks at inference"]),
        "op": ">",
        "bound": 0,
    },
    {
        "name": "FLAME pretrained networks",
        "value": int(table.loc["FLAME", "pretrained networks"]),
        "op": "==",
        "bound": 1,
    },
    {
        "name": "CKD pretrained networks",
        "value": int(table.loc["CKD", "pretrained networks"]),
        "op": "==",
        "bound": cfgs["ckd"].ckd.ckd_teachers,
    },
    {"name": "seconds per epoch positive", "value": float(seconds.min()), "op": ">", "bound": 0.0},
    {
        "name": "pretraining seconds of FLAME and CKD known (from the anchor cache)",
        "value": float(rows.loc[rows["method"].isin(["FLAME", "CKD"]), "pretraining s"].min()),
        "op": ">",
        "bound": 0.0,
    },
]
metrics = {
    "chapter": "05_related_methods",
    "dataset": dataset,
    "profile": profile,
    "epochs": epochs,
    "seeds": seeds,
    "max_len": max_len,
    "test_ndcg20": {name: float(v) for name, v in by_method["NDCG@20"].mean().items()},
    "test": {name: {k: float(by_method[k].mean()[name]) for k in KEYS} for name in table.index},
    "valid_ndcg20": {name: float(v) for name, v in by_method["valid NDCG@20"].mean().items()},
    "epoch_seconds": {name: float(v) for name, v in seconds.items()},
    "epoch_seconds_ratio_to_single": {name: float(v / seconds["Single"]) for name, v in seconds.items()},
    "inference_seconds_per_1000_users": {name: float(v) for name, v in cost["infer s / 1k users"].items()},
    "canet": {
        "macs_per_user": float(canet_rows["macs_per_user"].mean()),
        "flops_per_user": float(canet_rows["flops_per_user"].mean()),
        "largest_macs_per_user": float(canet_rows["largest_macs_per_user"].mean()),
        "relative_cost": float(canet_rows["relative_cost"].mean()),
    },
    "random_ranking": {"HR@20": random_hr20, "NDCG@20": random_ndcg20},
    "records": len(records),
    "checks": checks,
}
print(flamebook.write_metrics(output_dir, metrics))
pd.DataFrame(checks)
