"""The related methods (emkd, canet, ckd): losses against naive loops, augmentations, CANet's weight slicing,
router gradients and cost, CKD's frozen teachers and curriculum, resume, smoke runs through the engine and
the CLI."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from flame_core.analysis import view_ranks
from flame_core.augment import augment, crop, delete
from flame_core.canet import submodel_macs
from flame_core.cli import main
from flame_core.config import ConfigError, ModelConfig, TrainConfig
from flame_core.data import build_split, synthetic
from flame_core.engine import evaluate, train
from flame_core.experiments import run
from flame_core.losses import (
    emkd_contrast,
    routing_guide_loss,
    routing_uniform_loss,
    symmetric_kl,
    teacher_weights,
    weighted_distill,
)
from flame_core.methods import Single, build_method
from flame_core.metrics import evaluate_scores

from conftest import same_history

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the bench package
from bench.naive import pairwise_symmetric_kl  # noqa: E402  (the KL a pair at a time, as its formula reads)

MODEL = ModelConfig(hidden=16, layers=2, heads=2, max_len=12)
CFG = TrainConfig(
    epochs=3,
    batch_size=64,
    progress=False,
    canet_sizes=(8, 12, 16),
    ckd_teacher_hidden=(16, 8),
    ckd_curriculum_epochs=2,
)
TINY = (
    "--dataset synthetic --hidden 16 --max-len 12 --batch-size 128 --no-progress "
    "--canet-sizes 8,12,16 --ckd-teacher-hidden 16,8"
).split()
QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def tiny():
    data = synthetic(num_users=60, num_items=40, seed=3)
    return data, build_split(data, MODEL.max_len)


def make(method, data, cfg=CFG, model=MODEL, **changes):
    """The method with random (unpretrained) Singles as its pretrained networks: enough for mechanics."""
    m = build_method(data.num_items, model, cfg.replace(method=method, **changes))
    specs = m.pretrained_specs()
    m.set_pretrained([Single(data.num_items, sm, sc.replace(method="single")).learn for _, sm, sc in specs])
    return m


def left_padded(lengths, L=10, items=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, items + 1, (len(lengths), L), generator=gen)
    return seq.masked_fill(torch.arange(L) < L - torch.tensor(lengths)[:, None], 0)


# ---- losses against naive loops ------------------------------------------------------------------------------
def test_symmetric_kl_equals_naive_loops():
    scores = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores[..., 0] = float("-inf")
    T, expected = 2.0, 0.0
    for i in range(3):
        for j in range(i + 1, 3):
            for b in range(4):
                p, q = F.softmax(scores[i, b, 1:] / T, 0), F.softmax(scores[j, b, 1:] / T, 0)
                expected += sum(p[k] * math.log(p[k] / q[k]) + q[k] * math.log(q[k] / p[k]) for k in range(5)) / 4
    torch.testing.assert_close(symmetric_kl(scores, T), expected * T**2)


@pytest.mark.parametrize("members", [2, 3, 5])
@pytest.mark.parametrize("spread", [4.0, 0.01])  # members far apart, and nearly equal (a tiny KL)
def test_symmetric_kl_float32_at_catalogue_scale_matches_pairwise_float64(members, spread):
    """The one-pass form cancels large sums; in float32 over 12k items it must still match the pairwise sum."""
    gen = torch.Generator().manual_seed(1)
    scores = 4 * torch.randn(1, 16, 12_001, generator=gen) + spread * torch.randn(members, 16, 12_001, generator=gen)
    scores[..., 0] = float("-inf")
    expected = pairwise_symmetric_kl(scores.double())
    got = symmetric_kl(scores)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-3, atol=0.0)


def test_symmetric_kl_gradient_equals_the_pairwise_sums():
    """The one-pass rewrite is the same function, so the members learn the same from it."""
    scores = torch.randn(4, 3, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    scores[..., 0] = float("-inf")
    one, pairs = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    symmetric_kl(one, 2.0).backward()
    pairwise_symmetric_kl(pairs, 2.0).backward()
    torch.testing.assert_close(one.grad, pairs.grad)


def naive_infonce(a, b, tau):
    """Two directions: row r of a against every row of b (positive b[r]), and row r of b against a."""
    B = a.shape[0]
    one = [torch.logsumexp(torch.stack([a[r] @ b[c] / tau for c in range(B)]), 0) - a[r] @ b[r] / tau for r in range(B)]
    two = [torch.logsumexp(torch.stack([b[r] @ a[c] / tau for c in range(B)]), 0) - b[r] @ a[r] / tau for r in range(B)]
    return (sum(one) / B + sum(two) / B) / 2


def test_intra_and_cross_contrast_equal_naive_loops():
    gen = torch.Generator().manual_seed(1)
    original, augmented = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)  # (N, B, D) each
    intra, cross = emkd_contrast(original, augmented, tau=0.5)
    torch.testing.assert_close(intra, sum(naive_infonce(original[n], augmented[n], 0.5) for n in range(3)) / 3)
    pairs = [(x, y) for x in range(3) for y in range(3) if x != y]
    torch.testing.assert_close(cross, sum(naive_infonce(original[x], augmented[y], 0.5) for x, y in pairs) / 6)


def test_ckd_teacher_weights_and_weighted_distillation_equal_naive_loops():
    gen = torch.Generator().manual_seed(2)
    teacher = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)  # (K, B, B)
    student = torch.randn(4, 4, generator=gen, dtype=torch.float64)  # (B, B)
    T = 2.0
    weights = teacher_weights(teacher, T)
    expected_w = torch.zeros(3, 4, dtype=torch.float64)
    for b in range(4):
        p = [F.softmax(teacher[k, b] / T, 0) for k in range(3)]
        mean = sum(p) / 3
        score = [p[k][b] - sum(p[k][c] * math.log(p[k][c] / mean[c]) for c in range(4)) for k in range(3)]
        expected_w[:, b] = F.softmax(torch.stack(score), 0)
    torch.testing.assert_close(weights, expected_w)
    expected = 0.0
    for b in range(4):
        q = F.softmax(student[b] / T, 0)
        for k in range(3):
            p = F.softmax(teacher[k, b] / T, 0)
            expected += weights[k, b] * sum(p[c] * math.log(p[c] / q[c]) for c in range(4)) / 4
    torch.testing.assert_close(weighted_distill(student, teacher, weights, T), expected * T**2)
    assert torch.allclose(weights.sum(0), torch.ones(4, dtype=torch.float64))


def test_canet_uniform_and_guide_losses_equal_naive_loops():
    gen = torch.Generator().manual_seed(3)
    logits = [torch.randn(5, k, generator=gen, dtype=torch.float64) for k in (3, 2)]  # two decisions
    easy = torch.tensor([True, False, True, True, False])
    uniform = 0.0
    for lg in logits:
        mean = [sum(F.softmax(lg[b], 0)[k] for b in range(5)) / 5 for k in range(lg.shape[1])]
        uniform += sum(m * math.log(m * lg.shape[1]) for m in mean)
    torch.testing.assert_close(routing_uniform_loss(logits), uniform)
    guide = 0.0
    for lg in logits:
        K = lg.shape[1]
        for b in range(5):
            decay = [math.exp(-(k if easy[b] else K - 1 - k)) for k in range(K)]
            target = [d / sum(decay) for d in decay]
            guide -= sum(target[k] * F.log_softmax(lg[b], 0)[k] for k in range(K)) / 5
    torch.testing.assert_close(routing_guide_loss(logits, easy), guide)
    assert routing_uniform_loss([torch.zeros(4, 3)]).item() == pytest.approx(0.0)  # uniform routing costs nothing


# ---- augmentations -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn",
    [
        lambda s, g: crop(s, 0.6, g),
        lambda s, g: delete(s, 0.3, g),
        lambda s, g: delete(s, 0.9, g),
        lambda s, g: augment(s, 0.6, 0.3, g),
    ],
)
def test_augmentations_keep_rows_nonempty_contiguous_right_aligned_and_within_the_original(fn):
    lengths = [1, 2, 3, 5, 8, 10, 10, 4, 7, 1]
    seq = left_padded(lengths)
    out = fn(seq, torch.Generator().manual_seed(5))
    assert out.shape == seq.shape
    for row, new in zip(seq.tolist(), out.tolist()):
        items = [x for x in new if x]
        n = len(items)
        assert n >= 1 and all(x == 0 for x in new[: len(new) - n]) and all(new[len(new) - n :])  # no holes
        original = [x for x in row if x]
        it = iter(original)
        assert all(x in it for x in items)  # a subsequence of the original row, in order


def test_crop_is_contiguous_and_delete_drops_the_stated_share():
    seq = left_padded([10, 7, 4, 1], items=1000)
    gen = torch.Generator().manual_seed(0)
    for row, new in zip(seq.tolist(), crop(seq, 0.6, gen).tolist()):
        original, items = [x for x in row if x], [x for x in new if x]
        assert len(items) == max(1, math.floor(0.6 * len(original)))
        assert any(original[s : s + len(items)] == items for s in range(len(original)))
    kept = (delete(seq, 0.3, gen) > 0).sum(1)
    assert kept.tolist() == [10 - 3, 7 - 2, 4 - 1, 1]


# ---- CANet ---------------------------------------------------------------------------------------------------
def small_model(canet, route, seq):
    """A separately built plain (padded, looped) model of size (e, h, depth) holding copies of the sliced weights."""
    (e, h, depth), D, eps, heads = route, canet.model_cfg.hidden, canet.model_cfg.ln_eps, canet.model_cfg.heads
    w = {k: v.detach()[0].clone() for k, v in canet.net.named_parameters()}
    B, L = seq.shape
    x = w["item_emb"][:, :e][seq] + w["pos_emb"][:L, :e]
    x = F.layer_norm(x, (e,), w["emb_ln_w"][:e], w["emb_ln_b"][:e], eps)
    x = x @ canet.in_w.detach()[:e, :h].clone() + canet.in_b.detach()[:h]
    for i in range(depth):
        qkv = w["qkv_w"][i]
        q, k, v = (x @ qkv[:h, j * D : j * D + h] + w["qkv_b"][i][j * D : j * D + h] for j in range(3))
        E = h // heads
        out = torch.zeros(B, L, h)
        for b in range(B):
            for t in range(L):
                for hd in range(heads):
                    cols = slice(hd * E, (hd + 1) * E)
                    allowed = [c for c in range(t + 1) if seq[b, c] > 0] or [t]
                    att = torch.softmax(torch.stack([q[b, t, cols] @ k[b, c, cols] for c in allowed]) / math.sqrt(E), 0)
                    out[b, t, cols] = sum(a * v[b, c, cols] for a, c in zip(att, allowed))
        a = out @ w["out_w"][i][:h, :h] + w["out_b"][i][:h]
        x = F.layer_norm(x + canet.res_scale[i, 0].item() * a, (h,), w["ln1_w"][i][:h], w["ln1_b"][i][:h], eps)
        f = F.gelu(x @ w["ff1_w"][i][:h, : 4 * h] + w["ff1_b"][i][: 4 * h])
        f = f @ w["ff2_w"][i][: 4 * h, :h] + w["ff2_b"][i][:h]
        x = F.layer_norm(x + canet.res_scale[i, 1].item() * f, (h,), w["ln2_w"][i][:h], w["ln2_b"][i][:h], eps)
    return x[:, -1] @ canet.cls_w.detach()[:h, :e] + canet.cls_b.detach()[:e]


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("route", [(8, 12, 2), (12, 8, 1), (16, 16, 2), (8, 8, 1)])
def test_canet_submodel_equals_a_small_model_with_the_sliced_weights(route, packed):
    canet = build_method(30, MODEL.replace(dropout=0.0), CFG.replace(method="canet", packed=packed)).eval()
    with torch.no_grad():  # move every weight off its initial value (identities, ones, zeros)
        for p in canet.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    seq = left_padded([12, 5, 1, 8, 3], L=12, items=30, seed=4)
    z = canet.submodel(route, canet.layout(seq), 0.0)
    torch.testing.assert_close(z, small_model(canet, route, seq), atol=1e-5, rtol=0)


def test_canet_router_gets_gradients_through_gumbel_softmax(tiny):
    data, split = tiny
    canet = make("canet", data, canet_uniform_weight=0.0, canet_guide_weight=0.0).train()
    loss, logs = canet.loss((split.train_inputs[:64], split.train_targets[:64]))  # L_rec only
    loss.backward()
    assert canet.router_w.grad.abs().sum() > 0 and canet.router.item_emb.grad.abs().sum() > 0
    assert {"rec", "uniform", "guide"} <= set(logs)


def test_canet_cost_grows_with_size_and_depth_and_the_report_adds_up(tiny):
    cost = lambda e, h, d: submodel_macs(10, e, h, d, 1000)  # noqa: E731
    assert cost(32, 32, 1) < cost(48, 32, 1) < cost(64, 32, 1)
    assert cost(32, 32, 1) < cost(32, 48, 1) < cost(32, 64, 1) and cost(32, 64, 1) < cost(32, 64, 2)
    assert submodel_macs(5, 32, 32, 1, 1000) < submodel_macs(10, 32, 32, 1, 1000)  # more tokens cost more
    data, split = tiny
    report = make("canet", data).report(split)
    assert sum(report["routes"].values()) == pytest.approx(1.0) and len(report["routes"]) == 18
    assert sum(report["depth"].values()) == pytest.approx(1.0) and set(report["embedding"]) == {"8", "12", "16"}
    assert 0 < report["macs_per_user"] <= report["largest_macs_per_user"] and report["users"] == 60


def test_canet_routed_view_ranks_agree_with_its_scores(tiny):
    data, split = tiny
    canet = make("canet", data).eval()
    names, ranks = view_ranks(canet, split)
    inputs, targets, history = split.inputs("test")
    _, expected = evaluate_scores(canet.scores, inputs, targets, history)
    assert names == ["routed", "smallest", "largest"] and torch.equal(ranks[0], expected)


# ---- CKD -----------------------------------------------------------------------------------------------------
def test_ckd_teachers_are_frozen_sized_and_seeded_as_configured(tiny):
    data, split = tiny
    ckd = make("ckd", data, ckd_teachers=3)
    specs = ckd.pretrained_specs()
    assert [(m.hidden, c.seed) for _, m, c in specs] == [(16, 43), (8, 44), (16, 45)]  # sizes cycle, seeds s+1..
    ckd.prepare(split)
    loss, _ = ckd.loss((split.train_inputs[:64], split.train_targets[:64]))
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in ckd.teachers.parameters())
    assert ckd.learn.item_emb.grad.abs().sum() > 0
    assert ckd.num_parameters()["frozen"] == sum(p.numel() for p in ckd.teachers.parameters())


def test_ckd_curriculum_pool_grows_and_holds_the_easiest_samples(tiny):
    data, split = tiny
    ckd = make("ckd", data, ckd_curriculum_start=0.3, ckd_curriculum_epochs=4)
    ckd.prepare(split)
    S = split.train_inputs.shape[0]
    with torch.no_grad():  # the teachers' mean cross-entropy of each sample, computed here from scratch
        scores = [t.item_scores(t.encode(ckd.layout(split.train_inputs), 0.0))[0] for t in ckd.teachers]
        difficulty = torch.stack([F.cross_entropy(s, split.train_targets, reduction="none") for s in scores]).mean(0)
    gen, pools = torch.Generator().manual_seed(0), []
    for epoch in range(1, 7):
        pool = ckd.epoch_indices(epoch, S, gen)
        assert pool.shape[0] == math.ceil(min(1.0, 0.3 + 0.7 * epoch / 4) * S) and len(set(pool.tolist())) == len(pool)
        inside = torch.zeros(S, dtype=torch.bool)
        inside[pool] = True
        if not inside.all():
            assert difficulty[inside].max() <= difficulty[~inside].min() + 1e-6  # the easiest ones
        pools.append(set(pool.tolist()))
    assert all(a < b for a, b in zip(pools[:3], pools[1:4])) and pools[3] == pools[5] == set(range(S))


# ---- the engine and the CLI ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["emkd", "canet", "ckd"])
def test_one_epoch_smoke_run(tiny, tmp_path, method):
    data, split = tiny
    results = train(make(method, data, epochs=1), split, tmp_path, **QUIET)
    assert results["epochs_run"] == 1 and 0 <= results["test"]["NDCG@20"] <= results["test"]["HR@20"] <= 100
    row = results["history"][0]
    assert row["loss"] > 0 and row["rec"] > 0 and "valid/NDCG@20" in row
    expected = {"emkd": {"distill", "intra", "cross"}, "canet": {"uniform", "guide"}, "ckd": {"distill"}}[method]
    assert expected <= set(row)
    if method == "emkd":
        assert "member2/NDCG@20" in results["test"]  # three members, each evaluated
    assert (results["report"] != {}) == (method == "canet")
    assert json.loads((tmp_path / "results.json").read_text())["report"] == results["report"]


@pytest.mark.parametrize("method", ["ckd", "emkd", "canet"])
def test_resume_reproduces_the_uninterrupted_run(tiny, tmp_path, method):
    data, split = tiny
    full = train(make(method, data), split, tmp_path / "full", **QUIET)

    def stop_after_two(rows):
        if rows[0]["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make(method, data), split, tmp_path / "cut", on_epoch=stop_after_two, **QUIET)
    resumed = train(make(method, data), split, tmp_path / "cut", resume=True, **QUIET)
    assert same_history(resumed["history"], full["history"])
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)


@pytest.mark.parametrize("method", ["emkd", "canet", "ckd"])
def test_cli_trains_records_and_evaluates(tmp_path, capsys, monkeypatch, method):
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["train", "--method", method, "--epochs", "1", "--out", str(out), "--record", str(tmp_path / "rec"), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (rec_path,) = (tmp_path / "rec" / "synthetic").glob(f"{method}-seed42-*.json")
    rec, results = json.loads(rec_path.read_text()), json.loads((out / "results.json").read_text())
    assert rec["test"] == results["test"] and rec["report"] == results["report"]
    assert f"{method} test" in printed
    if method == "ckd":
        assert "teacher1 test" in printed and len(rec["pretrained"]) == 3  # three pretrained teachers
    if method == "canet":
        assert "macs_per_user" in printed and rec["report"]["relative_cost"] <= 1
    assert main(["evaluate", "--dataset", "synthetic", "--weights", str(out)]) == 0
    test_row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{method} (epoch 1) test")][0]
    assert test_row.split()[-1] == f"{results['test']['NDCG@20']:.2f}"


def test_related_settings_are_checked():
    with pytest.raises(ConfigError, match="canet_sizes"):
        TrainConfig(canet_sizes=(48, 32))
    with pytest.raises(ConfigError, match="emkd_mask"):
        TrainConfig(emkd_mask=1.0)
    with pytest.raises(ConfigError, match="emkd_members"):
        TrainConfig(method="emkd", emkd_members=1)
    with pytest.raises(ConfigError, match="ckd_curriculum_start"):
        TrainConfig(ckd_curriculum_start=0.0)
    with pytest.raises(ConfigError, match="ckd_teacher_hidden"):
        TrainConfig.from_dict({"ckd_teacher_hidden": [64, "32"]})
    assert TrainConfig.from_dict({"canet_sizes": [8, 16]}).canet.canet_sizes == (8, 16)  # JSON lists become tuples
    with pytest.raises(ConfigError, match=r"<= hidden \(16\)"):
        build_method(30, MODEL, TrainConfig(method="canet"))  # default sizes (32, 48, 64) exceed hidden 16


def test_frozen_is_refused_for_ckd(tmp_path, capsys):
    argv = ["train", "--method", "ckd", "--frozen", str(tmp_path / "x.pt"), "--out", str(tmp_path / "r"), *TINY]
    assert main(argv) == 2
    assert "needs 3 pretrained networks" in capsys.readouterr().err


def test_experiments_run_pretrains_the_teachers_and_reuses_the_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    cfg = CFG.replace(method="ckd", epochs=1, ckd_teachers=2)
    first = run("synthetic", MODEL, cfg, root=tmp_path / "runs", **QUIET)
    assert len(list((tmp_path / "cache" / "anchors").glob("*.pt"))) == 2 and not first.reused
    again = run("synthetic", MODEL, cfg, root=tmp_path / "runs", **QUIET)
    assert again.reused and again.results["test"] == first.results["test"]
    assert evaluate(again.method, again.split, "test") == first.results["test"]
