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
# # Modular paths: one learnable and one frozen network, 2^M representations
#
# Ensemble-Guide (chapter 1) aligns two views of a user: the learnable network's and the frozen anchor's.
# FLAME gets more views from the same two networks by cutting each into $M$ modules and letting every
# module come from either network: each such choice is a *path*, and two networks give $2^M$ paths. This
# chapter works through the mechanics on a tiny synthetic dataset, where every number can be checked by
# hand: how a network is cut into modules, how paths are named, how paths that share their first modules
# share that computation (and that this gives exactly the per-path results), how paths are sampled when
# there are many, and why paths must attend only within themselves for the purely frozen path to be the
# frozen network. Then, on the chosen dataset, it looks at the representations themselves (t-SNE of a
# conventional ensemble's members against FLAME's paths) and at what more representations buy: accuracy
# and training seconds for 2, 4 and 8 paths, sampled paths, and ensembles of 2 and 4 members.
#
# **After this chapter you can** name the paths of any module split; count the module applications that
# prefix sharing saves and check them by measurement; write FLAME's alignment loss as a loop over pairs
# of paths and match it to the library's vectorised version; explain why independent path attention
# makes the pure paths the two networks; and set the number of paths against accuracy and cost.
#
# **Prerequisites.** Chapter 1 (Ensemble-Guide, the alignment loss and $\lambda_e$); SASRec's structure
# (an embedding module, then Transformer blocks, the last position's output as the representation);
# InfoNCE; cosine similarity; what t-SNE does (a 2-D map that keeps near neighbours near).

# %% tags=["hide-input"]
import contextlib
import time
from collections import Counter
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.express as px
import seaborn as sns
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

import flamebook
from flame_core import paths
from flame_core.analysis import representations, tsne
from flame_core.backbone import SASRecStack, make_layout
from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import build_split, synthetic
from flame_core.losses import align_loss
from flame_core.methods import build_method
from flame_core.paths import all_paths, evaluate_paths, module_plan, path_name, sample_paths

# %% tags=["parameters"]
dataset = "ml-100k"  # "ml-100k" (embedded), a name in $FLAME_DATA_DIR (e.g. "amazon-toys") or a file path
device = "cpu"  # "cpu", "cuda" or "auto"
epochs = 3  # epoch budget of every run in this chapter; the protocol's is 200
seeds = [42, 43]  # this chapter trains with the first seed
max_len = 10  # input window L; the protocol's is 50
profile = "quick"  # the name of the parameter profile, shown in captions
runs_dir = "_build/runs"  # finished experiments are reused from here (shared by all chapters)
output_dir = "_build/outputs/02_modular_ensemble"  # metrics.json and figures
results_dir = "results"  # provenance records (read by chapter 3; unused here)
toy_users = 64  # users of the synthetic worked example
toy_hidden = 16  # hidden size of the worked example's networks
tsne_users = 200  # test users embedded by t-SNE (each contributes one point per member or path)
num_paths = 4  # K sampled paths per step, out of the 2^M of the per-block split
scratch_members = [2, 4]  # Ensemble-Scratch sizes compared with the same numbers of paths

# %% tags=["hide-input"]
out = flamebook.setup(output_dir, seed=seeds[0])
seed = seeds[0]
protocol = flamebook.protocol(dataset, max_len, epochs, profile, device, [seed])

# %% [markdown]
# ## Modules, paths and their names
#
# A *split* cuts SASRec into $M$ ordered modules, each a list of stages: `emb` (item and position
# embeddings, LayerNorm, dropout) and the Transformer blocks `b0`, `b1`, ... Three splits are built in:
# `net` keeps the whole network as one module ($M = 1$: the two paths are the two networks, which is
# Ensemble-Guide), `emb|enc` is the official split ($M = 2$), and `emb|block|block` gives every block its
# own module ($M = 1 + $ layers). A path picks, module by module, the learnable (`L`) or the frozen (`F`)
# network: `LF` is the learnable embedding followed by the frozen encoder. Paths are listed with the pure
# learnable path first and the pure frozen path last. The worked example uses a tiny SASRec on a small
# synthetic dataset with known multi-interest structure.

# %%
# NBVAL_CHECK_OUTPUT
toy_model = ModelConfig(hidden=toy_hidden, max_len=10)
toy = synthetic(num_users=toy_users, num_items=40, seed=0)
toy_split = build_split(toy, toy_model.max_len)
blocks_split = paths.block_split(toy_model.layers)
SPLITS = ["net", "emb|enc", blocks_split]
plans = {s: module_plan(s, toy_model.layers) for s in SPLITS}
print(f"synthetic: {toy.stats()}; model: {toy_model}")
pd.DataFrame(
    [
        {
            "module split": s,
            "M": len(plan),
            "modules": " | ".join("+".join(stages) for stages in plan),
            "paths": len(all_paths(len(plan))),
            "names": " ".join(path_name(p) for p in all_paths(len(plan))),
        }
        for s, plan in plans.items()
    ]
).set_index("module split")

# %% [markdown]
# ## Prefix sharing
#
# Evaluating the $2^M$ paths one by one applies $M$ modules per path, $M \cdot 2^M$ module applications
# in all. But paths that begin with the same choices compute the same thing up to where they part:
# `LF` and `LL` share the learnable embedding. `flame_core.paths.evaluate_paths` works level by level:
# after module $m$ it holds one state per *prefix* of length $m$, a tensor $(2^m, B, L, D)$, and applying
# both networks' module $m+1$ to all of them gives the $2^{m+1}$ states of the next level, so the whole
# enumeration costs $\sum_{m=1}^{M} 2^m = 2^{M+1} - 2$ module applications. The levels of the per-block
# split:

# %%
# NBVAL_CHECK_OUTPUT
M3 = len(plans[blocks_split])
for m in range(1, M3 + 1):
    prefixes = sorted({p[:m] for p in all_paths(M3)})
    print(
        f"after module {m} ({'+'.join(plans[blocks_split][m - 1])}): {len(prefixes)} states: "
        + " ".join(path_name(p) for p in prefixes)
    )

# %% [markdown]
# We check both claims by measurement. Two randomly initialised toy networks stand in for the learnable
# and the frozen one (their weights do not matter here). A small context manager counts the module
# applications inside `evaluate_paths` (one per prefix state a module is applied to), without changing
# what it computes. For each split we evaluate all paths at once, then each path on its own, and compare.
# (`evaluate_paths` returns $(N, P, B, D)$: one set of paths per pair of networks, $N = 1$ here; the engine
# uses $N > 1$ to train several seeds side by side, and `[0]` takes our one pair.)


# %% tags=["hide-input"]
@contextlib.contextmanager
def count_module_applications():
    """Count, inside flame_core.paths.evaluate_paths, the prefix states each module is applied to."""
    counter = {"applications": 0}
    original = paths.run_module

    def counted(net, stages, x, *args, **kwargs):
        counter["applications"] += 1 if x is None else x.shape[1]  # x: (N, R, T, D) states of R prefixes
        return original(net, stages, x, *args, **kwargs)

    with mock.patch.object(paths, "run_module", counted):
        yield counter


learn = SASRecStack(1, toy.num_items, toy_model, seeds=[1]).eval()
frozen = SASRecStack(1, toy.num_items, toy_model, seeds=[2]).eval().requires_grad_(False)
toy_inputs = toy_split.inputs("test")[0][:16]  # (B, L): 16 users' test inputs
layout = make_layout(toy_inputs)

# %%
rows, toy_z = [], {}
with torch.no_grad():
    for s, plan in plans.items():
        M, every = len(plan), all_paths(len(plan))
        with count_module_applications() as shared_count:
            z = evaluate_paths(learn, frozen, plan, layout, every, p_learn=0.0, p_frozen=0.0)  # (1, 2^M, B, D)
        z = z[0]  # (2^M, B, D) of the one pair
        with count_module_applications() as naive_count:
            z_each = torch.cat(
                [evaluate_paths(learn, frozen, plan, layout, [p], p_learn=0.0, p_frozen=0.0)[0] for p in every]
            )
        toy_z[s] = z
        rows.append(
            {
                "module split": s,
                "M": M,
                "paths": z.shape[0],
                "prefix-shared (measured)": shared_count["applications"],
                "2^(M+1) - 2": 2 ** (M + 1) - 2,
                "per path (measured)": naive_count["applications"],
                "M * 2^M": M * 2**M,
                "max |shared - per path|": (z - z_each).abs().max().item(),
            }
        )
sharing = pd.DataFrame(rows).set_index("module split")
sharing

# %% [markdown]
# The measured counts match the formulas, and the prefix-shared representations equal the per-path ones
# up to floating-point rounding. The saving grows with $M$: 14 instead of 24 applications for three
# modules, 30 instead of 64 for four. (In training, a module application to a purely frozen prefix is
# also cheaper: it runs without autograd.)
#
# ## Attention between paths: independent or shared
#
# With `path_attention="independent"` (the default) every path attends only to its own tokens, as we
# read the paper's overview figure of modular paths (the text gives no equation for it); then the pure
# learnable path *is* the learnable network and the pure
# frozen path *is* the frozen network. The released code does something else for `emb|enc`: it
# concatenates the learnable and the frozen embedding sequences and tiles the causal mask, so in the
# encoder every path also attends to the other embedding stream (`"shared"`). We compare the pure paths
# with the networks evaluated alone (`SASRecStack.encode`).

# %%
with torch.no_grad():
    alone = {"L": learn.encode(layout, 0.0)[0], "F": frozen.encode(layout, 0.0)[0]}  # (B, D) each
    pure = {}
    for mode in ("independent", "shared"):
        shared = mode == "shared"
        z = evaluate_paths(
            learn, frozen, plans["emb|enc"], layout, all_paths(2), p_learn=0.0, p_frozen=0.0, shared=shared
        )[0]
        pure[mode] = {
            "max |LL - learnable network|": (z[0] - alone["L"]).abs().max().item(),
            "max |FF - frozen network|": (z[-1] - alone["F"]).abs().max().item(),
        }
attention = pd.DataFrame(pure).T
attention

# %% [markdown]
# Only with independent attention are the two pure paths the two networks (differences at rounding
# level); with shared attention every path, the pure ones included, mixes in the other network's
# embedding stream. Chapter 4 measures what this changes in accuracy.
#
# ## FLAME from scratch
#
# The library computes the alignment loss of all path pairs from one Gram matrix (`flame_core.losses`),
# which is fast but hides the idea. Here is one FLAME loss written out for the split `emb|enc`, with a loop
# over the pairs of paths, on the toy networks above:
#
# 1. the four paths: the embedding of network $e$ followed by the encoder of network $k$, named $ek$;
# 2. for every pair of paths $(i, j)$, a two-way InfoNCE: the $2B$ representations $[z_i; z_j]$ score
#    each other by dot products, a row never scores itself, and row $b$ of $z_i$ must pick out row $b$ of
#    $z_j$ (and the other way round) among the $2B - 1$ candidates;
# 3. pair weights $w_{ij} = \mathrm{softmax}_{\text{pairs}}(-\bar s_{ij})$, where $\bar s_{ij}$ is the mean
#    similarity $\langle z_i[b], z_j[b] \rangle$ over the batch: the least similar pairs weigh most;
# 4. $\mathcal{L} = \mathcal{L}_\text{rec} + \lambda_e \sum_{i<j} w_{ij} \, \mathrm{InfoNCE}_{ij}$.
#
# The same cell checks the result against the library: the paths against `evaluate_paths`, the
# alignment term against `flame_core.losses.align_loss`, and the whole loss against `Flame.loss`.


# %%
def flame_loss_from_scratch(learn, frozen, seq, target, lam, tau=1.0):
    """One FLAME loss for split emb|enc, dropout off: four paths, a loop over their pairs."""
    layout = make_layout(seq)
    embedded = {"L": learn.embed(layout, 0.0), "F": frozen.embed(layout, 0.0)}  # (1, T, D) each

    def encoder(net, x):  # both Transformer blocks of `net`: (1, T, D) -> (B, D), the last positions
        x = net.block(0, x[:, None], layout, 0.0, last_only=False)
        return net.block(1, x, layout, 0.0, last_only=True)[0, 0]

    z = {e + k: encoder(net, embedded[e]) for e in "LF" for k, net in (("L", learn), ("F", frozen))}
    names, losses, similarity = list(z), [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            zi, zj = z[names[i]], z[names[j]]  # (B, D) each
            B = len(zi)
            both = torch.cat([zi, zj])  # (2B, D)
            logits = (both @ both.T / tau).fill_diagonal_(float("-inf"))  # (2B, 2B); not its own candidate
            twin = torch.cat([torch.arange(B, 2 * B), torch.arange(B)])  # row b's positive: its twin
            losses.append(F.cross_entropy(logits, twin))
            similarity.append((zi * zj).sum(1).mean())
    weights = torch.softmax(-torch.stack(similarity), 0)  # less similar pairs weigh more
    align = (weights * torch.stack(losses)).sum()
    rec = F.cross_entropy(learn.item_scores(z["LL"][None])[0], target)  # the learnable network: LL
    pairs = [f"{names[i]}-{names[j]}" for i in range(len(names)) for j in range(i + 1, len(names))]
    return rec + lam * align, align, torch.stack(list(z.values())), pairs, torch.stack(similarity), weights


toy_targets = toy_split.inputs("test")[1][:16]  # (B,)
flame_toy = build_method(toy.num_items, toy_model.replace(dropout=0.0), TrainConfig(method="flame"))
flame_toy.learn.load_state_dict(learn.state_dict())
flame_toy.set_frozen(frozen)
flame_toy.start_epoch(1)  # lambda of epoch 1
with torch.no_grad():
    scratch = flame_loss_from_scratch(learn, frozen, toy_inputs, toy_targets, flame_toy.lam)
    loss, align, z_scratch, pairs, sims, weights = scratch
    z_library = evaluate_paths(learn, frozen, plans["emb|enc"], layout, all_paths(2), p_learn=0.0, p_frozen=0.0)
    z_library = z_library[0]  # (4, B, D): the paths of the one pair
    library_loss, _ = flame_toy.loss((toy_inputs, toy_targets))
from_scratch = pd.Series(
    {
        "max |paths - evaluate_paths|": (z_scratch - z_library).abs().max().item(),
        "|align - losses.align_loss|": abs(align - align_loss(z_library)[0]).item(),
        "|loss - Flame.loss|": abs(loss - library_loss.sum()).item(),
    }
)
from_scratch

# %% [markdown]
# All three differences are at float32 rounding: the loop and the library compute the same loss. The pair
# weights on this batch, a worked example of step 3 (mean similarity, $e^{-\bar s}$, and its share of the
# sum):

# %% tags=["hide-input"]
worked = pd.DataFrame({"pair": pairs, "mean similarity": sims.numpy(), "exp(-similarity)": torch.exp(-sims).numpy()})
worked["weight = share"] = worked["exp(-similarity)"] / worked["exp(-similarity)"].sum()
assert np.allclose(worked["weight = share"], weights.numpy())
print(f"lambda at epoch 1: {flame_toy.lam:.4f}; alignment term {align.item():.4f}; loss {loss.item():.4f}")
worked.round(4)

# %% [markdown]
# The pure paths `LL` and `FF` are the two whole networks; the mixed paths `LF` and `FL` are where one
# network reads the other's modules. On random toy networks the pairs that share a module (`LL`-`LF`
# share the learnable embedding) are the most similar, so they weigh least: the loss spends its weight on
# the pairs that disagree most.
#
# ## Sampling paths
#
# With many modules, aligning all $2^M$ paths at every step becomes expensive: the alignment loss has
# one term per *pair* of paths. `sample_paths(M, K)` draws $K$ distinct paths per step, always including
# the pure learnable path (the network that is kept) and the other $K - 1$ uniformly among the rest;
# `evaluate_paths` then computes only the prefixes those paths need. A few draws for the per-block split:

# %%
# NBVAL_CHECK_OUTPUT
gen = torch.Generator().manual_seed(seed)
draws = [sample_paths(M3, num_paths, gen) for _ in range(2000)]
for d in draws[:5]:
    print(" ".join(path_name(p) for p in d))
freq = Counter(path_name(p) for d in draws for p in d)
freq_df = pd.DataFrame({"path": [path_name(p) for p in all_paths(M3)]})
freq_df["share of draws"] = [freq[name] / len(draws) for name in freq_df.path]
with torch.no_grad(), count_module_applications() as sampled_count:
    for d in draws[:200]:
        evaluate_paths(learn, frozen, plans[blocks_split], layout, d, p_learn=0.0, p_frozen=0.0)
print(
    f"module applications per step: {sampled_count['applications'] / 200:.2f} on average for K={num_paths} "
    f"sampled paths, {2 ** (M3 + 1) - 2} for all {2**M3}"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3))
sns.barplot(data=freq_df, x="path", y="share of draws", color="C0", ax=ax)
ax.axhline((num_paths - 1) / (2**M3 - 1), color="grey", ls="--", label=f"(K-1)/(2^M-1) = {num_paths - 1}/{2**M3 - 1}")
ax.set(title=f"How often each path is drawn: K={num_paths} of {2**M3}, {len(draws)} draws", ylim=(0, 1.05))
ax.legend(loc="upper right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Representations on the chosen dataset
#
# Now the real thing: FLAME with the official split (`emb|enc`, four paths) and Ensemble-Scratch with
# two members, both trained under this chapter's profile (or reused from `runs_dir`: chapters 1 and 3 run
# the same experiments). `flame_core.analysis.representations` extracts, for the test users, the
# last-position representation of every *view*: each member of the ensemble, each path of FLAME (with
# the selected weights, dropout off, independent attention).


# %%
def experiment(method: str, **changes):
    return flamebook.experiment(dataset, method, epochs, runs_dir, max_len=max_len, device=device, seed=seed, **changes)


flame = experiment("flame")
scratch = experiment("ensemble_scratch", members=scratch_members[0])
views = {}
for name, run in {"Ensemble-Scratch (members)": scratch, "FLAME (paths)": flame}.items():
    views[name] = representations(run.method, run.split, "test", max_users=tsne_users)  # names, (V, U, D)
    print(f"{name}: views {views[name][0]}, representations {tuple(views[name][1].shape)}")

# %% [markdown]
# How alike are the views of one user? The mean cosine similarity between two views of the same user,
# over the users above (1 = the same direction):


# %% tags=["hide-input"]
def mean_cosine(reps: torch.Tensor) -> pd.DataFrame:
    z = torch.nn.functional.normalize(reps.double(), dim=-1)  # (V, U, D)
    return pd.DataFrame(torch.einsum("vud,wud->vw", z, z).numpy() / z.shape[1])


for name, (names, reps) in views.items():
    cos = mean_cosine(reps)
    cos.index = cos.columns = names
    display(
        Markdown(
            f"**{name}**: mean cosine similarity between views of the same test user "
            f"({reps.shape[1]} users, {dataset}, seed {seed})"
        )
    )
    display(cos.round(3))

# %% [markdown]
# t-SNE (scikit-learn) places every representation of every user in the plane, one colour per view.
# Each model is embedded separately (the coordinates of the two panels are not comparable, the
# neighbourhoods are). Hover a point to see its user; double-click a legend entry to isolate a view.

# %% tags=["hide-input"]
maps = []
for name, (names, reps) in views.items():
    t = tsne(reps, names, users=tsne_users, seed=seed)
    maps.append(pd.DataFrame({"model": name, **t}))
tsne_df = pd.concat(maps, ignore_index=True)
fig = px.scatter(
    tsne_df,
    x="x",
    y="y",
    color="view",
    facet_col="model",
    hover_data=["user"],
    opacity=0.7,
    title=f"t-SNE of test-user representations, {tsne_users} users, {dataset}, seed {seed}, "
    f"{epochs} epochs, profile '{profile}'",
)
fig.update_traces(marker={"size": 5})
fig.update_xaxes(matches=None, showticklabels=False, title="")
fig.update_yaxes(matches=None, showticklabels=False, title="")
fig.update_layout(height=480)
fig.show()

# %% [markdown]
# ## How many representations?
#
# More modules give more paths, and more paths give the alignment loss more pairs. Is it worth it, and
# what does it cost? We train, under the same profile and seed, FLAME with 2 paths (`net`: this is
# Ensemble-Guide), 4 paths (`emb|enc`), 8 paths (`emb|block|block`) and $K$ paths sampled out of those 8
# at every step, against Ensemble-Scratch with as many members as FLAME has paths. FLAME keeps one
# network for inference whatever its number of paths; the ensemble serves all its members.

# %%
blocks = paths.block_split(flame.method.model_cfg.layers)
VARIANTS = {
    "FLAME net (Ensemble-Guide)": ("FLAME", "ensemble_guide", {}),
    "FLAME emb|enc": ("FLAME", "flame", {}),
    f"FLAME {blocks}": ("FLAME", "flame", {"module_split": blocks}),
    f"FLAME {blocks}, K={num_paths} sampled": ("FLAME", "flame", {"module_split": blocks, "num_paths": num_paths}),
    **{f"Ensemble-Scratch N={n}": ("Ensemble-Scratch", "ensemble_scratch", {"members": n}) for n in scratch_members},
}
variant_runs = {name: experiment(method, **changes) for name, (_, method, changes) in VARIANTS.items()}


rows = []
for name, run in variant_runs.items():
    res = run.results
    rows.append(
        {
            "variant": name,
            "family": VARIANTS[name][0],
            "representations": run.method.aligned_views,
            "networks at inference": run.method.served_networks,
            "valid NDCG@20": res["valid"]["NDCG@20"],
            "test NDCG@20": res["test"]["NDCG@20"],
            "test HR@20": res["test"]["HR@20"],
            "s / epoch": float(np.median([row["train_seconds"] for row in res["history"]])),
            "trainable params": res["parameters"]["trainable"],
        }
    )
reps_df = pd.DataFrame(rows).set_index("variant")
display(
    Markdown(
        f"**Table 1.** Number of representations against accuracy and cost. Protocol: {protocol}. "
        "Seconds per epoch: the median over the epochs run of the wall-clock training time (validation "
        "excluded) on this machine; they vary with its load."
    )
)
reps_df.style.format(
    {
        "valid NDCG@20": "{:.2f}",
        "test NDCG@20": "{:.2f}",
        "test HR@20": "{:.2f}",
        "s / epoch": "{:.1f}",
        "trainable params": "{:,.0f}",
    }
)

# %% tags=["hide-input"]
plot_df = reps_df.reset_index()
plot_df["sampled"] = plot_df.variant.str.contains("sampled").map({True: "K sampled", False: "all"})
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, col in zip(axes, ["test NDCG@20", "s / epoch"]):
    sns.lineplot(data=plot_df[plot_df.sampled == "all"], x="representations", y=col, hue="family", marker="o", ax=ax)
    sns.scatterplot(
        data=plot_df[plot_df.sampled != "all"],
        x="representations",
        y=col,
        color="C0",
        marker="X",
        s=120,
        ax=ax,
        label=f"FLAME, K={num_paths} of {2 ** (1 + flame.method.model_cfg.layers)} sampled",
    )
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set(xticks=sorted(plot_df.representations.unique()), xticklabels=sorted(plot_df.representations.unique()))
    ax.legend(fontsize=8)
axes[0].set(ylabel="test NDCG@20 (%)", title="accuracy")
axes[1].set(ylabel="training seconds per epoch (median)", title="cost")
fig.suptitle(f"Representations per step: {dataset}, seed {seed}, {epochs} epochs, profile '{profile}'", y=1.02)
fig.tight_layout()
fig.savefig(out / "representations.png", dpi=120, bbox_inches="tight")
plt.show()

# %% [markdown]
# At equal numbers of representations, how do the two families compare?

# %% tags=["hide-input"]
paired = reps_df[~reps_df.index.str.contains("sampled")]
for n in sorted(set(paired.representations)):
    f = paired[(paired.family == "FLAME") & (paired.representations == n)]
    e = paired[(paired.family == "Ensemble-Scratch") & (paired.representations == n)]
    if len(f) and len(e):
        f, e = f.iloc[0], e.iloc[0]
        print(
            f"{n} representations: training {f['s / epoch']:.1f} s/epoch (FLAME) vs {e['s / epoch']:.1f} "
            f"(Ensemble-Scratch), ratio {f['s / epoch'] / e['s / epoch']:.2f}; networks at inference "
            f"1 vs {e['networks at inference']}; test NDCG@20 {f['test NDCG@20']:.2f} vs {e['test NDCG@20']:.2f}"
        )

# %% [markdown]
# Read these numbers with their protocol in mind: with a budget of a few epochs and one seed,
# differences of a fraction of a point are within the noise (chapter 3 shows the spread between seeds),
# and seconds depend on the machine and its load. What does not depend on the seed is the structure of
# the cost. In training, FLAME's paths are not free: every path that mixes the two networks runs a
# trained module on new inputs, and $L_{rec}$ takes its own learnable forward pass, so a FLAME step can
# cost as much per representation as an ensemble member, or more (the ratios above); prefix sharing and
# path sampling are what keep it from growing with $M \cdot 2^M$. At inference FLAME serves one network
# whatever its number of paths, while the ensemble serves all its members.
#
# ## What we learned
#
# - A split cuts SASRec into $M$ modules; a path chooses the learnable or the frozen network per module,
#   named by its letters (`LF`); two networks give $2^M$ paths, pure learnable first, pure frozen last.
# - Prefix sharing evaluates all paths with $2^{M+1} - 2$ module applications instead of $M \cdot 2^M$;
#   we counted both and checked that the results equal per-path evaluation.
# - `sample_paths` keeps the pure learnable path and draws the rest uniformly; only the prefixes of the
#   drawn paths are computed.
# - With independent path attention the pure paths are exactly the two networks; the released code's
#   shared attention mixes the two embedding streams into every path.
# - On the chosen dataset, t-SNE shows the views of a conventional ensemble against FLAME's paths, and
#   the last table sets the number of representations against accuracy and training cost.
# - What this build's numbers show:

# %% tags=["remove-input"]
cos_of = {name: mean_cosine(reps).to_numpy() for name, (_, reps) in views.items()}
off = {name: c[~np.eye(len(c), dtype=bool)].mean() for name, c in cos_of.items()}
best = reps_df["valid NDCG@20"].idxmax()
flame_row, scratch_row = reps_df.loc["FLAME emb|enc"], reps_df.loc[f"Ensemble-Scratch N={scratch_members[0]}"]
formula = (sharing["prefix-shared (measured)"] == sharing["2^(M+1) - 2"]).all()
lines = [
    f"Prefix sharing evaluated the paths of the splits with {sharing['prefix-shared (measured)'].tolist()} module "
    f"applications ({'as' if formula else 'not as'} 2^(M+1) - 2 predicts) instead of "
    f"{sharing['per path (measured)'].tolist()}, and matched per-path evaluation to "
    f"{sharing['max |shared - per path|'].max():.1e}.",
    "Mean cosine similarity between two views of one user: "
    + "; ".join(f"{name} {v:.2f}" for name, v in off.items())
    + ".",
    f"Among the variants trained here ({epochs} epochs, {profile} profile), the best validation NDCG@20 is "
    f"{reps_df.loc[best, 'valid NDCG@20']:.2f} ({best}). FLAME emb|enc aligns {int(flame_row['representations'])} "
    f"views at {flame_row['s / epoch']:.1f} s per epoch and serves {int(flame_row['networks at inference'])} network; "
    f"Ensemble-Scratch with {scratch_members[0]} members takes {scratch_row['s / epoch']:.1f} s and serves "
    f"{int(scratch_row['networks at inference'])}. With this few epochs the accuracy differences are not "
    "evidence (chapter 3 reads the full records).",
]
display(Markdown("\n\n".join(lines)))

# %% [markdown]
#
# ## Exercises
#
# 1. Predict the number of module applications for a 3-layer SASRec split per block ($M = 4$), with all
#    paths and with $K = 4$ sampled paths, then measure them with `count_module_applications` and a
#    `ModelConfig(layers=3)`.
# 2. Which FLAME path lies closest to `FF`, the frozen anchor, in the mean cosine table? Which module
#    (embedding or encoder) decides where a path's representation lands?
# 3. Train FLAME with the per-block split and $K = 2$ sampled paths, and set it beside $K = 4$ and all
#    eight paths from Table 1: how do accuracy and seconds per epoch move with $K$?
# 4. The alignment loss has one term per pair of views. Count the pairs for 2, 4 and 8 views and time
#    `align_loss` for each on a batch of 256 representations: does the alignment dominate a step's cost
#    at this size?
#
# ### Solutions
#
# Each solution is a cell to unfold; it runs when the chapter runs, so its numbers are this build's.

# %% [markdown]
# **Solution 1.** All paths: $\sum_{m=1}^{4} 2^m = 30$ applications. With $K = 4$ sampled paths the count
# depends on the draw (the distinct prefixes of the four paths at each level), between 4 and 4 + 8 + ...;
# we measure its mean over 200 draws.

# %% tags=["hide-cell"]
deep = ModelConfig(hidden=toy_hidden, layers=3, max_len=10)
deep_learn = SASRecStack(1, toy.num_items, deep, seeds=[1]).eval()
deep_frozen = SASRecStack(1, toy.num_items, deep, seeds=[2]).eval().requires_grad_(False)
deep_plan = module_plan(paths.block_split(3), 3)
deep_gen = torch.Generator().manual_seed(seed)
with torch.no_grad(), count_module_applications() as every:
    evaluate_paths(deep_learn, deep_frozen, deep_plan, layout, all_paths(4), p_learn=0.0, p_frozen=0.0)
with torch.no_grad(), count_module_applications() as sampled:
    for _ in range(200):
        evaluate_paths(
            deep_learn, deep_frozen, deep_plan, layout, sample_paths(4, 4, deep_gen), p_learn=0.0, p_frozen=0.0
        )
print(
    f"M = 4: all 16 paths take {every['applications']} module applications (formula 30, per path 64); "
    f"K = 4 sampled paths take {sampled['applications'] / 200:.2f} on average"
)

# %% [markdown]
# **Solution 2.** From the mean cosine table of FLAME's paths.

# %% tags=["hide-cell"]
names_f, reps_f = views["FLAME (paths)"]
cos_f = mean_cosine(reps_f)
cos_f.index = cos_f.columns = names_f
nearest = cos_f["FF"].drop("FF").idxmax()
print(cos_f.round(3))
print(
    f"closest to FF: {nearest} (cosine {cos_f.loc[nearest, 'FF']:.3f}); paths that share the encoder "
    f"(second letter) are {'closer' if cos_f.loc['LF', 'FF'] > cos_f.loc['FL', 'FF'] else 'not closer'} "
    "to each other than paths that share only the embedding: the last module decides more"
)

# %% [markdown]
# **Solution 3.** One more run, $K = 2$, beside the runs of Table 1.

# %% tags=["hide-cell"]
k2 = experiment("flame", module_split=blocks, num_paths=2)
k_rows = {
    "K=2": k2.results,
    f"K={num_paths}": variant_runs[f"FLAME {blocks}, K={num_paths} sampled"].results,
    "all 8": variant_runs[f"FLAME {blocks}"].results,
}
print(
    pd.DataFrame(
        {
            k: {
                "valid NDCG@20": r["valid"]["NDCG@20"],
                "s / epoch": float(np.median([h["train_seconds"] for h in r["history"]])),
            }
            for k, r in k_rows.items()
        }
    ).T.round(2)
)

# %% [markdown]
# **Solution 4.** Pairs grow as $V(V-1)/2$; the timing is of the loss alone, forward and backward.

# %% tags=["hide-cell"]
timing = []
for V in (2, 4, 8):
    z = torch.randn(V, 256, 64, requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(5):
        align_loss(z)[0].backward()
    ms = 1000 * (time.perf_counter() - t0) / 5
    timing.append({"views": V, "pairs": V * (V - 1) // 2, "ms (forward + backward)": ms})
timing = pd.DataFrame(timing).set_index("views")
print(timing.round(2))
steps = max(1, len(flame.split.train_targets) // 256)  # batches of 256 per epoch
step_ms = 1000 * reps_df.loc["FLAME emb|enc", "s / epoch"] / steps
share = timing.loc[4, "ms (forward + backward)"] / step_ms
print(f"a FLAME emb|enc step here takes {step_ms:.1f} ms; its alignment over 4 views about {share:.0%} of that")

# %% tags=["remove-cell"]
tsne_counts = {name: int((tsne_df.model == name).sum()) for name in views}
checks = [
    *[
        {"name": f"paths of split {s}", "value": int(r["paths"]), "op": "==", "bound": 2 ** int(r["M"])}
        for s, r in sharing.iterrows()
    ],
    *[
        {
            "name": f"prefix-shared module applications, {s}",
            "value": int(r["prefix-shared (measured)"]),
            "op": "==",
            "bound": 2 ** (int(r["M"]) + 1) - 2,
        }
        for s, r in sharing.iterrows()
    ],
    *[
        {
            "name": f"max |prefix-shared - per path|, {s}",
            "value": float(r["max |shared - per path|"]),
            "op": "<",
            "bound": 1e-5,
        }
        for s, r in sharing.iterrows()
    ],
    {
        "name": "independent attention: max |FF - frozen network|",
        "value": pure["independent"]["max |FF - frozen network|"],
        "op": "<",
        "bound": 1e-5,
    },
    {
        "name": "independent attention: max |LL - learnable network|",
        "value": pure["independent"]["max |LL - learnable network|"],
        "op": "<",
        "bound": 1e-5,
    },
    {
        "name": "shared attention: max |FF - frozen network|",
        "value": pure["shared"]["max |FF - frozen network|"],
        "op": ">",
        "bound": 1e-4,
    },
    {
        "name": "sampled draws holding the pure learnable path",
        "value": sum(d[0] == (0,) * M3 for d in draws),
        "op": "==",
        "bound": len(draws),
    },
    *[
        {
            "name": f"t-SNE points, {name}",
            "value": tsne_counts[name],
            "op": "==",
            "bound": len(views[name][0]) * min(tsne_users, views[name][1].shape[1]),
        }
        for name in views
    ],
    {"name": "FLAME views (emb|enc)", "value": len(views["FLAME (paths)"][0]), "op": "==", "bound": 4},
    *[
        {"name": f"{name} test NDCG@20", "value": r["test NDCG@20"], "op": ">", "bound": 0.0}
        for name, r in reps_df.iterrows()
    ],
]
metrics = {
    "chapter": "02_modular_ensemble",
    "dataset": dataset,
    "profile": profile,
    "epochs": epochs,
    "seed": seed,
    "max_len": max_len,
    "tsne_users": tsne_users,
    "num_paths": num_paths,
    "sharing": sharing.reset_index().to_dict(orient="records"),
    "representations": reps_df.reset_index().to_dict(orient="records"),
    "checks": checks,
}
flamebook.write_metrics(output_dir, metrics)
pd.DataFrame(checks)
