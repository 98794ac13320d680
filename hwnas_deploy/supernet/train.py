"""Training an elastic supernet: the sandwich rule with in-place distillation (BigNAS / OFA),
and the Pareto rank-preserving strategy on top of it.

`sandwich`: every step trains, on one batch, the largest sub-network on the labels, then the
smallest and `n_random` random ones on the largest's softened predictions (in-place
distillation), and takes one optimiser step on the summed gradients.

`pareto-rank`: the sandwich step plus a ranking signal from reference sub-networks whose true
accuracy and hardware cost on the target device are known (`reference`: JSON lines with
`config`, `accuracy`, `cost`; e.g. networks trained stand-alone and measured, or a LUT's cost).
With costs fixed by the device, the supernet keeps the true Pareto dominance between two
networks exactly when it keeps their accuracy order, so each step samples `rank_samples`
reference networks (those on better Pareto fronts more often: weight 1 / (1 + rank)) and adds,
for every pair whose true accuracies differ, a hinge on their batch losses
`relu(margin - (loss_worse - loss_better))`, weighted by 1 / (1 + the pair's best Pareto rank):
pairs that decide the front count most. The gradient goes through the better network's loss
only: a hinge free to raise the worse network's loss is met most cheaply by damaging the shared
weights (a first version did exactly that: the supernet collapsed to 16 % accuracy). The
hinge's weight ramps up from 0 over the first half of training, once the supernet predicts
anything worth ranking. Deterministic for a seed: the batch order and the
sub-networks of epoch `k` derive from (seed, k), so a run resumed from its checkpoint after
epoch k continues exactly as an uninterrupted one.

The checkpoint (written atomically after every epoch) is a plain `torch.save` dict of tensors
and built-in types, loadable with `weights_only=True`: weights, optimiser and schedule state,
settings, dataset description and the per-epoch history, with a SHA-256 of all of it
(`content_digest`, over tensor bytes and values, not the zip file) checked on every load, as
predictors and LUTs carry theirs: one flipped bit in a weight is refused, not scored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.lifetime import remove_on_exit
from hwnas_deploy.supernet.data import Dataset, load_dataset
from hwnas_deploy.supernet.elastic import ElasticSupernet, accuracy, recalibrate_bn, space_for

CHECKPOINT_FORMAT = "hwnas-supernet"
CHECKPOINT_VERSION = 2  # 2: with its content's sha256
STRATEGIES = ("sandwich", "pareto-rank")


@dataclass
class TrainSettings:
    space: str = "mcu-mbnet"
    dataset: str = "digits"
    strategy: str = "sandwich"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5
    n_random: int = 2
    #: training resolutions are the space's choices up to this (None: all); evaluation runs at any
    max_resolution: int | None = 96
    temperature: float = 1.0
    #: the summed gradient of a step is clipped to this norm: at the first steps it reaches 40+
    #: and the sandwich alone already wobbles; the rank term on top diverged without it
    grad_clip: float = 5.0
    seed: int = 0
    #: at most this many training images per epoch (None: all); tests use a tiny budget
    train_limit: int | None = None
    #: pareto-rank: reference networks (JSON lines: config, accuracy, cost), their weight and margin
    reference: str | None = None
    rank_samples: int = 3
    rank_weight: float = 1.0
    rank_margin: float = 0.1

    def __post_init__(self):
        checks = {"strategy": self.strategy in STRATEGIES, "epochs": self.epochs >= 1,
                  "batch_size": self.batch_size >= 2,
                  "lr": self.lr > 0, "n_random": self.n_random >= 0, "temperature": self.temperature > 0,
                  "train_limit": self.train_limit is None or self.train_limit >= self.batch_size,
                  "rank_samples": self.rank_samples >= 2, "grad_clip": self.grad_clip > 0, "rank_weight": self.rank_weight >= 0,
                  "reference": (self.reference is not None) == (self.strategy == "pareto-rank")}
        for name, ok in checks.items():
            if not ok:
                allowed = {"strategy": f"one of {list(STRATEGIES)}",
                           "reference": "the pareto-rank strategy needs reference networks (and only it uses them)",
                           }.get(name, "out of range")
                raise ConfigError(f"supernet training setting {name}={getattr(self, name)!r}: {allowed}")


@dataclass
class TrainResult:
    checkpoint: Path
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0


def sgd_cosine(params, lr: float, momentum: float, weight_decay: float, total_steps: int):
    """The optimiser every trainer here uses: SGD with Nesterov momentum, its learning rate
    falling on a cosine from `lr` to 0 over `total_steps` (then held at 0); (optimiser, schedule)."""
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    return opt, sched


def resolutions(space, cap: int | None) -> list[int]:
    choices = sorted(next(p.choices for p in space.params if p.name == "r"))
    allowed = [r for r in choices if cap is None or r <= cap]
    if not allowed:
        raise ConfigError(f"max_resolution={cap} is below every resolution of {space.name} "
                          f"({choices[0]}..{choices[-1]})")
    return allowed


def smallest_config(space) -> dict:
    return {p.name: (min(p.choices) if p.length == 1 else [min(p.choices)] * p.length) for p in space.params}


def largest_config(space, cap: int | None) -> dict:
    cfg = space.max_config()
    cfg["r"] = max(resolutions(space, cap))
    return cfg


@dataclass
class Reference:
    """Reference networks with true accuracy and device cost, and their Pareto ranks."""

    configs: list[dict]
    accuracy: np.ndarray
    cost: np.ndarray
    rank: np.ndarray

    @classmethod
    def load(cls, path: str | Path, space) -> Reference:
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        configs, acc, cost = [], [], []
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"reference networks {path}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                configs.append(space.canonical(row["config"]))
                acc.append(float(row["accuracy"]))
                cost.append(float(row["cost"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, ConfigError) as exc:
                raise ConfigError(f"{path}:{n}: a reference line is {{\"config\": ..., \"accuracy\": ..., "
                                  f"\"cost\": ...}} ({type(exc).__name__}: {exc})") from None
        if len(configs) < 2:
            raise ConfigError(f"reference networks {path}: at least 2 are needed, found {len(configs)}")
        acc_a, cost_a = np.asarray(acc), np.asarray(cost)
        _, rank = NonDominatedSorting().do(np.column_stack([-acc_a, cost_a]), return_rank=True)
        return cls(configs, acc_a, cost_a, np.asarray(rank))

    def sample(self, rng: np.random.Generator, k: int) -> np.ndarray:
        p = 1.0 / (1.0 + self.rank)
        return rng.choice(len(self.configs), size=min(k, len(self.configs)), replace=False, p=p / p.sum())


def rank_loss(losses: list[torch.Tensor], accuracy: np.ndarray, rank: np.ndarray, margin: float) -> torch.Tensor:
    """Pairwise hinge: a network with the higher true accuracy must have the lower loss by `margin`,
    each pair weighted by 1 / (1 + its best Pareto rank). Only the better network's loss carries
    gradient (the worse one is a fixed bar to get under, never pushed up)."""
    total, pairs = losses[0].new_zeros(()), 0
    for a in range(len(losses)):
        for b in range(len(losses)):
            if accuracy[a] > accuracy[b]:
                weight = 1.0 / (1.0 + min(rank[a], rank[b]))
                total = total + weight * F.relu(margin - (losses[b].detach() - losses[a]))
                pairs += 1
    return total / max(pairs, 1)


def _random_config(space, rng: np.random.Generator, res: list[int]) -> dict:
    cfg = {p.name: (p.choices[rng.integers(len(p.choices))] if p.length == 1
                    else [p.choices[i] for i in rng.integers(len(p.choices), size=p.length)]) for p in space.params}
    cfg["r"] = int(res[rng.integers(len(res))])
    return cfg


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available here (use cpu or auto)")
    return torch.device(name)


def evaluate(supernet: ElasticSupernet, cfg: dict, data: Dataset, split: str = "val", calib_images: int = 256,
             batch: int = 128, device: torch.device | str = "cpu") -> float:
    """Accuracy of sub-network `cfg` taken from the supernet: extracted, BatchNorm recalibrated
    on `calib_images` training images at its resolution, evaluated on `split`."""
    r = cfg["r"]
    module = supernet.extract(cfg).to(device)
    recalibrate_bn(module, (x.to(device) for x, _ in data.batches("train", batch, r, limit=calib_images)))
    return accuracy(module, ((x.to(device), y.to(device)) for x, y in data.batches(split, batch, r)))


def content_digest(ckpt: dict) -> str:
    """SHA-256 of a checkpoint's content (every tensor's dtype, shape and bytes; every value's
    repr), independent of how torch lays out its file; the "sha256" entry itself left out."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(value.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            h.update(b"{")
            for key in sorted(value, key=repr):
                if value is ckpt and key == "sha256":
                    continue
                h.update(repr(key).encode() + b":")
                feed(value[key])
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for item in value:
                feed(item)
            h.update(b"]")
        else:
            h.update(repr(value).encode() + b";")

    feed(ckpt)
    return h.hexdigest()


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{path}: refused: it holds objects other than tensors and plain data, which a supernet "
                          "checkpoint never does (it may be malicious; do not load it another way)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{path}: not a readable supernet checkpoint (truncated, or not a torch file: "
                          f"{type(exc).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path}: checkpoint version {ckpt.get('version')}, this version reads {CHECKPOINT_VERSION}")
    if ckpt.get("sha256") != content_digest(ckpt):
        raise ConfigError(f"{path}: its content does not match its sha256 (corrupted or edited); restore it or train "
                          "again")
    return ckpt


def load_supernet(path: str | Path) -> tuple[ElasticSupernet, dict]:
    """The trained supernet from a checkpoint, and the checkpoint's metadata."""
    return supernet_from_checkpoint(load_checkpoint(Path(path)))


def supernet_from_checkpoint(ckpt: dict) -> tuple[ElasticSupernet, dict]:
    """The trained supernet from a checkpoint `load_checkpoint` read, and its metadata."""
    supernet = ElasticSupernet(space_for(ckpt["settings"]["space"], ckpt["num_classes"]))
    supernet.net.load_state_dict(ckpt["state"])
    meta = {k: v for k, v in ckpt.items() if k not in ("state", "optimizer", "scheduler")}
    return supernet.eval(), meta


def train_supernet(settings: TrainSettings, out: str | Path, *, device: str = "cpu", progress: bool = True,
                   data: Dataset | None = None, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train (or resume training of) a supernet into the checkpoint `out`; `on_epoch` is called
    with each epoch's history row once its checkpoint is written."""
    out = Path(out)
    data = data or load_dataset(settings.dataset)
    space = space_for(settings.space, data.num_classes)
    res = resolutions(space, settings.max_resolution)
    dev = _device(device)
    supernet = ElasticSupernet(space, seed=settings.seed).to(dev)
    n_train = min(len(data.y_train), settings.train_limit or len(data.y_train))
    steps_per_epoch = math.ceil(n_train / settings.batch_size)
    opt, sched = sgd_cosine(supernet.parameters(), settings.lr, settings.momentum, settings.weight_decay,
                            settings.epochs * steps_per_epoch)
    reference = Reference.load(settings.reference, space) if settings.strategy == "pareto-rank" else None
    start, history = 0, []
    if out.exists():
        ckpt = load_checkpoint(out)
        differ = changed_settings(ckpt["settings"], asdict(settings))
        if differ:
            raise ConfigError(f"{out} was trained with other settings ({'; '.join(differ)}); "
                              "choose another checkpoint path or the same settings")
        supernet.net.load_state_dict(ckpt["state"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, history = int(ckpt["epoch"]), list(ckpt["history"])
    if start >= settings.epochs:
        return TrainResult(out, start, history, resumed_from=start)

    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=(settings.epochs - start) * steps_per_epoch, disable=not progress, unit="step",
               desc=f"supernet {settings.space}")
    small = smallest_config(space)
    for epoch in range(start, settings.epochs):
        t0 = time.time()
        rng = np.random.default_rng([settings.seed, epoch])
        torch.manual_seed(settings.seed * 100_003 + epoch)
        supernet.train()
        losses = []
        big = largest_config(space, settings.max_resolution)
        for x, y in data.batches("train", settings.batch_size, max(res), shuffle=True,
                                 seed=int(rng.integers(2**31)), limit=n_train):
            x, y = x.to(dev), y.to(dev)
            opt.zero_grad(set_to_none=True)
            logits = supernet(x, big)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            teacher = F.softmax(logits.detach() / settings.temperature, dim=1)
            students = [small] + [_random_config(space, rng, res) for _ in range(settings.n_random)]
            total_loss = loss.item()
            for cfg in students:
                xs = F.interpolate(x, size=(cfg["r"], cfg["r"]), mode="bilinear", align_corners=False) \
                    if cfg["r"] != x.shape[-1] else x
                student = F.log_softmax(supernet(xs, cfg) / settings.temperature, dim=1)
                kd = F.kl_div(student, teacher, reduction="batchmean") * settings.temperature**2
                kd.backward()
                total_loss += kd.item()
            if reference is not None:
                ramp = min(1.0, (epoch + 1) / max(1.0, settings.epochs / 2))
                total_loss += _rank_step(supernet, reference, x, y, teacher, rng, settings, ramp)
            torch.nn.utils.clip_grad_norm_(supernet.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            losses.append(total_loss)
            bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1}/{settings.epochs} loss {total_loss:.3f}")
        supernet.reorder_channels(opt)
        supernet.eval()
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 2),
               "val_acc_largest": evaluate(supernet, big, data, device=dev),
               "val_acc_smallest": evaluate(supernet, {**small, "r": max(res)}, data, device=dev)}
        history.append(row)
        bar.write(f"epoch {epoch + 1}: loss {row['loss']:.3f}, val accuracy largest {row['val_acc_largest']:.3f} "
                  f"smallest {row['val_acc_smallest']:.3f} ({row['seconds']:.0f} s)")
        _save(out, supernet, opt, sched, settings, data, epoch + 1, history)
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    return TrainResult(out, settings.epochs, history, resumed_from=start)


def _rank_step(supernet, reference: Reference, x, y, teacher, rng, settings: TrainSettings, ramp: float) -> float:
    """Distil the sampled reference networks, plus the ranking hinge. Both are means (over the
    networks, over the pairs), so the step's gradient stays on the scale of one more sandwich
    student: summed, the extra terms made the shared gradient large enough to diverge at the
    sandwich's learning rate."""
    idx = reference.sample(rng, settings.rank_samples)
    losses, distil = [], x.new_zeros(())
    for i in idx:
        cfg = reference.configs[i]
        xs = F.interpolate(x, size=(cfg["r"], cfg["r"]), mode="bilinear", align_corners=False) \
            if cfg["r"] != x.shape[-1] else x
        logits = supernet(xs, cfg)
        losses.append(F.cross_entropy(logits, y))
        student = F.log_softmax(logits / settings.temperature, dim=1)
        distil = distil + F.kl_div(student, teacher, reduction="batchmean") * settings.temperature**2
    ranking = rank_loss(losses, reference.accuracy[idx], reference.rank[idx], settings.rank_margin)
    loss = distil / len(idx) + ramp * settings.rank_weight * ranking
    loss.backward()
    return loss.item()


def _save(out: Path, supernet, opt, sched, settings, data, epoch, history) -> None:
    ckpt = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "settings": asdict(settings),
        "num_classes": data.num_classes, "dataset": data.describe(), "epoch": epoch, "history": history,
        "state": {k: v.detach().cpu() for k, v in supernet.net.state_dict().items()},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
    }
    write_checkpoint(out, ckpt)


def write_checkpoint(out: Path, ckpt: dict) -> None:
    """torch.save with the content's sha256, atomically: a run killed while writing leaves the
    previous checkpoint whole."""
    partial = out.with_name(out.name + ".partial")
    remove_on_exit(partial)
    torch.save({**ckpt, "sha256": content_digest(ckpt)}, partial)
    os.replace(partial, out)


def changed_settings(saved: dict, mine: dict) -> list[str]:
    """What differs between a checkpoint's settings and a resumed run's (more epochs may be asked)."""
    return [f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in mine if k != "epochs" and saved.get(k) != mine[k]]


def settings_fields() -> list[str]:
    return [f.name for f in fields(TrainSettings)]
