"""Differentiable latency-aware search: one run, a family of architectures across budgets.

FBNet / DNAS in the shape of this toolchain. Over a staged MobileNet space at one resolution and
width (`mcu-mbnet` by default), every block position has a categorical choice of kernel size and
expand ratio and every stage one of depth. The choices are not separate operators (FBNet) but
slices of one elastic supernet (FBNetV2's masks): a kernel size is a centre crop of the largest
kernel (`W * centre mask`), an expand ratio a channel prefix (the projection's inputs beyond it
masked), a depth the mix of the stage's outputs after 2, 3 or 4 blocks. With one-hot choices the
forward pass is exactly the sub-network `ElasticSupernet.extract` builds, so what is searched is
what is exported.

Architecture logits come from a small hypernetwork of a *budget point* `p` on the simplex
(latency, complexity, free): one optimisation run trains it for every point at once, and each
point is discretised into an architecture afterwards. A point's weights set its budgets: latency
`L_max - p_latency * (L_max - L_min)` between the device's slowest and fastest choices, and the
same for complexity (parameters, or MACs). Training alternates, DARTS first-order style:

* weights: cross-entropy on a training batch of a sub-network drawn uniformly (drawn from the
  architecture distribution instead, the networks it favoured early were trained most and then
  favoured more: the search collapsed onto the smallest networks);
* hypernetwork: for a point drawn from the simplex, an architecture drawn by straight-through
  Gumbel-softmax (the forward runs one discrete sub-network; gradients flow through the soft
  sample) on a validation batch, minimising

      cross-entropy + kappa * relu(E[latency] / latency budget - 1)
                    + lam * relu(E[complexity] / complexity budget - 1)

  where E[latency] is the expected sum of the device's LUT entries (`hwnas lut build`, with its
  calibration) under the categorical distributions: exact and differentiable, since every
  block's key is fixed by its position, kernel and expand ratio at the run's resolution and width.
  (A penalty proportional to p_latency * E[latency] instead, tried first, gave one architecture for
  every point: the budget's effect on the logits drowned in the cross-entropy's noise.)

The first `warmup_epochs` train the weights alone, as FBNet does before architecture updates;
the Gumbel temperature anneals from `tau_start` to `tau_end` over the search epochs.

The run's weights are saved as an `hwnas-supernet` checkpoint (plus the hypernetwork), so the
accuracy objective `accuracy=supernet:CKPT` scores any network of the space on the same weights:
that is how the family is compared with an NSGA-II front (tools/bench_differentiable.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.predictors.lut import LatencyLUT
from hwnas_deploy.spaces.mobilenet import MAX_DEPTH, N_STAGES
from hwnas_deploy.supernet.elastic import space_for

SIMPLEX = ("latency", "complexity", "free")
COMPLEXITY = ("params", "macs")
KIND = "differentiable"


@dataclass
class DifferentiableSettings:
    space: str = "mcu-mbnet"
    dataset: str = "digits"
    resolution: int = 64
    width: float = 0.35
    epochs: int = 10
    #: epochs that train the weights alone on uniformly drawn sub-networks
    warmup_epochs: int = 4
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5
    #: the hypernetwork's learning rate (Adam)
    arch_lr: float = 0.01
    #: weight of the relative excess of the expected latency over the point's budget
    kappa: float = 10.0
    #: weight of the relative excess of the expected complexity over the point's budget
    lam: float = 10.0
    complexity: str = "params"
    #: Gumbel-softmax temperature, annealed exponentially from the first to the second
    tau_start: float = 5.0
    tau_end: float = 0.5
    hidden: int = 32
    grad_clip: float = 5.0
    seed: int = 0
    train_limit: int | None = None

    def __post_init__(self):
        checks = {
            "epochs": self.epochs >= 1, "warmup_epochs": 0 <= self.warmup_epochs < self.epochs,
            "batch_size": self.batch_size >= 2, "lr": self.lr > 0, "arch_lr": self.arch_lr > 0,
            "kappa": self.kappa >= 0, "lam": self.lam >= 0, "complexity": self.complexity in COMPLEXITY,
            "tau_start": self.tau_start > 0, "tau_end": 0 < self.tau_end <= self.tau_start,
            "hidden": self.hidden >= 1, "grad_clip": self.grad_clip > 0,
            "train_limit": self.train_limit is None or self.train_limit >= self.batch_size,
        }
        allowed = {"warmup_epochs": f"0 <= warmup_epochs < epochs ({self.epochs})",
                   "complexity": f"one of {list(COMPLEXITY)}", "tau_end": "0 < tau_end <= tau_start",
                   "train_limit": f"at least batch_size ({self.batch_size}) or None"}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"differentiable search setting {name}={getattr(self, name)!r}: "
                                  f"{allowed.get(name, 'out of range')}")


def _choices(space, name: str) -> tuple:
    return next(p.choices for p in space.params if p.name == name)


def top_config(space, resolution: int, width: float) -> dict:
    """The largest network at the run's resolution and width: the layout every choice slices."""
    from hwnas_deploy.spaces.blocks import MBConvBlock

    if _choices(space, "d") != (2, 3, 4) or any(isinstance(b, MBConvBlock) and b.se_mid
                                                for b in space.blocks(space.max_config())):
        raise ConfigError(f"differentiable search: space {space.name!r} is not supported (it needs stage depths "
                          "2, 3, 4 and blocks without squeeze-and-excitation, as mcu-mbnet)")
    for name, value in (("r", resolution), ("w", width)):
        if value not in _choices(space, name):
            raise ConfigError(f"differentiable search: {name}={value!r} is not a choice of {space.name} "
                              f"({list(_choices(space, name))})")
    return {**space.max_config(), "r": resolution, "w": width}


def lut_configs(space, resolution: int, width: float) -> list[dict]:
    """Networks whose blocks are every block the run can choose (one per kernel x expand ratio, at
    full depth): `hwnas lut build --configs` over them gives the LUT the run needs."""
    top = top_config(space, resolution, width)
    n = N_STAGES * MAX_DEPTH
    return [{**top, "ks": [k] * n, "e": [e] * n} for k in _choices(space, "ks") for e in _choices(space, "e")]


class CostTables:
    """Per block position: the LUT latency and the complexity of each (kernel, expand) choice, and
    the fixed blocks' sums; expectations under the architecture distribution, in torch."""

    def __init__(self, space, lut: LatencyLUT, resolution: int, width: float, complexity: str = "params"):
        from hwnas_deploy.spaces import get_space

        # the registry's space (its 1000-class head), as the LUT and every measurement have it
        space = get_space(space.name)
        if lut.space != space.name:
            raise ConfigError(f"the LUT is for space {lut.space!r}, the search for {space.name!r}")
        self.kernels, self.expands = _choices(space, "ks"), _choices(space, "e")
        configs = lut_configs(space, resolution, width)
        missing = lut.missing(configs)
        if missing:
            raise ConfigError(
                f"the LUT ({lut.device}/{lut.runtime}) lacks {len(missing)} block(s) of {space.name} at r={resolution}, "
                f"w={width}, e.g. {missing[0]}; measure them: write "
                "`hwnas_deploy.search.differentiable.lut_configs(space, r, w)` to a JSON-lines file and run "
                f"`hwnas lut build --device {lut.device} --space {space.name} --runtime {lut.runtime} --configs FILE "
                "--out LUT` (it adds to an existing LUT)")
        n = N_STAGES * MAX_DEPTH
        lat = np.zeros((n, len(self.kernels), len(self.expands)))
        cost = np.zeros_like(lat)
        for cfg in configs:
            ki, ei = self.kernels.index(cfg["ks"][0]), self.expands.index(cfg["e"][0])
            blocks = space.blocks(cfg)
            for j in range(n):
                b = blocks[2 + j]
                lat[j, ki, ei] = lut.entries[b.key()]
                cost[j, ki, ei] = b.params() if complexity == "params" else b.macs()
        # stem, first block, final conv and head: the same in every network of the run
        blocks = space.blocks(configs[0])
        fixed = [blocks[0], blocks[1], *blocks[2 + n:]]
        fixed_lat = sum(lut.entries[b.key()] for b in fixed)
        fixed_cost = sum(b.params() if complexity == "params" else b.macs() for b in fixed)
        self.calibration = lut.calibration
        self.lat, self.cost = torch.tensor(lat, dtype=torch.float32), torch.tensor(cost, dtype=torch.float32)
        self.fixed_lat, self.fixed_cost = fixed_lat, fixed_cost
        # the range of budgets: every position at its slowest (fastest) choice, every stage at full
        # (least) depth; a larger kernel is not always slower on a device, so not the largest network
        depth = F.one_hot(torch.arange(3), 3).float()  # rows: depth 2, 3, 4
        self.max_lat, self.max_cost = self._extreme(depth[2].expand(N_STAGES, 3), torch.argmax)
        self.min_lat, self.min_cost = self._extreme(depth[0].expand(N_STAGES, 3), torch.argmin)

    def _extreme(self, depth: torch.Tensor, which) -> tuple[float, float]:
        out = []
        for table in (self.lat, self.cost):
            flat = which(table.reshape(table.shape[0], -1), dim=1)
            pk = F.one_hot(flat // table.shape[2], table.shape[1]).float()
            pe = F.one_hot(flat % table.shape[2], table.shape[2]).float()
            out.append(float(self.expected(pk, pe, depth)[len(out)]))
        return out[0], out[1]

    def budgets(self, p: torch.Tensor) -> tuple[float, float]:
        """The latency and complexity budgets of simplex point p: from the slowest (largest)
        network's at weight 0 down to the fastest (smallest) one's at weight 1."""
        return (self.max_lat - float(p[0]) * (self.max_lat - self.min_lat),
                self.max_cost - float(p[1]) * (self.max_cost - self.min_cost))

    def expected(self, pk: torch.Tensor, pe: torch.Tensor, pd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[latency ms] with the LUT's calibration, E[complexity]) for choice probabilities
        pk, pe (positions x choices) and pd (stages x depths 2, 3, 4)."""
        one = torch.ones_like(pd[:, 0])
        exists = torch.stack([one, one, pd[:, 1] + pd[:, 2], pd[:, 2]], 1)  # P(depth > i), depths 2, 3, 4
        pair = pk[:, :, None] * pe[:, None, :]
        lat = (pair * self.lat).sum((1, 2)).reshape(N_STAGES, MAX_DEPTH)
        cost = (pair * self.cost).sum((1, 2)).reshape(N_STAGES, MAX_DEPTH)
        a, b = self.calibration
        return a + b * (self.fixed_lat + (exists * lat).sum()), self.fixed_cost + (exists * cost).sum()


class BudgetHypernetwork(nn.Module):
    """Budget point on the simplex (latency, complexity, free) -> architecture logits: the
    barycentric mix of one set of logits per vertex, plus a small MLP for what is not linear in
    the budget. Without the vertex term an MLP learns one architecture for every budget: its shared
    output bias follows the average pressure, and the budget's own effect stays small."""

    def __init__(self, n_kernels: int, n_expands: int, hidden: int = 32):
        super().__init__()
        n = N_STAGES * MAX_DEPTH
        self.sizes = (n * n_kernels, n * n_expands, N_STAGES * 3)
        self.shapes = ((n, n_kernels), (n, n_expands), (N_STAGES, 3))
        self.vertices = nn.Linear(len(SIMPLEX), sum(self.sizes), bias=False)
        self.mlp = nn.Sequential(nn.Linear(len(SIMPLEX), hidden), nn.Tanh(), nn.Linear(hidden, sum(self.sizes)))
        for layer in (self.vertices, self.mlp[-1]):  # every choice equally likely at the start
            nn.init.zeros_(layer.weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.vertices(p) + self.mlp(p)
        parts = torch.split(out, self.sizes, dim=-1)
        return tuple(part.reshape(shape) for part, shape in zip(parts, self.shapes, strict=True))


class MixedSupernet:
    """Forward of the elastic supernet under soft or one-hot choices (see the module docstring)."""

    def __init__(self, supernet, resolution: int, width: float):
        self.supernet, self.space = supernet, supernet.space
        self.top = top_config(self.space, resolution, width)
        self.layout = supernet._layout(self.top)
        self.kernels, self.expands = _choices(self.space, "ks"), _choices(self.space, "e")
        kmax = max(self.kernels)
        masks = torch.zeros(len(self.kernels), kmax, kmax)
        for i, k in enumerate(self.kernels):
            lo = (kmax - k) // 2
            masks[i, lo:lo + k, lo:lo + k] = 1.0
        self.kernel_masks = masks
        # per position: for each expand ratio, how many of the largest block's expand channels it keeps
        n = N_STAGES * MAX_DEPTH
        by_expand = [self.space.blocks({**self.top, "e": [e] * n})[2:2 + n] for e in self.expands]
        self.mid = []
        for j in range(n):
            widths = [blocks[j].mid for blocks in by_expand]
            ch = torch.arange(max(widths))
            self.mid.append(torch.stack([(ch < w).float() for w in widths]))

    def __call__(self, x: torch.Tensor, gk: torch.Tensor, ge: torch.Tensor, gd: torch.Tensor) -> torch.Tensor:
        shared = self.supernet._shared(self.top, self.layout)
        blocks = list(self.layout)

        def run(i: int, h: torch.Tensor, replace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
            prefix = f"{i}."
            params = {k[len(prefix):]: v for k, v in shared.items() if k.startswith(prefix)}
            params.update(replace or {})
            return functional_call(blocks[i], params, (h,))

        h = run(1, run(0, x))
        for s in range(N_STAGES):
            outs = []
            for i in range(MAX_DEPTH):
                j = s * MAX_DEPTH + i
                b = 2 + j
                dw, proj = shared[f"{b}.body.3.weight"], shared[f"{b}.body.6.weight"]
                kernel = (gk[j][:, None, None] * self.kernel_masks).sum(0)
                channels = (ge[j][:, None] * self.mid[j]).sum(0)
                h = run(b, h, {"body.3.weight": dw * kernel, "body.6.weight": proj * channels[None, :, None, None]})
                if i >= 1:
                    outs.append(h)
            h = gd[s, 0] * outs[0] + gd[s, 1] * outs[1] + gd[s, 2] * outs[2]
        n = 2 + N_STAGES * MAX_DEPTH
        for i in range(n, len(blocks)):
            h = run(i, h)
        return h


def discretise(space, logits: Sequence[torch.Tensor], resolution: int, width: float) -> dict:
    """The most likely choice of every variable, as a config of the space (canonical)."""
    lk, le, ld = (t.detach() for t in logits)
    ks, es = _choices(space, "ks"), _choices(space, "e")
    depths = _choices(space, "d")
    cfg = {**top_config(space, resolution, width), "ks": [ks[int(i)] for i in lk.argmax(1)],
           "e": [es[int(i)] for i in le.argmax(1)], "d": [depths[int(i)] for i in ld.argmax(1)]}
    return space.canonical(cfg)


@dataclass
class DifferentiableResult:
    checkpoint: Path
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0


def _point(rng: np.random.Generator) -> torch.Tensor:
    """A budget point drawn uniformly from the simplex."""
    return torch.tensor(rng.dirichlet(np.ones(len(SIMPLEX))), dtype=torch.float32)


def _cycle(data, settings: DifferentiableSettings, rng: np.random.Generator):
    """Validation batches, reshuffled at every pass, without end."""
    seed = int(rng.integers(2**31))
    while True:
        yield from data.batches("val", settings.batch_size, settings.resolution, shuffle=True, seed=seed)
        seed += 1


def _tau(settings: DifferentiableSettings, epoch: int) -> float:
    arch = settings.epochs - settings.warmup_epochs
    if epoch < settings.warmup_epochs or arch <= 1:
        return settings.tau_start
    t = (epoch - settings.warmup_epochs) / (arch - 1)
    return settings.tau_start * (settings.tau_end / settings.tau_start) ** t


def _st_gumbel(logits: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Straight-through Gumbel-softmax: one-hot forward, the soft sample's gradient (a generator of
    our own, so the run is deterministic for its seed)."""
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
    soft = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def train_differentiable(settings: DifferentiableSettings, lut: LatencyLUT | str | Path, out: str | Path, *,
                         progress: bool = True, data=None,
                         on_epoch: Callable[[dict], None] | None = None) -> DifferentiableResult:
    """Train (or resume) the weights and the budget hypernetwork into checkpoint `out`."""
    from hwnas_deploy.supernet.data import load_dataset
    from hwnas_deploy.supernet.elastic import ElasticSupernet
    from hwnas_deploy.supernet.train import (
        CHECKPOINT_FORMAT,
        CHECKPOINT_VERSION,
        changed_settings,
        load_checkpoint,
        sgd_cosine,
        write_checkpoint,
    )

    out = Path(out)
    lut = lut if isinstance(lut, LatencyLUT) else LatencyLUT.load(lut)
    data = data or load_dataset(settings.dataset)
    space = space_for(settings.space, data.num_classes)
    costs = CostTables(space, lut, settings.resolution, settings.width, settings.complexity)
    supernet = ElasticSupernet(space, seed=settings.seed)
    mixed = MixedSupernet(supernet, settings.resolution, settings.width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        hyper = BudgetHypernetwork(len(costs.kernels), len(costs.expands), settings.hidden)
    arch_opt = torch.optim.Adam(hyper.parameters(), lr=settings.arch_lr)
    n_train = min(len(data.y_train), settings.train_limit or len(data.y_train))
    steps = math.ceil(n_train / settings.batch_size)
    opt, sched = sgd_cosine(supernet.parameters(), settings.lr, settings.momentum, settings.weight_decay,
                            settings.epochs * steps)
    start, history = 0, []
    if out.exists():
        ckpt = load_checkpoint(out)
        differ = changed_settings(ckpt["settings"], asdict(settings))
        if ckpt.get("kind") != KIND or differ:
            raise ConfigError(f"{out} is not a differentiable run with these settings ({'; '.join(differ) or 'kind'}); "
                              "choose another path or the same settings")
        supernet.net.load_state_dict(ckpt["state"])
        hyper.load_state_dict(ckpt["hypernetwork"])
        opt.load_state_dict(ckpt["optimizer"])
        arch_opt.load_state_dict(ckpt["arch_optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, history = int(ckpt["epoch"]), list(ckpt["history"])
    if start >= settings.epochs:
        return DifferentiableResult(out, start, history, resumed_from=start)

    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=(settings.epochs - start) * steps, disable=not progress, unit="step",
               desc=f"differentiable {settings.space}")
    uniform = tuple(torch.zeros(shape) for shape in hyper.shapes)
    for epoch in range(start, settings.epochs):
        t0 = time.time()
        rng = np.random.default_rng([settings.seed, epoch])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        tau, searching = _tau(settings, epoch), epoch >= settings.warmup_epochs
        supernet.train()
        sums = {"loss": 0.0, "ce": 0.0, "latency_ms": 0.0}
        val = _cycle(data, settings, rng)
        for x, y in data.batches("train", settings.batch_size, settings.resolution, shuffle=True,
                                 seed=int(rng.integers(2**31)), limit=n_train):
            # weights: cross-entropy on a training batch of a sub-network drawn uniformly (drawn from
            # the architecture distribution, the networks it favours early would be trained most and
            # favoured more: the search collapsed onto the smallest networks that way)
            opt.zero_grad(set_to_none=True)
            ce = F.cross_entropy(mixed(x, *[_st_gumbel(t, 1.0, gen) for t in uniform]), y)
            ce.backward()
            torch.nn.utils.clip_grad_norm_(supernet.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            sums["ce"] += ce.item()
            if searching:
                # architecture: cross-entropy on a validation batch + the budget's pressure (DARTS's
                # first-order split: on the training loss every sub-network fits digits alike)
                arch_opt.zero_grad(set_to_none=True)
                p = _point(rng)
                logits = hyper(p)
                xv, yv = next(val)
                ce_val = F.cross_entropy(mixed(xv, *[_st_gumbel(t, tau, gen) for t in logits]), yv)
                e_lat, e_cost = costs.expected(*[F.softmax(t, dim=-1) for t in logits])
                b_lat, b_cost = costs.budgets(p)
                loss = (ce_val + settings.kappa * F.relu(e_lat / b_lat - 1)
                        + settings.lam * F.relu(e_cost / b_cost - 1))
                loss.backward()
                arch_opt.step()
                opt.zero_grad(set_to_none=True)  # the architecture step leaves the weights alone
                sums["loss"] += loss.item()
                sums["latency_ms"] += float(e_lat.detach())
            bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1}/{settings.epochs} ce {ce.item():.3f} tau {tau:.2f}")
        row = {"epoch": epoch + 1, "searching": searching, "tau": round(tau, 4),
               **{k: v / steps for k, v in sums.items()}, "seconds": round(time.time() - t0, 2)}
        with torch.no_grad():
            row["family_ms"] = [round(float(costs.expected(*[F.softmax(t, -1) for t in hyper(q)])[0]), 4)
                                for q in budget_points(3)]
        history.append(row)
        bar.write(f"epoch {epoch + 1}: ce {row['ce']:.3f}, expected latency at p_latency 0/0.5/1: "
                  f"{row['family_ms']} ms ({row['seconds']:.0f} s)")
        ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": KIND,
                "settings": asdict(settings), "num_classes": data.num_classes, "dataset": data.describe(),
                "epoch": epoch + 1, "history": history, "lut": lut.to_dict(),
                "state": {k: v.detach().cpu() for k, v in supernet.net.state_dict().items()},
                "hypernetwork": hyper.state_dict(), "optimizer": opt.state_dict(),
                "arch_optimizer": arch_opt.state_dict(), "scheduler": sched.state_dict()}
        write_checkpoint(out, ckpt)
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    return DifferentiableResult(out, settings.epochs, history, resumed_from=start)


def budget_points(n: int, axis: str = "latency") -> list[torch.Tensor]:
    """`n` points along one edge of the simplex: from no pressure (free = 1) to all pressure on
    `axis` (latency or complexity)."""
    if axis not in SIMPLEX[:2]:
        raise ConfigError(f"budget axis {axis!r}: one of {list(SIMPLEX[:2])}")
    if n < 1:
        raise ConfigError(f"budgets: at least 1, got {n}")
    out = []
    for t in np.linspace(0.0, 1.0, n):
        p = np.zeros(len(SIMPLEX))
        p[SIMPLEX.index(axis)], p[-1] = t, 1.0 - t
        out.append(torch.tensor(p, dtype=torch.float32))
    return out


def family(checkpoint: str | Path, budgets: int = 7, axis: str = "latency",
           points: Sequence[Sequence[float]] | None = None) -> list[dict]:
    """The architecture of each budget point (`budgets` along `axis`, or explicit simplex
    `points`), with what the LUT predicts for it (ms) and its complexity."""
    from hwnas_deploy.spaces import get_space
    from hwnas_deploy.supernet.train import load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    if ckpt.get("kind") != KIND:
        raise ConfigError(f"{checkpoint}: a supernet checkpoint, not a differentiable search run")
    s = DifferentiableSettings(**ckpt["settings"])
    space = space_for(s.space, ckpt["num_classes"])
    lut = LatencyLUT.from_dict(ckpt["lut"], f"{checkpoint}: lut")
    costs = CostTables(space, lut, s.resolution, s.width, s.complexity)
    hyper = BudgetHypernetwork(len(costs.kernels), len(costs.expands), s.hidden)
    hyper.load_state_dict(ckpt["hypernetwork"])
    registry = get_space(s.space)  # counts of the network as exported and measured (its 1000-class head)
    if points is not None:
        qs = []
        for q in points:
            q = np.asarray(q, dtype=float)
            if q.shape != (len(SIMPLEX),) or np.any(q < 0) or not np.isclose(q.sum(), 1.0):
                raise ConfigError(f"budget point {list(q)}: {len(SIMPLEX)} non-negative weights "
                                  f"({', '.join(SIMPLEX)}) summing to 1")
            qs.append(torch.tensor(q, dtype=torch.float32))
    else:
        qs = budget_points(budgets, axis)
    rows = []
    with torch.no_grad():
        for q in qs:
            logits = hyper(q)
            cfg = discretise(space, logits, s.resolution, s.width)
            e_lat, e_cost = costs.expected(*[F.softmax(t, -1) for t in logits])
            rows.append({"budget": {k: round(float(v), 4) for k, v in zip(SIMPLEX, q, strict=True)},
                         "config": cfg, "lut_ms": float(lut.predict([cfg])[0]), "expected_ms": float(e_lat),
                         f"expected_{s.complexity}": float(e_cost),
                         "params": registry.params_count(cfg), "macs": registry.macs(cfg)})
    return rows


def ensure_lut(device: str, runtime: str, space: str, resolution: int, width: float, path: str | Path,
               progress: bool = True) -> LatencyLUT:
    """The LUT at `path` with every block the run can choose measured on the device (only the
    missing ones are measured: a LUT of the space already there is extended)."""
    from hwnas_deploy.predictors.lut import build_lut
    from hwnas_deploy.spaces import get_space

    return build_lut(device, space, runtime, lut_configs(get_space(space), resolution, width), path,
                     progress=progress)


def run_differentiable(settings: DifferentiableSettings, lut: str | Path, out_dir: str | Path, *, budgets: int = 7,
                       axis: str = "latency", device: str | None = None, runtime: str | None = None, store=None,
                       progress: bool = True) -> list[dict]:
    """One differentiable search into a run folder, as `hwnas search` writes one:

        RUN/supernet.pt   weights + hypernetwork (an hwnas-supernet checkpoint: resumable, and
                          `accuracy=supernet:RUN/supernet.pt` scores any network on its weights)
        RUN/front.json    the family (one network per budget point, `hwnas front/export/deploy
                          --run RUN` take it), with test accuracy on the run's weights, LUT latency
                          and, with a device, the measured latency
        RUN/family.png    latency against the budget (LUT and measured), accuracy against latency

    With `device` and `runtime`, the LUT at `lut` is first completed on that device, and every
    architecture of the family is exported, deployed and measured there into `store`."""
    import json

    from hwnas_deploy import datafile
    from hwnas_deploy.search.run_folder import FRONT_FORMAT, FRONT_VERSION
    from hwnas_deploy.spaces import get_space
    from hwnas_deploy.supernet.objective import SupernetAccuracy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if device is not None:
        if runtime is None or store is None:
            raise ConfigError("measuring the family on a device needs its runtime and a store (--db)")
        ensure_lut(device, runtime, settings.space, settings.resolution, settings.width, lut, progress)
    result = train_differentiable(settings, lut, out / "supernet.pt", progress=progress)
    rows = family(result.checkpoint, budgets, axis)
    accuracy = SupernetAccuracy(result.checkpoint, store, "test")([r["config"] for r in rows])
    for row, acc in zip(rows, accuracy, strict=True):
        row["accuracy"] = float(acc)
    objectives = [{"name": "accuracy", "maximise": True, "spec": f"accuracy=supernet:{result.checkpoint}@test",
                   "measured": False},
                  {"name": "latency", "maximise": False, "spec": f"latency=lut:{lut}", "measured": False}]
    if device is not None:
        from hwnas_deploy.profiling import profile

        sp = get_space(settings.space)
        distinct = list({sp.config_hash(r["config"]): r["config"] for r in rows}.values())
        report = profile(device, sp, 0, runtime, store, configs=distinct, progress=progress).raise_if_interrupted()
        for row in rows:
            row["measured_ms"] = report.median_ms(sp.config_hash(row["config"]))
        objectives.append({"name": "measured_ms", "maximise": False, "spec": f"latency=measure:{device}/{runtime}",
                           "measured": True})
    for row in rows:
        row["latency"] = row["lut_ms"]
    body = {"format": FRONT_FORMAT, "version": FRONT_VERSION, "space": settings.space, "objectives": objectives,
            "constraints": [], "tactic": KIND, "algorithm": "gumbel-softmax + budget hypernetwork",
            "evaluations": len(rows), "history": result.history, "front": rows,
            "settings": asdict(settings), "budgets": {"count": budgets, "axis": axis}}
    (out / "front.json").write_text(json.dumps(datafile.finite(body), indent=1) + "\n")
    plot_family(rows, axis, out / "family.png")
    return rows


def plot_family(rows: Sequence[dict], axis: str, path: str | Path) -> Path:
    from hwnas_deploy.report.figures import new_figure, save_figure

    fig, (left, right) = new_figure(1, 2, figsize=(10, 4))
    t = [r["budget"][axis] for r in rows]
    left.plot(t, [r["lut_ms"] for r in rows], "o-", label="LUT (predicted)")
    left.plot(t, [r["expected_ms"] for r in rows], ":", color="grey", label="expected under the distribution")
    if all("measured_ms" in r for r in rows):
        left.plot(t, [r["measured_ms"] for r in rows], "s-", label="measured")
    left.set_xlabel(f"budget point: weight on {axis}")
    left.set_ylabel("latency (ms)")
    left.legend()
    key = "measured_ms" if all("measured_ms" in r for r in rows) else "lut_ms"
    right.plot([r[key] for r in rows], [r["accuracy"] for r in rows], "o-")
    for r in rows:
        right.annotate(f"{r['budget'][axis]:.2f}", (r[key], r["accuracy"]), fontsize=7, xytext=(3, 3),
                       textcoords="offset points")
    right.set_xlabel(f"latency ({'measured' if key == 'measured_ms' else 'LUT'}, ms)")
    right.set_ylabel("test accuracy on the run's weights (%)")
    return save_figure(fig, path)
