# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Efficiency
#
# FLAME promises an ensemble's accuracy for the training cost of two networks and the inference cost of
# one. This chapter measures both halves of that promise. It first reads the committed results of the
# speed benchmark (`bench/speed.py`): the time of a training step for Single and FLAME, with the packed
# token layout against the padded one, a full epoch, the evaluation of every user, memory and the share
# of the machine's peak arithmetic throughput. It then reruns the benchmark on this chapter's dataset and
# device, measures how the cost of a training step and its activation memory grow with the number of
# representations (modular paths against the members of a conventional ensemble, and sampled paths), and
# times inference. Every number below is measured while the chapter runs or loaded from a file under
# `bench/results/` that names its machine and date; timings depend on the machine and on whatever else
# runs on it, so read them as ratios.
#
# **After this chapter you can** measure a training step's time, FLOPs and activation memory with the
# library's own tools (`flame_core.measure`); predict from the paths' count what a FLAME step should cost
# against Single and check it; say what the packed layout, the CUDA graph and stacked seeds each buy and on
# which device; and compare the inference cost of FLAME with a conventional ensemble's.
#
# **Prerequisites.** Chapters 2 and 3; what a FLOP is and why a backward pass costs about two forward
# passes; the difference between arithmetic-bound and memory- or overhead-bound code.

# %% tags=["hide-input"]
import json
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import pandas as pd
import plotly.express as px
import seaborn as sns
import torch
from IPython.display import Markdown, display

import flamebook
from flame_core import measure
from flame_core.config import ModelConfig
from flame_core.engine import evaluate
from flame_core.experiments import load
from flame_core.paths import block_split
from flame_core.utils import resolve_device

# %% tags=["parameters"]
dataset = "ml-100k"  # dataset of the live measurements
device = "cpu"
epochs = 3  # this chapter trains nothing: epochs, runs_dir and results_dir are the shared profile's
seeds = [42, 43]
max_len = 10  # input window of the scaling and inference measurements
profile = "quick"
runs_dir = "_build/runs"
output_dir = "_build/outputs/06_efficiency"
results_dir = "results"
bench_dir = "bench/results"  # committed benchmark results: every *.json file there is read
speed_steps = 5  # timed training steps per variant, after 4 warm-up steps
speed_threads = 1  # CPU threads of the live measurements (0: torch's default); see below
batch_size = 256
head_catalogues = [1349, 11924]  # catalogue sizes of the loss comparison: ml-100k's and amazon-toys' items

# %% tags=["hide-input"]
out = flamebook.setup(output_dir, seed=seeds[0])
dev = resolve_device(device)
if speed_threads:
    torch.set_num_threads(speed_threads)
print(
    f"profile {profile}: dataset {dataset}, device {dev}, max_len {max_len}, "
    f"{speed_steps} timed steps per variant, {torch.get_num_threads()} CPU thread(s)"
)

# %% [markdown]
# ## Where the time goes
#
# One training step of **Single** runs one SASRec forward and backward over a batch of 256 sequences and
# scores the batch against every item. **FLAME** with the official split `emb|enc` evaluates four paths.
# Paths that begin with the same module share it, so each network's embedding is computed once; then the
# learnable encoder runs on both embeddings (paths `LL`, `FL`) and so does the frozen one (`LF`, `FF`).
# The frozen weights never receive gradients and the purely frozen path `FF` needs no autograd at all,
# but `LF` must carry gradients back through the frozen encoder to the learnable embedding. By default
# the recommendation loss also takes its own learnable forward pass with fresh dropout
# (`rec_from="separate"`, as the released code does); `rec_from="path"` reuses the `LL` path instead.
#
# Counting FLOPs (`flame_core.measure.step_flops`; a trained pass costs three forward passes, a frozen pass that
# only carries gradients two, a pass without autograd one), a FLAME step costs 12 forward passes of the
# encoder plus one scoring of all items for $L_\text{rec}$, where Single costs 3 and the same scoring.
# So a FLAME step costs at most four Single steps: close to four when scoring the catalogue is cheap
# next to the encoder (MovieLens-100K, 1,349 items), less when the catalogue is large (Amazon Toys,
# 11,924 items). At inference FLAME keeps only its learnable network: exactly a Single SASRec.
#
# Two implementation choices decide how close the measured times come to those counts
# (`flame_core.backbone`): per-token work runs on the real tokens only (the *packed* layout; the padded
# layout of the released code spends most of its work on padding when sequences are short), and the last
# Transformer block computes queries, attention output and feed-forward for the last position only,
# because a training sample uses nothing else.
#
# A third choice concerns $L_\text{rec}$, which scores every sample against the whole catalogue: on Amazon
# Toys a batch's scores are a 256 x 11,925 matrix, the largest tensor of a step, and at $d = 64$ its
# products are cheap next to the passes over it. Autograd through `F.cross_entropy` of those scores writes
# four matrices of that size (the scores' copy for the padding column, the log-softmax, the one-hot
# gradient and the log-softmax's gradient) and reads them again. `flame_core.losses.item_cross_entropy`
# computes the same loss and gradients (a test compares both with autograd's) from the representations
# and the item table, keeping one buffer, the exponentiated scores, which its backward turns in place into
# the gradient, softmax minus one-hot. On the CPU the engine also asks glibc's allocator to keep freed
# memory (`flame_core.utils.keep_freed_memory`): by default a freed matrix of a few MB goes back to the
# kernel, and the next step faults its pages in again. The cell times both losses, alternated in one loop
# (`flame_core.measure.score_head_ms`, forward and backward of a batch of random representations), at
# two catalogue sizes.

# %%
head = flamebook.measured(
    out,
    "score_head",
    lambda: [
        {"items": n, **measure.score_head_ms(batch_size, n, ModelConfig().hidden, 4 * speed_steps, dev)}
        for n in head_catalogues
    ],
)
head_table = pd.DataFrame(head).rename(
    columns={"autograd": "autograd through the scores, ms", "item_cross_entropy": "item_cross_entropy, ms"}
)
head_table["speed-up"] = head_table.iloc[:, 1] / head_table.iloc[:, 2]
display(head_table.round(2))
h = head[-1]
display(
    Markdown(
        f"Over {h['items']:,} items the loss with its gradients takes {h['item_cross_entropy']:.1f} ms against "
        f"{h['autograd']:.1f} ms through autograd ({h['autograd'] / h['item_cross_entropy']:.2f}x), here on "
        f"{dev.type} with {torch.get_num_threads()} thread(s); the committed benchmark below gives the same "
        "comparison on its machine."
    )
)

# %% [markdown]
# ## The committed benchmark
#
# `python bench/speed.py` measures, in one process on one machine, the time of a training step as the
# engine runs it (forward, backward and Adam, after four warm-up steps) for Single, FLAME and FLAME with
# `rec_from="path"`, each with the packed and the padded layout and, on a GPU, as a captured CUDA graph,
# all side by side (five rounds that each run every variant in turn; the median round counts, so a machine
# that slows down during the run slows every variant alike; files from before this change timed them one
# after another); the FLOP/s those steps achieve against a large matrix product on the same machine; a naive
# SASRec written with `torch.nn` blocks (`bench/naive.py`) on the same batches, as a baseline (in the same
# rounds, in files that time side by side); three
# stacked seeds against one; the evaluation of every user; one full FLAME epoch with its validation in a
# fresh process, and the peak resident memory. Each `speed-*.json` file under `bench/results/` is one such
# run (older files lack the newer measurements); the `related-*.json` files hold `bench/related.py`'s step
# costs of every method, the related ones included, against Single.

# %%
bench_files = sorted(flamebook.resolve(bench_dir).glob("speed-*.json"))
bench = {}
for path in bench_files:
    r = json.loads(path.read_text())
    amp = ", AMP" if r["amp"] else ""
    label = f"{r['dataset']}, {r['device']}{amp}, {r['threads']} threads, {r['date'][:10]}"
    assert label not in bench, f"two benchmark files read as {label!r}: {bench[label]['file']}, {path.name}"
    bench[label] = r | {"file": path.name}
summary = pd.DataFrame(
    [
        {
            "run": label,
            "file": r["file"],
            "torch": r["torch"],
            "training samples": r["training_samples"],
            "batch": r["batch_size"],
            "timed steps": r["steps"],
            "amp": r["amp"],
            "compile": r["compile"],
        }
        for label, r in bench.items()
    ]
).set_index("run")
print(f"{len(bench_files)} benchmark result(s) in {bench_dir}/")
summary

# %% tags=["hide-input"]
steps = pd.DataFrame(
    [
        {"run": label, "variant": name, "layout": layout, "ms per step": row[f"{layout}_ms"]}
        for label, r in bench.items()
        for name, row in r["steps_ms"].items()
        for layout in ("packed", "padded")
    ]
)
grid = sns.catplot(
    data=steps,
    x="variant",
    y="ms per step",
    hue="layout",
    col="run",
    kind="bar",
    col_wrap=min(2, max(1, len(bench))),
    height=3.6,
    aspect=1.3,
    sharey=False,
)
grid.set_titles("{col_name}")
grid.figure.suptitle("Training step time, packed vs padded layout (committed benchmark results)", y=1.03)
plt.show()

# %% [markdown]
# The ratios are what carries over between machines: how much the packed layout saves, and what a FLAME
# step costs in Single steps.

# %% tags=["hide-input"]
ratios = pd.DataFrame(
    [
        {
            "run": label,
            "variant": name,
            "packed ms": row["packed_ms"],
            "padded ms": row["padded_ms"],
            "packed speed-up": row["packed_speedup"],
            "x Single": row["ratio_to_single"],
            "FLOPs x Single": row["gflops_per_step"] / r["steps_ms"]["single"]["gflops_per_step"],
            "GFLOP/s": row["achieved_gflops"],
            "% of matmul peak": 100 * row["achieved_gflops"] / r["matmul_peak_gflops"],
        }
        for label, r in bench.items()
        for name, row in r["steps_ms"].items()
    ]
).set_index(["run", "variant"])
ratios.round(2)

# %% [markdown]
# What the engine's choices buy on each machine, where the file measured it: our Single step against the
# naive `torch.nn` SASRec, the next-item loss through autograd against `item_cross_entropy` (over the
# dataset's items, as above), the captured CUDA graph against the same padded step run eagerly, three
# seeds stacked in one model against one seed (below 3: stacking is cheaper than three separate runs), and,
# on a CPU, three seeds in processes side by side (as `sweep --parallel W` runs them, cores/W threads each;
# the better of the W measured) against one process training them one after another (below 1: running
# them side by side pays).

# %% tags=["hide-input"]
gains = pd.DataFrame(
    [
        {
            "run": label,
            "naive SASRec ms": r.get("naive_sasrec_ms"),
            "naive / our Single": r.get("naive_over_single"),
            "FLAME graph ms": r["steps_ms"]["flame"].get("graph_ms"),
            "graph speed-up (FLAME)": r["steps_ms"]["flame"].get("graph_speedup"),
            "loss: autograd / item_cross_entropy": r.get("score_head_ms", {}).get("autograd_over_fused"),
            "3 stacked Single / 1": r.get("stacked", {}).get("single", {}).get("x3_over_x1"),
            "3 stacked FLAME / 1": r.get("stacked", {}).get("flame", {}).get("x3_over_x1"),
            "3 FLAME seeds side by side / one after another": min(
                (row["flame"]["over_separate"] for row in r.get("parallel_seeds", {}).get("side_by_side", [])),
                default=None,
            ),
            "FLAME epoch + validation s": r.get("epoch_with_valid_seconds"),
        }
        for label, r in bench.items()
    ]
).set_index("run")
gains.round(2)

# %% [markdown]
# A whole epoch, the evaluation of every user and the memory, as the benchmark measured them (the epoch
# runs in a separate process, so its peak resident memory is the epoch's own; runs made with
# `--no-epoch` have no epoch figures).

# %% tags=["hide-input"]
costs = pd.DataFrame(
    [
        {
            "run": label,
            "FLAME epoch s": r.get("epoch_seconds"),
            "epoch peak RSS MB": r.get("epoch_peak_rss_mb"),
            "evaluation s (all users)": r["eval_seconds_all_users"],
            "users": r["eval_users"],
            "benchmark peak RSS MB": r["peak_rss_mb"],
            "matmul peak GFLOP/s": r["matmul_peak_gflops"],
        }
        for label, r in bench.items()
    ]
).set_index("run")
costs.round(2)

# %% [markdown]
# The achieved throughput is a small share of what the same machine reaches on one large matrix product.
# A SASRec with hidden size 64 is made of small matrix products and memory-bound element-wise work
# (dropout, LayerNorm, softmax), so the step is limited by memory traffic and per-operation overhead,
# not by arithmetic; that is also why skipping the padding saves more than its share of FLOPs suggests.

# %% tags=["hide-input"]
share = ratios.reset_index()
fig, ax = plt.subplots(figsize=(7, 2.2 + 0.4 * len(share)))
sns.barplot(data=share, y="run", x="% of matmul peak", hue="variant", ax=ax)
ax.set(title="Achieved share of the matmul peak (packed layout, real-token FLOPs)", ylabel="")
plt.show()

# %% [markdown]
# ## The benchmark, rerun here
#
# The same script on this chapter's dataset and device, with fewer timed steps and without the full
# epoch or the seeds in parallel processes, so that it takes seconds (the benchmark uses the default
# window of 50 items, whatever this chapter's `max_len`). On MovieLens-100K the sequences are long (up to
# 53 items are kept per user), so padding is a smaller share of the work than on the Amazon data and the
# packed layout saves less.
#
# On a CPU the quick profile measures with one thread (`speed_threads`). Timings taken while other
# programs compete for the cores are only meaningful as ratios, and with two or more threads they are
# not even that: each operation waits for its slowest thread, so a step slows down many times more than
# its share of the machine. One thread slows every variant alike.

# %%
live_json = out / "speed.json"
cmd = [
    sys.executable,
    str(flamebook.resolve("bench/speed.py")),
    "--dataset",
    dataset,
    "--device",
    device,
    "--steps",
    str(speed_steps),
    "--threads",
    str(speed_threads),
    "--no-epoch",
    "--seed-rounds",  # no seeds in parallel processes either: they need the machine to themselves
    "0",
    "--json",
    str(live_json),
]


def benchmark() -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=flamebook.repo_root(), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"bench/speed.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "printed": proc.stdout.strip(),
        "seconds": time.perf_counter() - t0,
        "result": json.loads(live_json.read_text()),
    }


bench_run = flamebook.measured(out, "speed", benchmark)  # once per book build (see flamebook.measured)
print("$ python bench/speed.py " + " ".join(cmd[2:-2]), "--json", live_json.name)
print(bench_run["printed"])
print(f"({bench_run['seconds']:.0f} s)")
live = bench_run["result"]

# %% tags=["hide-input"]
live_steps = pd.DataFrame(
    [
        {"variant": name, "layout": layout, "ms per step": row[f"{layout}_ms"]}
        for name, row in live["steps_ms"].items()
        for layout in ("packed", "padded")
    ]
)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
sns.barplot(data=live_steps, x="variant", y="ms per step", hue="layout", ax=ax)
ax.set(title=f"Training step time, {live['dataset']} on {live['device']} (measured now)", xlabel="")
plt.show()
live_flame = live["steps_ms"]["flame"]
print(
    f"FLAME step = {live_flame['ratio_to_single']:.2f} Single steps; "
    f"packed layout {live_flame['packed_speedup']:.2f}x faster than padded for FLAME, "
    f"{live['steps_ms']['single']['packed_speedup']:.2f}x for Single"
)

# %% [markdown]
# ## Scaling with the number of representations
#
# A conventional ensemble of $N$ networks pays $N$ times for every step and again at inference. FLAME's
# representations are paths through two networks: with the split `net` (Ensemble-Guide) there are two,
# with `emb|enc` four, with one module per Transformer block (`emb|block|block` for two layers) eight.
# Prefix sharing means a path costs less than a network, and the training loss can also use only $K$
# paths drawn afresh at every step (`num_paths`; the purely learnable path is always among them).
#
# Below, every variant takes the same batches of this chapter's dataset with `max_len` items; the
# benchmark's own functions build it (`flame_core.measure.untrained`, with an untrained frozen network,
# since speed does not depend on the anchor's weights), time it as the engine runs it
# (`flame_core.measure.step_ms`) and count its activations (`flame_core.measure.activation_mb`). Memory is measured
# as the bytes of the tensors autograd keeps for the backward pass of one step (the activations; the
# weights and Adam's state add a constant that is small for these models), counted by a
# `saved_tensors_hooks` pair.

# %%
data, split = load(dataset, max_len)
split = split.to(dev)
model = ModelConfig(max_len=max_len)
blocks = block_split(model.layers)  # a module per Transformer block
n_paths = 2 ** (1 + model.layers)  # 2^M paths, M = 1 + layers


ens, mod, smp = "conventional ensemble", "modular paths", "sampled paths"
variants = [  # family, name, method, changes, representations
    ("Single", "Single", "single", {}, 1),
    (ens, "Ensemble-Scratch N=2", "ensemble_scratch", {"members": 2}, 2),
    (ens, "Ensemble-Scratch N=4", "ensemble_scratch", {"members": 4}, 4),
    (ens, f"Ensemble-Scratch N={n_paths}", "ensemble_scratch", {"members": n_paths}, n_paths),
    (mod, "Ensemble-Guide (net)", "ensemble_guide", {}, 2),
    (mod, "FLAME emb|enc", "flame", {}, 4),
    (mod, f"FLAME {blocks}", "flame", {"module_split": blocks}, n_paths),
    (smp, f"FLAME {blocks}, K=2", "flame", {"module_split": blocks, "num_paths": 2}, 2),
    (smp, f"FLAME {blocks}, K=4", "flame", {"module_split": blocks, "num_paths": 4}, 4),
]


def variant_row(family, name, method, changes, reps) -> dict:
    m = measure.untrained(method, data, model, dev, **changes)
    params = m.num_parameters()
    return {
        "family": family,
        "variant": name,
        "representations": reps,
        "ms per step": measure.step_ms(m, split, speed_steps, batch_size),
        "activation MB": measure.activation_mb(m, split, batch_size),
        "trainable params": params["trainable"],
        "frozen params": params["frozen"],
    }


scaling = pd.DataFrame(flamebook.measured(out, "scaling", lambda: [variant_row(*v) for v in variants]))
single_ms = scaling.loc[scaling.variant == "Single", "ms per step"].item()
scaling["x Single"] = scaling["ms per step"] / single_ms
scaling.round(2)

# %% [markdown]
# The interactive figure puts step time against the number of representations; the marker size is the
# activation memory (hover for the numbers). A conventional ensemble pays for every member: $N$ forward
# and backward passes and $N$ scorings of all items. Modular paths share prefixes and half of their
# modules are frozen, but each path that mixes the two networks still runs a trained module on new
# inputs; sampling $K$ paths bounds the cost whatever the split. The comparison at equal numbers of
# representations follows the figure.

# %% tags=["hide-input"]
fig = px.scatter(
    scaling,
    x="representations",
    y="ms per step",
    color="family",
    size="activation MB",
    hover_name="variant",
    text="variant",
    size_max=28,
    hover_data={
        "activation MB": ":.1f",
        "x Single": ":.2f",
        "trainable params": True,
        "frozen params": True,
        "family": False,
    },
    title=f"Training step time vs representations ({dataset}, {dev}, max_len {max_len})",
)
fig.update_traces(textposition="top center", textfont_size=9)
fig.update_layout(
    height=500,
    legend_title_text="",
    yaxis_title="ms per training step",
    xaxis_title="representations (members or paths) in the training loss",
)
fig.show()

# %% tags=["hide-input"]
by_name = scaling.set_index("variant")
pairs = [
    (f"Ensemble-Scratch N={r}", name)
    for name, r in [("Ensemble-Guide (net)", 2), ("FLAME emb|enc", 4), (f"FLAME {blocks}", n_paths)]
]
versus = pd.DataFrame(
    [
        {
            "representations": by_name.loc[e, "representations"],
            "modular": f,
            "ensemble": e,
            "step time": by_name.loc[f, "ms per step"] / by_name.loc[e, "ms per step"],
            "activation memory": by_name.loc[f, "activation MB"] / by_name.loc[e, "activation MB"],
            "trained parameters": by_name.loc[f, "trainable params"] / by_name.loc[e, "trainable params"],
        }
        for e, f in pairs
    ]
).set_index("representations")
print("modular paths / conventional ensemble with as many representations:")
versus.round(2)

# %% [markdown]
# ## Memory
#
# Activation memory follows the number of paths in the same way: each path keeps its own activations for
# the backward pass except where it shares a prefix with another path or runs without autograd (the
# purely frozen path). Parameters tell the other half of the story: FLAME trains exactly the parameters of
# one SASRec and keeps one more, frozen, copy; a conventional ensemble trains all of its members.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
sns.barplot(data=scaling, y="variant", x="activation MB", hue="family", ax=axes[0])
axes[0].set(title="Saved activations of one training step", ylabel="")
axes[0].legend(fontsize=8, loc="lower right")
params_long = scaling.melt(
    id_vars=["variant"], var_name="kind", value_name="parameters", value_vars=["trainable params", "frozen params"]
)
sns.barplot(data=params_long, y="variant", x="parameters", hue="kind", ax=axes[1])
axes[1].set(title="Parameters", ylabel="")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Inference
#
# Serving a conventional ensemble means running all of its members and averaging their scores; serving
# FLAME or Ensemble-Guide means running the learnable network alone, which is a Single SASRec. Here is the
# full-ranking evaluation of every test user (the best of three runs; the weights are untrained, which
# does not change the cost).


# %% tags=["hide-input"]
def serve_seconds(m, repeats=3):
    """Best wall-clock seconds of a full-ranking evaluation of every test user."""
    evaluate(m, split, "test", members=False)  # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(m, split, "test", members=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds.append(time.perf_counter() - t0)
    return min(seconds)


serving = [
    ("Single", "single", {}),
    ("FLAME (learnable network)", "flame", {}),
    ("Ensemble-Scratch N=2", "ensemble_scratch", {"members": 2}),
    ("Ensemble-Scratch N=4", "ensemble_scratch", {"members": 4}),
]
inference = []
for name, method, changes in serving:
    m = measure.untrained(method, data, model, dev, **changes).eval()
    # parameters that inference reads: everything but FLAME's frozen network
    used = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("frozen."))
    inference.append({"model": name, "seconds": serve_seconds(m), "parameters used": used})
inference = pd.DataFrame(inference).set_index("model")
inference["x Single"] = inference["seconds"] / inference.loc["Single", "seconds"]
fig, ax = plt.subplots(figsize=(6.5, 2.8))
sns.barplot(data=inference.reset_index(), y="model", x="seconds", ax=ax)
users = split.test_targets.shape[0]
ax.set(title=f"Full-ranking evaluation of all {users:,} test users ({dataset}, {dev})", xlabel="seconds", ylabel="")
plt.show()
inference.round(3)

# %% [markdown]
# ## What we learned
#
# - A FLAME training step costs what its arithmetic predicts: at most four Single steps with the split
#   `emb|enc`, fewer the larger the item catalogue, because paths share prefixes, the frozen weights get
#   no gradients and the purely frozen path runs without autograd.
# - On a CPU, running per-token work on the real tokens only saves most when sequences are short (the
#   Amazon data); on long MovieLens sequences it matters less. On a GPU the padded step wins, captured
#   as one CUDA graph (the committed results say by how much where a GPU measured it).
# - Step time and activation memory grow with the number of paths. Against a conventional ensemble with
#   as many representations, the comparison above says what FLAME saves on this machine: always
#   parameters and activation memory, and step time once the split has more modules; sampling $K$ paths
#   per step bounds the cost whatever the split.
# - At inference FLAME is a Single SASRec: same parameters, same time. A conventional ensemble pays for
#   every member.
# - The models are small, so a step reaches only a small share of the machine's matrix-product peak:
#   memory traffic and per-operation overhead, not arithmetic, bound the time. The largest tensor is the
#   batch's scores over every item; the loss comparison above measures what computing the loss without
#   autograd's copies of it (`item_cross_entropy`) saves at two catalogue sizes.
# - What this build's numbers show:

# %% tags=["remove-input"]
sc = scaling.set_index("variant")
lines = [
    f"Measured here ({dev}, {dataset}, max_len {max_len}): a FLAME emb|enc step costs "
    f"{sc.loc['FLAME emb|enc', 'x Single']:.2f} Single steps and FLAME {blocks} "
    f"{sc.loc[f'FLAME {blocks}', 'x Single']:.2f}; Ensemble-Scratch with {n_paths} members costs "
    f"{sc.loc[f'Ensemble-Scratch N={n_paths}', 'x Single']:.2f}. Serving FLAME takes "
    f"{inference.loc['FLAME (learnable network)', 'x Single']:.2f} times Single's time, Ensemble-Scratch N=4 "
    f"{inference.loc['Ensemble-Scratch N=4', 'x Single']:.2f}.",
    f"The live benchmark: FLAME's step is {live_flame['ratio_to_single']:.2f} Single steps and the packed layout "
    f"{live_flame['packed_speedup']:.2f}x the padded one's speed on this device; the next-item loss takes "
    f"{live['score_head_ms']['item_cross_entropy']:.2f} ms with `item_cross_entropy` against "
    f"{live['score_head_ms']['autograd']:.2f} ms through autograd over {dataset}'s items.",
]
display(Markdown("\n\n".join(lines)))

# %% [markdown]
# ## Exercises
#
# 1. Time a Single and a FLAME step with one and with two CPU threads. Does threading help Single and FLAME
#    equally?
# 2. On a GPU, run `python bench/speed.py --device cuda` with and without `--compile`, and add the result
#    files to `bench/results/`: this chapter picks them up. How do the CUDA graph, torch.compile and the
#    packed layout compare there, and why would packing matter less (or more) than on a CPU?
# 3. Count the forward passes of a FLAME step with the per-block split by hand, as `measure.step_flops`
#    does for `emb|enc`, and compare the predicted ratio to Single with the measured one above.
# 4. The activation memory here is that of the tensors saved for backward. How does it grow with the batch
#    size, for Single and for FLAME?
# 5. Sampling $K$ of 8 paths makes a step cheaper; chapter 2 measures what it does to accuracy. At which
#    $K$ does FLAME with the per-block split cost the same as Ensemble-Scratch with 2 members?
#
# ### Solutions
#
# Each solution is a cell to unfold; it runs when the chapter runs, so its numbers are this build's.

# %% [markdown]
# **Solution 1.** Both steps with one and with two threads (five timed steps each).


# %% tags=["hide-cell"]
def steps_with_threads(n: int) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return {
            name: measure.step_ms(measure.untrained(method, data, model, dev), split, 5, batch_size)
            for name, method in (("Single", "single"), ("FLAME", "flame"))
        }
    finally:
        torch.set_num_threads(before)


by_threads = {n: flamebook.measured(out, f"threads-{n}", lambda n=n: steps_with_threads(n)) for n in (1, 2)}
for name in ("Single", "FLAME"):
    print(
        f"{name}: {by_threads[1][name]:.1f} ms with one thread, {by_threads[2][name]:.1f} ms with two "
        f"({by_threads[1][name] / by_threads[2][name]:.2f}x)"
    )

# %% [markdown]
# **Solution 2.** What the committed GPU results say (a solution that needs a GPU can only read them).

# %% tags=["hide-cell"]
gpu = {label: r for label, r in bench.items() if r["device"].startswith("cuda")}
for label, r in gpu.items():
    f = r["steps_ms"]["flame"]
    graph = f"graph {f['graph_ms']:.1f} ms, " if "graph_ms" in f else "no graph measured, "
    print(f"{label}: FLAME {graph}padded {f['padded_ms']:.1f} ms, packed {f['packed_ms']:.1f} ms")
if not gpu:
    print("no GPU result is committed yet")

# %% [markdown]
# **Solution 3.** With the per-block split, the first block runs on two prefixes and the last on four,
# each through both networks: trained passes cost three forward passes, passes that only carry gradients
# through a frozen block two, the purely frozen prefix one. Per block $b$ (and $h$ for scoring the items):
# block 0 costs $3b + 2b + 3b + b = 9b$, block 1 $4 \cdot 3b + 3 \cdot 2b + b = 19b$, the separate
# learnable forward for $\mathcal{L}_\text{rec}$ $6b + 3h$: in all $34b + 3h$, against Single's $6b + 3h$.

# %% tags=["hide-cell"]
lengths = (split.train_inputs[:batch_size] > 0).sum(1).cpu()
b = measure.pass_flops(lengths, model, data.num_items, scores=False) / model.layers  # one block, roughly
h = 2 * model.hidden * (data.num_items + 1) * len(lengths)
predicted = (34 * b + 3 * h) / (6 * b + 3 * h)
measured = by_name.loc[f"FLAME {blocks}", "x Single"]
print(f"predicted FLAME {blocks} / Single: {predicted:.2f}; measured: {measured:.2f}")

# %% [markdown]
# **Solution 4.** Activations grow linearly with the batch: every saved tensor has a batch axis.

# %% tags=["hide-cell"]
growth = pd.DataFrame(
    {
        b_: {
            name: measure.activation_mb(measure.untrained(method, data, model, dev), split, b_)
            for name, method in (("Single", "single"), ("FLAME", "flame"))
        }
        for b_ in (64, 128, 256)
    }
)
print(growth.round(1))

# %% [markdown]
# **Solution 5.** From the step times of Table 2 (the per-block split, its sampled variants, the ensemble).

# %% tags=["hide-cell"]
k_costs = {
    2: by_name.loc[f"FLAME {blocks}, K=2", "ms per step"],
    4: by_name.loc[f"FLAME {blocks}, K=4", "ms per step"],
    n_paths: by_name.loc[f"FLAME {blocks}", "ms per step"],
}
target = by_name.loc["Ensemble-Scratch N=2", "ms per step"]
cheaper = [k for k, v in k_costs.items() if v <= target]
print(
    "ms per step: "
    + ", ".join(f"K={k} {v:.1f}" for k, v in k_costs.items())
    + f"; Ensemble-Scratch N=2 {target:.1f}. "
    + (f"Up to K={max(cheaper)} FLAME costs no more than it." if cheaper else "Every K here costs more.")
)

# %% tags=["remove-cell"]
ms = scaling.set_index("variant")["ms per step"]
mem = scaling.set_index("variant")["activation MB"]
serve = inference.rename(index={"FLAME (learnable network)": "FLAME"})
checks = [  # asserted by tests/test_book.py
    ("benchmark result files read", len(bench_files), ">=", 1),
    ("live benchmark: FLAME step / Single step", live_flame["ratio_to_single"], "<", 6),
    # the packed layout pays on a CPU; on a GPU the captured graph of the padded step is what pays
    ("live benchmark: FLAME padded / packed step", live_flame["packed_speedup"], ">", 1.0)
    if dev.type == "cpu"
    else ("live benchmark: FLAME eager / graph step", live_flame["graph_speedup"], ">", 1.0),
    ("FLAME emb|enc step / Single step", ms["FLAME emb|enc"] / single_ms, "<", 6),
    (f"FLAME {blocks}: K=2 step / all {n_paths} paths", ms[f"FLAME {blocks}, K=2"] / ms[f"FLAME {blocks}"], "<", 0.9),
    (f"activations: FLAME {blocks} / FLAME emb|enc", mem[f"FLAME {blocks}"] / mem["FLAME emb|enc"], ">", 1.0),
    ("activations: FLAME emb|enc / Ensemble-Guide", mem["FLAME emb|enc"] / mem["Ensemble-Guide (net)"], ">", 1.0),
    (
        f"activations: FLAME {blocks} / Ensemble-Scratch N={n_paths}",
        mem[f"FLAME {blocks}"] / mem[f"Ensemble-Scratch N={n_paths}"],
        "<",
        1.0,
    ),
    (
        "inference parameters: FLAME - Single",
        int(serve.loc["FLAME", "parameters used"] - serve.loc["Single", "parameters used"]),
        "==",
        0,
    ),
    ("inference time: FLAME / Single", float(serve.loc["FLAME", "x Single"]), "<", 2.0),
]
checks = [{"name": n, "value": float(v), "op": op, "bound": b} for n, v, op, b in checks]
live_single = live["steps_ms"]["single"]
metrics = {
    "chapter": "06_efficiency",
    "profile": profile,
    "dataset": dataset,
    "device": str(dev),
    "max_len": max_len,
    "threads": torch.get_num_threads(),
    "bench_files": [p.name for p in bench_files],
    "live_bench": {
        "flame_over_single": live_flame["ratio_to_single"],
        "flame_packed_speedup": live_flame["packed_speedup"],
        "single_packed_speedup": live_single["packed_speedup"],
        "eval_seconds_all_users": live["eval_seconds_all_users"],
    },
    "scaling": scaling.to_dict(orient="records"),
    "inference": inference.reset_index().to_dict(orient="records"),
    "checks": checks,
}
flamebook.write_metrics(output_dir, metrics)
pd.DataFrame(checks)
