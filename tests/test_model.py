"""The tensorized backbone and modular paths against the plain reference in tests/reference.py."""

import pytest
import torch

from flame_core.backbone import SASRecStack, gelu, make_layout
from flame_core.config import ModelConfig, TrainConfig
from flame_core.methods import build_method
from flame_core.paths import all_paths, evaluate_paths, module_plan, path_name, sample_paths

import reference as ref

CFG = ModelConfig(hidden=16, layers=2, heads=2, dropout=0.0, max_len=8)
ITEMS = 30
ATOL = 1e-5


def batch(seed=0, B=6, L=8, longest=6):
    """Left-padded sequences of lengths 1..longest (one row that long), as the protocol produces them.

    longest < L makes the packed grid narrower than L, so absolute positions are exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, longest + 1, (B,), generator=gen)
    lengths[0] = longest
    seq = torch.randint(1, ITEMS + 1, (B, L), generator=gen)
    return seq.masked_fill(torch.arange(L)[None, :] < (L - lengths)[:, None], 0)


def stacks(cfg=CFG, seeds=(1, 2)):
    """A learnable and a frozen 1-network stack (evaluate_paths gives (N, P, B, D): [0] is their one pair)."""
    learn = SASRecStack(1, ITEMS, cfg, seeds=[seeds[0]])
    frozen = SASRecStack(1, ITEMS, cfg, seeds=[seeds[1]]).requires_grad_(False)
    return learn, frozen


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("longest", [8, 5, 1])
def test_single_network_matches_reference(packed, longest):
    net, _ = stacks()
    seq = batch(longest=longest)
    z = net.encode(make_layout(seq, packed), 0.0)[0]
    expected = ref.forward(ref.weights(net, 0), seq, CFG.layers, CFG.heads, CFG.ln_eps)
    torch.testing.assert_close(z, expected, atol=ATOL, rtol=0)


def test_packed_buckets_cover_every_length():
    cfg = CFG.replace(max_len=40)
    learn, frozen = stacks(cfg)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 3, 4, 5, 8, 9, 15, 16, 17, 31, 33, 39, 40, 2, 7, 20])  # every bucket, shuffled
    seq = torch.randint(1, ITEMS + 1, (16, 40), generator=gen).masked_fill(torch.arange(40) < 40 - lengths[:, None], 0)
    layout = make_layout(seq)
    assert [b.real.shape[1] for b in layout.buckets] == [4, 8, 16, 31, 40]
    plan = module_plan("emb|block|block", cfg.layers)
    z = evaluate_paths(learn, frozen, plan, layout, all_paths(3), 0.0, 0.0)[0]
    nets = [ref.weights(learn, 0), ref.weights(frozen, 0)]
    for p, path in enumerate(all_paths(3)):
        expected = ref.path_forward(nets, path, plan, seq, cfg.heads, cfg.ln_eps)
        torch.testing.assert_close(z[p], expected, atol=ATOL, rtol=0)


def test_tensorized_ensemble_equals_separate_networks():
    stack = SASRecStack(3, ITEMS, CFG, seeds=[5, 6, 7])
    seq = batch(1)
    z = stack.encode(make_layout(seq), 0.0)  # (3, B, D)
    scores = stack.item_scores(z)  # (3, B, I+1)
    for n, seed in enumerate([5, 6, 7]):
        alone = SASRecStack(1, ITEMS, CFG, seeds=[seed])
        torch.testing.assert_close(alone.item_emb[0], stack.item_emb[n])  # member n is seeded alone
        z_alone = alone.encode(make_layout(seq), 0.0)[0]
        torch.testing.assert_close(z[n], z_alone, atol=ATOL, rtol=0)
        torch.testing.assert_close(scores[n], alone.item_scores(z_alone[None])[0], atol=1e-4, rtol=0)
    assert torch.isinf(scores[..., 0]).all()  # the padding column never scores


@pytest.mark.parametrize("split, modules", [("net", 1), ("emb|enc", 2), ("emb|block|block", 3)])
@pytest.mark.parametrize("packed", [False, True])
def test_prefix_shared_paths_equal_naive_paths(split, modules, packed):
    learn, frozen = stacks()
    plan = module_plan(split, CFG.layers)
    paths = all_paths(len(plan))
    assert len(plan) == modules and len(paths) == 2**modules
    assert path_name(paths[0]) == "L" * modules and path_name(paths[-1]) == "F" * modules
    seq = batch(2)
    z = evaluate_paths(learn, frozen, plan, make_layout(seq, packed), paths, 0.0, 0.0)[0]
    nets = [ref.weights(learn, 0), ref.weights(frozen, 0)]
    for p, path in enumerate(paths):
        expected = ref.path_forward(nets, path, plan, seq, CFG.heads, CFG.ln_eps)
        torch.testing.assert_close(z[p], expected, atol=ATOL, rtol=0, msg=f"path {path_name(path)}")


def test_sampled_paths_compute_only_what_they_need():
    learn, frozen = stacks()
    plan = module_plan("emb|block|block", CFG.layers)
    seq = batch(3)
    full = evaluate_paths(learn, frozen, plan, make_layout(seq), all_paths(3), 0.0, 0.0)[0]
    gen = torch.Generator().manual_seed(0)
    chosen = sample_paths(3, 3, gen)
    assert len(chosen) == 3 and chosen[0] == (0, 0, 0) and len(set(chosen)) == 3
    part = evaluate_paths(learn, frozen, plan, make_layout(seq), chosen, 0.0, 0.0)[0]
    for k, path in enumerate(chosen):
        torch.testing.assert_close(part[k], full[all_paths(3).index(path)], atol=ATOL, rtol=0)


def test_pure_frozen_path_is_the_frozen_network_only_with_independent_attention():
    learn, frozen = stacks()
    plan, seq = module_plan("emb|enc", CFG.layers), batch(4)
    plain = frozen.encode(make_layout(seq), 0.0)[0]
    independent = evaluate_paths(learn, frozen, plan, make_layout(seq), all_paths(2), 0.0, 0.0)[0]
    assert torch.equal(independent[-1], plain)  # exactly: the same calls on the same tokens
    shared = evaluate_paths(learn, frozen, plan, make_layout(seq), all_paths(2), 0.0, 0.0, shared=True)[0]
    assert (shared[-1] - plain).abs().max() > 1e-3  # FF also attends to the learnable embedding stream


@pytest.mark.parametrize("packed", [False, True])
def test_shared_attention_matches_the_released_concatenation(packed):
    learn, frozen = stacks()
    seq = batch(5)
    layout = make_layout(seq, packed)
    z = evaluate_paths(learn, frozen, module_plan("emb|enc", 2), layout, all_paths(2), 0.0, 0.0, True)[0]
    expected = ref.shared_paths([ref.weights(learn, 0), ref.weights(frozen, 0)], seq, CFG.layers, CFG.heads, CFG.ln_eps)
    for p, path in enumerate(all_paths(2)):
        torch.testing.assert_close(z[p], expected[path_name(path)], atol=ATOL, rtol=0)


@pytest.mark.parametrize("split", ["emb|enc", "emb|block|block"])
def test_gradients_skip_frozen_weights_but_flow_through_them(split):
    learn, frozen = stacks()
    plan, seq = module_plan(split, CFG.layers), batch(6)
    z = evaluate_paths(learn, frozen, plan, make_layout(seq), all_paths(len(plan)), 0.0, 0.0)[0]
    lf = all_paths(len(plan)).index((0,) + (1,) * (len(plan) - 1))  # learnable embedding, frozen rest
    z[lf].square().sum().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert learn.item_emb.grad is not None and learn.item_emb.grad.abs().sum() > 0  # upstream of frozen modules
    assert learn.pos_emb.grad.abs().sum() > 0
    assert learn.qkv_w.grad is None or learn.qkv_w.grad.abs().sum() == 0  # learnable blocks are off this path


def test_pure_frozen_path_builds_no_graph():
    learn, frozen = stacks()
    z = evaluate_paths(learn, frozen, module_plan("emb|enc", 2), make_layout(batch()), [(0, 0), (1, 1)], 0.0, 0.0)[0]
    assert z.requires_grad  # the stack does, through LL
    alone = evaluate_paths(learn, frozen, module_plan("emb|enc", 2), make_layout(batch()), [(1, 1)], 0.0, 0.0)[0]
    assert not alone.requires_grad


@pytest.mark.parametrize(
    "method, extra",
    [
        ("single", {}),
        ("ensemble_scratch", {}),
        ("ensemble_guide", {}),
        ("flame", {}),
        ("flame", {"rec_from": "path"}),
        ("flame", {"module_split": "emb|block|block"}),
        ("flame", {"path_attention": "shared"}),
    ],
)
def test_packed_and_padded_agree_in_loss_and_gradients(method, extra):
    cfg = TrainConfig(method=method, epochs=10, **extra)
    grads = {}
    for packed in (False, True):
        m = build_method(ITEMS, CFG, cfg.replace(packed=packed))
        if hasattr(m, "set_frozen"):
            m.set_frozen(SASRecStack(1, ITEMS, CFG, seeds=[9]))
        seq = batch(7)
        loss, _ = m.loss(
            (seq, torch.randint(1, ITEMS + 1, (seq.shape[0],), generator=torch.Generator().manual_seed(1)))
        )
        loss.backward()
        m.eval()
        scores = m.scores(seq)[:, 1:]  # (B, I): column 0 is -inf in both
        grads[packed] = (
            loss.detach(),
            scores,
            {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None},
        )
    (l0, s0, g0), (l1, s1, g1) = grads[False], grads[True]
    torch.testing.assert_close(l0, l1, atol=1e-5, rtol=0)
    torch.testing.assert_close(s0, s1, atol=1e-5, rtol=0)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], atol=1e-4, rtol=0, msg=name)


def test_native_gelu_matches_torch_in_value_and_gradient():
    x = torch.randn(37, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(gelu(x), torch.nn.functional.gelu(x))
    assert torch.autograd.gradcheck(gelu, (x,))


def test_dropout_is_active_in_training_and_off_in_eval():
    m = build_method(ITEMS, CFG.replace(dropout=0.5), TrainConfig(method="single"))
    seq = batch()
    m.train()
    assert not torch.equal(m.scores(seq), m.scores(seq))
    m.eval()
    assert torch.equal(m.scores(seq), m.scores(seq))
