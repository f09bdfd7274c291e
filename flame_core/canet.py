"""CANet (Liu et al., "One Person, One Model"-style conditional network): a SASRec supernet whose submodel
is chosen per user by a light router.

Supernet: the SASRec of the model config (D = model.hidden, model.layers blocks, weights in a 1-network
`SASRecStack`) plus an input transformation (D, D) from embedding size e to hidden size h, a learnable
residual scale on each sublayer (``LN(x + a * dropout(sublayer(x)))``), and a shared classifier (D, D) that
projects a representation of size h to the embedding size e; scores are its dot products with the item
table (tied embeddings), the same classifier for every exit. The transformation and the classifier start as
identities and the scales as 1, so the largest submodel starts as plain SASRec.

Submodel (e, h, depth): every weight sliced from its first index: item and positional embeddings and their
LayerNorm to e, the input transformation to (e, h), in each block Q, K and V each to (h, h), the output
projection to (h, h), the feed-forward to (h, 4h) and (4h, h), the LayerNorms to h, the classifier to (h, e);
it runs the first `depth` blocks and exits there. Heads stay model.heads (head size h / heads).

Router: a 1-layer SASRec (d = 32, its own item embedding, seed s+1) whose representation feeds one linear
head per decision: embedding size and hidden size from ``canet_sizes`` (default {32, 48, 64}, the paper's
routing space scaled to d = 64) and depth from 1..model.layers ({1, 2}): 18 routes. Training draws each
decision by Gumbel-softmax (tau = ``canet_tau``), hard and straight-through: the routed submodel's output is
multiplied by the product of the chosen one-hot values (1 in value), so the router's logits get gradients
from L_rec. Inference takes each decision's argmax.

Execution: the batch is grouped by route (at most 18 groups) and each group runs through its sliced
submodel on its own layout (the backbone's, packed unless ``packed=False``): vectorised per group, no
per-user loop. Outputs are zero-padded to D, which scores them exactly as the sliced table does.

Loss = L_rec + ``canet_uniform_weight`` * uniform + ``canet_guide_weight`` * guide (see `losses`): uniform =
KL of the batch-mean routing distribution to uniform, per decision; guide: a user is easy when the smallest
submodel (no dropout, no gradient) ranks the target in its top ``canet_guide_k`` of all items, and each
decision is pulled towards targets decaying as exp(-k) from its smallest option (easy) or largest (hard).

Cost (`report`): the test users' routing distribution and average inference multiply-adds of their routed
submodel on their real tokens (`submodel_macs`), against the largest submodel's; the router's own cost is
reported beside it.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flame_core.backbone import Layout, SASRecStack, dropout, layer_norm, linear, transformer_block
from flame_core.config import ConfigError, ModelConfig, TrainConfig
from flame_core.data import Split
from flame_core.losses import item_cross_entropy, routing_guide_loss, routing_uniform_loss
from flame_core.methods import Method
from flame_core.metrics import target_ranks

ROUTER_HIDDEN = 32  # d of the router's 1-layer SASRec
Route = tuple[int, int, int]  # (embedding size e, hidden size h, depth)


def submodel_macs(n: Tensor | int, e: int, h: int, depth: int, num_items: int) -> Tensor | int:
    """Multiply-adds of a plain forward of submodel (e, h, depth) over n real tokens, scoring all items.

    Input transformation n*e*h; per block: Q, K, V and output projections 4*n*h^2, feed-forward 8*n*h^2,
    causal attention scores and weighted sums h*n(n+1); the classifier h*e; the item scores I*e. Lookups,
    LayerNorms, softmax and GELU are not multiply-adds and are left out.
    """
    return n * e * h + depth * (12 * n * h * h + h * n * (n + 1)) + h * e + num_items * e


def router_macs(n: Tensor | int, options: int, d: int = ROUTER_HIDDEN) -> Tensor | int:
    """Multiply-adds of the router: one block of size d over n tokens and its heads (`options` outputs)."""
    return 12 * n * d * d + d * n * (n + 1) + d * options


class CANet(Method):
    """A sliced SASRec supernet with early exits, routed per user by a light Gumbel-softmax router."""

    graph_safe = False  # the batch is grouped by route: shapes depend on the data

    def __init__(self, num_items: int, model: ModelConfig, train: TrainConfig):
        super().__init__(num_items, model, train)
        sizes, D = train.canet.canet_sizes, model.hidden
        if max(sizes) > D or any(s % model.heads for s in sizes):
            raise ConfigError(
                f"canet_sizes {sizes}: sizes must be <= hidden ({D}) and divisible by heads ({model.heads})"
            )
        self.routes: list[Route] = list(itertools.product(sizes, sizes, range(1, model.layers + 1)))
        self.options = [len(sizes), len(sizes), model.layers]  # choices per decision: e, h, depth
        self.net = SASRecStack(1, num_items, model, seeds=[train.seed])
        self.in_w, self.cls_w = nn.Parameter(torch.eye(D)), nn.Parameter(torch.eye(D))  # (D, D): e -> h, h -> e
        self.in_b, self.cls_b = nn.Parameter(torch.zeros(D)), nn.Parameter(torch.zeros(D))
        self.res_scale = nn.Parameter(torch.ones(model.layers, 2))  # attention and feed-forward of each block
        router_cfg = model.replace(hidden=ROUTER_HIDDEN, layers=1, heads=2)
        self.router = SASRecStack(1, num_items, router_cfg, seeds=[train.seed + 1])
        gen = torch.Generator().manual_seed(train.seed + 2)
        self.router_w = nn.Parameter(torch.randn(ROUTER_HIDDEN, sum(self.options), generator=gen) * model.init_std)
        self.router_b = nn.Parameter(torch.zeros(sum(self.options)))

    # ---- the supernet ---------------------------------------------------------------------------------------
    def submodel(self, route: Route, layout: Layout, p: float) -> Tensor:
        """Representations (B, e) of submodel (e, h, depth), projected to the embedding size."""
        (e, h, depth), net = route, self.net
        x = layout.embed_tokens(net.item_emb[..., :e], net.pos_emb[..., :e])  # (1, T, e)
        x = layer_norm(x, net.emb_ln_w[:, :e], net.emb_ln_b[:, :e], net.cfg.ln_eps)
        x = dropout(x, p, self.training and p > 0)
        x = linear(x, self.in_w[None, :e, :h], self.in_b[None, :h])[:, None]  # (1, 1, T, h)
        for i in range(depth):  # block i sliced to hidden size h, with its residual scales
            p_i = p if self.training else 0.0
            x = transformer_block(
                x,
                net.block_weights(i, h),
                layout,
                heads=self.model_cfg.heads,
                p=p_i,
                eps=net.cfg.ln_eps,
                last_only=i == depth - 1,
                residual_scale=self.res_scale[i],
            )
        return linear(x[:, 0], self.cls_w[None, :h, :e], self.cls_b[None, :e])[0]  # (B, e)

    def widened(self, route: Route, seq: Tensor, p: float) -> Tensor:
        """Submodel representations widened to D with zeros (B, D): the full table scores them as the sliced one."""
        z = self.submodel(route, self.layout(seq), p)  # (B, e)
        return F.pad(z, (0, self.model_cfg.hidden - route[0]))  # (B, D)

    def item_scores(self, z: Tensor) -> Tensor:
        return self.net.item_scores(z[None])[0]  # (B, I+1)

    # ---- the router -----------------------------------------------------------------------------------------
    def route_logits(self, seq: Tensor, p: float) -> list[Tensor]:
        """Router logits per decision: [(B, n_e), (B, n_h), (B, n_depth)]."""
        r = self.router.encode(self.layout(seq), p)[0]  # (B, 32)
        return list((r @ self.router_w + self.router_b).split(self.options, dim=1))

    def choose(self, logits: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Route ids (B,) into self.routes, and the gates (B,) (1 in value, differentiable) in training."""
        if self.training:
            onehots = [F.gumbel_softmax(lg, tau=self.cfg.canet.canet_tau, hard=True) for lg in logits]  # (B, K_d) each
            picks = [oh.argmax(1) for oh in onehots]  # (B,) each
            gate = torch.stack([oh.gather(1, pk[:, None])[:, 0] for oh, pk in zip(onehots, picks)]).prod(0)  # (B,)
        else:
            picks, gate = [lg.argmax(1) for lg in logits], None
        (pe, ph, pd), (_, n_h, n_d) = picks, self.options
        return (pe * n_h + ph) * n_d + pd, gate  # (B,)

    def routed(self, seq: Tensor, p: float) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Routed representations (B, D) (zero-padded, gated), route ids (B,) and router logits."""
        logits = self.route_logits(seq, p)
        route, gate = self.choose(logits)
        chunks, rows = [], []
        for r in route.unique().tolist():  # at most len(self.routes) groups
            idx = (route == r).nonzero()[:, 0]  # (b,)
            chunks.append(self.widened(self.routes[r], seq[idx], p))  # (b, D)
            rows.append(idx)
        z = torch.cat(chunks)[torch.cat(rows).argsort()]  # (B, D) back in batch order
        return (z if gate is None else z * gate[:, None]), route, logits

    # ---- the method interface -------------------------------------------------------------------------------
    @torch.no_grad()
    def easy_users(self, seq: Tensor, target: Tensor) -> Tensor:
        """(B,) True where the smallest submodel ranks the target in its top canet_guide_k."""
        scores = self.item_scores(self.widened(self.routes[0], seq, 0.0))  # (B, I+1)
        return target_ranks(scores, target) < self.cfg.canet.canet_guide_k

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        seq, target = batch
        cfg = self.cfg.canet
        z, _, logits = self.routed(seq, self.p)
        rec = item_cross_entropy(z[None], self.net.item_emb, target[None]).mean()
        uniform = routing_uniform_loss(logits)
        guide = routing_guide_loss(logits, self.easy_users(seq, target))
        loss = rec + cfg.canet_uniform_weight * uniform + cfg.canet_guide_weight * guide
        return loss, {"rec": rec.detach(), "uniform": uniform.detach(), "guide": guide.detach()}

    def scores(self, seq: Tensor) -> Tensor:
        return self.item_scores(self.routed(seq, self.p)[0])  # (B, I+1)

    def views(self, seq: Tensor) -> tuple[list[str], Tensor]:
        """The routed representation and those of the smallest and the largest submodel, (3, B, D)."""
        smallest, largest = self.routes[0], self.routes[-1]  # routes ascend in e, then h, then depth
        z = [self.routed(seq, self.p)[0], self.widened(smallest, seq, self.p), self.widened(largest, seq, self.p)]
        return ["routed", "smallest", "largest"], torch.stack(z)  # (3, B, D)

    def view_tables(self) -> Tensor:
        return self.net.item_emb.expand(3, -1, -1)  # (3, I+1, D)

    @torch.no_grad()
    def report(self, split: Split) -> dict:
        """Routing distribution and average inference cost per test user of the current weights."""
        was_training = self.training
        self.eval()
        inputs, _, _ = split.inputs("test")
        step = self.cfg.eval_batch_size
        batches = [inputs[s : s + step] for s in range(0, inputs.shape[0], step)]
        route = torch.cat([self.choose(self.route_logits(seq, 0.0))[0] for seq in batches])  # (U,)
        self.train(was_training)
        return routing_report(route.cpu(), (inputs > 0).sum(1).cpu(), self.routes, self.num_items, sum(self.options))


def routing_report(route: Tensor, n: Tensor, routes: list[Route], num_items: int, options: int) -> dict:
    """Shares of users per route and per decision, mean multiply-adds per user; route (U,), n (U,) tokens."""
    costs = torch.stack([submodel_macs(n.double(), *r, num_items) for r in routes])  # (routes, U)
    users = torch.arange(n.shape[0])  # (U,)
    macs = costs[route, users].mean().item()
    full = costs[routes.index(max(routes))].mean().item()  # the largest sizes and the deepest exit
    share = (torch.bincount(route, minlength=len(routes)).double() / max(len(route), 1)).tolist()  # per route

    def by(k: int) -> dict:  # the share of users per option of decision k (0: e, 1: h, 2: depth)
        return {str(v): sum(s for s, r in zip(share, routes) if r[k] == v) for v in sorted({r[k] for r in routes})}

    return {
        "split": "test",
        "users": int(n.shape[0]),
        "macs_per_user": macs,
        "flops_per_user": 2 * macs,
        "largest_macs_per_user": full,
        "relative_cost": macs / full,
        "router_macs_per_user": router_macs(n.double(), options).mean().item(),
        "routes": {f"e{e}-h{h}-d{d}": s for s, (e, h, d) in zip(share, routes)},
        "embedding": by(0),
        "hidden": by(1),
        "depth": by(2),
    }
