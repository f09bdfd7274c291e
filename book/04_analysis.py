# ---
# jupyter:
#   jupytext:
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
# # What the paths learn: PER maps, ablations, sensitivity
#
# FLAME's premise is that the modular paths of a frozen and a learnable network behave like the members
# of an ensemble: they get different users right, and aligning them passes that diversity into the
# learnable network. This chapter looks at that premise from three sides. **PER maps** show, for every
# pair of representations (ensemble members, or FLAME's paths), how often one gets a user right while the
# other does not. **Ablations** switch off one design choice of FLAME at a time (independent path
# attention, similarity-based pair weights, the annealed alignment weight, the frozen network's dropout,
# the separate forward for the recommendation loss) and measure accuracy and cost. A small
# **sensitivity** sweep varies one hyper-parameter. Under the quick profile every run is short and uses one
# seed, so differences of a fraction of a point are noise; the chapter shows how to measure, and the full
# profile gives the numbers to trust.

# %%
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib import pyplot as plt

import flamebook
from flame_core.analysis import per_map, view_ranks
from flame_core.metrics import metrics_from_ranks

# %% tags=["parameters"]
dataset = "ml-100k"  # a name (ml-100k, or a file in $FLAME_DATA_DIR) or a path
device = "cpu"  # "cpu", "cuda" or "auto"
epochs = 3  # epoch budget (lambda anneals over the paper's 200 epochs whatever the budget)
seeds = [42, 43]  # the PER maps, ablations and sweep use the first seed
max_len = 10  # L, the input window (the official default is 50)
profile = "quick"  # the label of this parameter set, printed with every table
runs_dir = "_build/runs"  # finished runs are reused from here (shared with the other chapters)
output_dir = "_build/outputs/04_analysis"  # metrics.json and figures
results_dir = "results"  # committed provenance records (not read by this chapter)
per_k = 20  # PER maps: a view "gets a user right" if the target is in its top per_k
sensitivity_param = "lambda_0"  # a float field of TrainConfig, e.g. "lambda_0" or "tau"
sensitivity_values = [0.1, 1.0]  # the default value reuses the default FLAME run

# %%
out = flamebook.setup(output_dir, seed=seeds[0])
seed = seeds[0]
PROTOCOL = flamebook.protocol(dataset, max_len, epochs, profile, device, [seed])
print(PROTOCOL)


def experiment(method: str, **changes):
    """One run of this chapter's settings (reused from runs_dir when it exists)."""
    return flamebook.experiment(dataset, method, epochs, runs_dir, max_len=max_len, device=device, seed=seed,
                                **changes)


# %% [markdown]
# ## PER maps
#
# The FLAME paper shows "PER maps" for a conventional ensemble and for FLAME, but its definition of them
# was not available to us. **What follows is our reading, not the paper's definition.** For two views $i$
# and $j$ (an ensemble member, or a modular path) we count the share of test users whose target view $i$
# ranks in its top $K$ while view $j$ does not:
#
# $$\mathrm{PER}_{ij} = \frac{1}{U}\,\bigl|\{u : \mathrm{rank}_i(u) < K,\ \mathrm{rank}_j(u) \ge K\}\bigr|,
# \qquad \mathrm{PER}_{ii} = \mathrm{HR@}K \text{ of view } i.$$
#
# A large off-diagonal entry means view $i$ covers errors of view $j$: the views are complementary, which
# is what an ensemble needs. `flame_core.analysis.view_ranks` ranks every user's test target under every
# view (full ranking, history excluded), scoring a path with the item table of the network that embedded
# its input, and `per_map` turns the ranks into the map.
#
# We compare the default Ensemble-Scratch (two members from different seeds) with the default FLAME
# (paths `LL`, `LF`, `FL`, `FF`; `L` = learnable, `F` = frozen module, embedding first). `FF` is the frozen
# anchor alone, and `LL` is the learnable network FLAME serves.

# %%
views = {}
for label, method in [("Ensemble-Scratch", "ensemble_scratch"), ("FLAME", "flame")]:
    run = experiment(method)
    names, ranks = view_ranks(run.method, run.split, "test")  # (V, U)
    views[label] = {"run": run, "names": names, "ranks": ranks, "per": per_map(ranks, per_k)}

fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [2, 4]})
for ax, (label, v) in zip(axes, views.items()):
    sns.heatmap(pd.DataFrame(100 * v["per"], index=v["names"], columns=v["names"]), annot=True, fmt=".1f",
                cmap="viridis", vmin=0, square=True, cbar=False, ax=ax)
    ax.set(title=f"{label}", xlabel="view j (misses)", ylabel="view i (hits)")
fig.suptitle(f"PER maps (our reading), % of test users, K={per_k}; {dataset}, seed {seed}, "
             f"{epochs} epochs, profile '{profile}'")
fig.tight_layout()
fig.savefig(out / "per_maps.png", dpi=120)

# %% [markdown]
# The diagonal holds each view's HR@K. Summarising each map: the best single view, the share of users
# that *at least one* view gets right (what an oracle picking the right view per user would reach), and
# the mean off-diagonal entry (how much the views' errors differ).

# %%
hits_per_view = pd.DataFrame([{"method": label, "view": name, **metrics_from_ranks(v["ranks"][i])}
                              for label, v in views.items() for i, name in enumerate(v["names"])])
summary = pd.DataFrame([{
    "method": label, "views": len(v["names"]),
    f"best view HR@{per_k}": 100 * np.diag(v["per"]).max(),
    f"any view HR@{per_k}": 100 * (v["ranks"] < per_k).any(0).double().mean().item(),
    "mean off-diagonal": 100 * v["per"][~np.eye(len(v["names"]), dtype=bool)].mean(),
} for label, v in views.items()]).set_index("method")
display(Markdown(f"**Table 1.** Test metrics (percent) of every view. Protocol: {PROTOCOL}."))
display(hits_per_view.set_index(["method", "view"]).round(2))
display(Markdown(f"**Table 2.** PER map summaries (percent of test users). Protocol: {PROTOCOL}."))
summary.round(2)

# %% [markdown]
# Two things to look for. First, the paths that mix the networks are views no conventional ensemble has:
# `LF` is the frozen encoder reading the learnable embeddings, `FL` the learnable encoder reading the
# frozen embeddings. Neither network was trained to read the other's modules; the alignment loss is what
# pulls these paths towards agreement, so compare their rows in Table 1 with the pure paths `LL` and
# `FF`. Second, the off-diagonal mass measures complementarity: an ensemble whose views never disagree
# gains nothing from its members. How these numbers move with longer training is exercise 1.
#
# ## Ablations
#
# Each ablation changes one setting of the default FLAME run and keeps everything else, seed included;
# the default run itself (the same one the other chapters use) is the baseline.
#
# | setting | default | ablation | what it tests |
# |---|---|---|---|
# | `path_attention` | `independent`: each path attends within itself | `shared`: the released code concatenates the learnable and frozen embedding streams, so every path also attends to the other stream | the paper's description vs the released code |
# | `pair_weighting` | `similarity`: softmax of the negative mean similarity, less similar pairs weigh more | `uniform` | the weighting of path pairs |
# | `anneal` | $\lambda_e$ decays from $\lambda_0$ to $\lambda_R$ over $R = 200$ epochs | constant $\lambda_0$ | the annealing schedule |
# | `frozen_dropout` | the frozen network's dropout stays on in training (released code) | off | the frozen network as a noisy teacher |
# | `rec_from` | `separate`: $\mathcal{L}_\text{rec}$ from its own learnable forward (released code) | `path`: reuse the `LL` path's output | one forward fewer |

# %%
ABLATIONS = {
    "path_attention = shared": {"path_attention": "shared"},
    "pair_weighting = uniform": {"pair_weighting": "uniform"},
    "anneal = False (constant lambda_0)": {"anneal": False},
    "frozen_dropout = False": {"frozen_dropout": False},
    "rec_from = path": {"rec_from": "path"},
}
baseline = views["FLAME"]["run"]
ablation_runs = {"FLAME (defaults)": baseline, **{name: experiment("flame", **ch) for name, ch in ABLATIONS.items()}}


def row(name: str, run) -> dict:
    hist = run.results["history"]
    return {"variant": name, "valid NDCG@20": run.results["valid"]["NDCG@20"],
            "test NDCG@20": run.results["test"]["NDCG@20"], "test HR@20": run.results["test"]["HR@20"],
            "selected epoch": run.results["best_epoch"],
            "seconds per epoch": float(np.mean([h["train_seconds"] for h in hist]))}


ablation = pd.DataFrame([row(n, r) for n, r in ablation_runs.items()]).set_index("variant")
for key in ("valid NDCG@20", "test NDCG@20"):
    ablation[f"Δ {key}"] = ablation[key] - ablation.loc["FLAME (defaults)", key]
display(Markdown(f"**Table 3.** FLAME ablations, one setting changed at a time (percent; seconds per epoch "
                 f"measured on this machine, evaluation excluded). Protocol: {PROTOCOL}."))
ablation.round(2)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
sns.barplot(ablation.reset_index(), y="variant", x="Δ valid NDCG@20", color="tab:blue", ax=axes[0])
sns.barplot(ablation.reset_index(), y="variant", x="seconds per epoch", color="tab:gray", ax=axes[1])
axes[0].axvline(0, color="black", lw=1)
axes[0].set(title="change of valid NDCG@20 vs defaults (points)", ylabel="")
axes[1].set(title="training seconds per epoch")
fig.suptitle(f"FLAME ablations; {dataset}, seed {seed}, {epochs} epochs, profile '{profile}'")
fig.tight_layout()
fig.savefig(out / "ablations.png", dpi=120)

# %% [markdown]
# How to read the table under the quick profile: with one seed and a few epochs, a difference smaller
# than the spread between seeds of the same setting (chapter 3's main table shows it) is not evidence.
# Some effects are mechanical, though. Because $\lambda_e = \lambda_0 (\lambda_R/\lambda_0)^{\min(e, R)/R}$
# is annealed over the paper's horizon $R = 200$ whatever the budget, a short run trains with $\lambda_e$
# close to 1 (0.94, 0.89, 0.84 in the first three epochs), so the constant-$\lambda$ ablation differs
# from the defaults by a few percent of the alignment weight only. The weights each run used are in its
# history:

# %%
pd.DataFrame({name: [h["lambda"] for h in ablation_runs[name].results["history"]]
              for name in ["FLAME (defaults)", "anneal = False (constant lambda_0)"]},
             index=pd.RangeIndex(1, epochs + 1, name="epoch")).map("{:.2g}".format)

# %% [markdown]
# In short runs the constant-$\lambda$ ablation is therefore expected to stay close to the defaults;
# annealing matters over the full profile. And `rec_from = path` saves one learnable forward per step,
# and `frozen_dropout = False` some dropout work. The seconds are wall-clock times of runs made one after another, so they are
# comparable only on an otherwise idle machine; chapter 6 measures cost under controlled conditions.
#
# ## Sensitivity
#
# A sweep over one hyper-parameter (the parameter cell picks which, and the values; the full profile
# sweeps more values). The value that equals the default reuses the default run.

# %%
sens_runs = {float(v): experiment("flame", **{sensitivity_param: float(v)}) for v in sensitivity_values}
sensitivity = pd.DataFrame([{sensitivity_param: v, **row(f"{sensitivity_param} = {v:g}", r)}
                            for v, r in sens_runs.items()]).set_index("variant")
display(Markdown(f"**Table 4.** FLAME's sensitivity to `{sensitivity_param}` (percent). Protocol: {PROTOCOL}."))
display(sensitivity.round(2))
long = sensitivity.melt(id_vars=[sensitivity_param], value_vars=["valid NDCG@20", "test NDCG@20"],
                        var_name="evaluated on", value_name="NDCG@20")
fig, ax = plt.subplots(figsize=(5.5, 3.6))
sns.lineplot(long, x=sensitivity_param, y="NDCG@20", hue="evaluated on", marker="o", ax=ax)
ax.set_xscale("log")
ax.set_title(f"NDCG@20 (%) against {sensitivity_param}; {dataset}, seed {seed}, {epochs} epochs, '{profile}'",
             fontsize=9)
fig.tight_layout()
fig.savefig(out / "sensitivity.png", dpi=120)

# %% [markdown]
# ## Summary
#
# - PER maps, in our reading (the paper's definition was not available), count how often one view gets a
#   user right that another misses; the diagonal is each view's HR@K. FLAME's four paths come from two
#   networks, yet its mixed paths `LF` and `FL` are views no conventional ensemble has.
# - The ablations change one setting of FLAME at a time against the shared default run: path attention
#   (the paper's independent paths vs the released code's shared attention), pair weighting, annealing,
#   the frozen network's dropout and the source of the recommendation loss, with accuracy and seconds per
#   epoch side by side.
# - A one-parameter sensitivity sweep closes the chapter. Under the quick profile all of this is one seed
#   and a few epochs: it checks the machinery and the direction of mechanical effects (cost, the
#   schedule), not the size of accuracy effects.
# - What this build's numbers show:

# %%
moved = ablation.drop(index="FLAME (defaults)")["Δ valid NDCG@20"]
cost = ablation["seconds per epoch"] / ablation.loc["FLAME (defaults)", "seconds per epoch"]
lines = ["PER maps: " + "; ".join(f"{m}'s {int(r['views'])} views get {r[f'any view HR@{per_k}']:.1f}% of the users right "
                                  f"between them against {r[f'best view HR@{per_k}']:.1f}% for the best one "
                                  f"(mean off-diagonal {r['mean off-diagonal']:.2f}%)" for m, r in summary.iterrows()) + ".",
         f"Ablations (one seed, {epochs} epochs): the largest change of validation NDCG@20 is {moved.abs().max():.2f} "
         f"points ({moved.abs().idxmax()}); seconds per epoch range from {cost.min():.2f} to {cost.max():.2f} times "
         "the defaults'. Differences of this size within one seed and a few epochs are not evidence of an effect.",
         f"Sensitivity to {sensitivity_param}: validation NDCG@20 "
         + ", ".join(f"{v:g} → {sensitivity.loc[f'{sensitivity_param} = {v:g}', 'valid NDCG@20']:.2f}"
                     for v in sensitivity[sensitivity_param]) + "."]  # fmt: skip
display(Markdown("\n\n".join(lines)))

# %% [markdown]
#
# ## Exercises
#
# 1. Rerun with `-p epochs 20`. Does the mean off-diagonal PER entry of FLAME's paths grow or shrink as the
#    alignment loss pulls the paths together? What would you expect from Ensemble-Scratch?
# 2. Compute the PER map with `per_k = 5` and `per_k = 50`. Which conclusions depend on K?
# 3. Run every ablation for the seeds of chapter 3 and report the mean and standard deviation of each
#    Δ. Which ablations are distinguishable from seed noise?
# 4. With `split = "emb|block|block"` FLAME has eight paths. Draw its PER map. Are paths that share a
#    longer prefix more alike?
# 5. Set `sensitivity_param = "tau"` and `sensitivity_values = [0.5, 1.0, 2.0]`. The alignment uses
#    unnormalised dot products: explain why the temperature and the scale of the representations
#    interact.

# %%
flame_v, scratch_v = views["FLAME"], views["Ensemble-Scratch"]
per_all = np.concatenate([v["per"].ravel() for v in views.values()])
diag_gap = max(np.abs(np.diag(v["per"]) - (v["ranks"] < per_k).double().mean(1).numpy()).max() for v in views.values())
checks = [
    {"name": "PER entries >= 0", "value": float(per_all.min()), "op": ">=", "bound": 0.0},
    {"name": "PER entries <= 1", "value": float(per_all.max()), "op": "<=", "bound": 1.0},
    {"name": f"PER diagonal = HR@{per_k} of each view (max abs difference)", "value": float(diag_gap),
     "op": "<=", "bound": 1e-12},
    {"name": "FLAME views = 4 paths", "value": len(flame_v["names"]), "op": "==", "bound": 4},
    {"name": "ablations present", "value": len(ablation_runs) - 1, "op": "==", "bound": len(ABLATIONS)},
    {"name": "ablation valid NDCG@20 > 0", "value": float(ablation["valid NDCG@20"].min()), "op": ">", "bound": 0.0},
    {"name": "ablation seconds per epoch > 0", "value": float(ablation["seconds per epoch"].min()), "op": ">",
     "bound": 0.0},
    {"name": "sensitivity values present", "value": len(sens_runs), "op": "==", "bound": len(set(sensitivity_values))},
]
if f"HR@{per_k}" in baseline.results["test"]:  # the LL path is the network FLAME serves: same ranks as its test
    checks.append({"name": f"PER[LL, LL] = FLAME's test HR@{per_k}",
                   "value": abs(100 * flame_v["per"][0, 0] - baseline.results["test"][f"HR@{per_k}"]),
                   "op": "<=", "bound": 1e-9})
for k in range(len(scratch_v["names"])):  # each member's view ranks agree with the engine's member evaluation
    checks.append({"name": f"member{k} NDCG@20 from view ranks = engine's",
                   "value": abs(metrics_from_ranks(scratch_v["ranks"][k])["NDCG@20"]
                                - scratch_v["run"].results["test"][f"member{k}/NDCG@20"]),
                   "op": "<=", "bound": 1e-9})
metrics = {
    "chapter": "04_analysis", "dataset": dataset, "profile": profile, "epochs": epochs, "seed": seed,
    "max_len": max_len, "per_k": per_k,
    "per_maps": {label: {"views": v["names"], "map": v["per"].tolist()} for label, v in views.items()},
    "per_summary": summary.reset_index().to_dict(orient="records"),
    "ablations": ablation.reset_index().to_dict(orient="records"),
    "sensitivity": {"param": sensitivity_param, "rows": sensitivity.reset_index().to_dict(orient="records")},
    "checks": checks,
}
print(flamebook.write_metrics(output_dir, metrics))
pd.DataFrame(checks)
