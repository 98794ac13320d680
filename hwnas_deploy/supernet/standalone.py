"""Training one sub-network on its own: the ground truth a supernet's estimates are judged by.

Same data pipeline, optimiser and schedule as the supernet (SGD with Nesterov momentum, cosine
learning rate), labels only, at the sub-network's own resolution, deterministic for a seed.
BatchNorm statistics are set exactly over the training split before evaluation (a few hundred
steps of running averages lag behind the weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from hwnas_deploy.spaces.blocks import build_network
from hwnas_deploy.supernet.data import Dataset
from hwnas_deploy.supernet.elastic import accuracy, recalibrate_bn, space_for
from hwnas_deploy.supernet.train import sgd_cosine


def train_standalone(space_name: str, cfg: Mapping, data: Dataset, *, epochs: int = 8, batch_size: int = 64,
                     lr: float = 0.05, weight_decay: float = 3e-5, seed: int = 0) -> dict[str, float]:
    """Train sub-network `cfg` from scratch; returns its val and test accuracy (fractions)."""
    space = space_for(space_name, data.num_classes)
    cfg = space.validate(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_network(space.blocks(cfg))
        steps = epochs * math.ceil(len(data.y_train) / batch_size)
        opt, sched = sgd_cosine(model.parameters(), lr, 0.9, weight_decay, steps)
        r = cfg["r"]
        for epoch in range(epochs):
            model.train()
            order_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
            for x, y in data.batches("train", batch_size, r, shuffle=True, seed=order_seed):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
                sched.step()
        recalibrate_bn(model, (x for x, _ in data.batches("train", 256, r)))
        return {"val": accuracy(model, data.batches("val", 256, r)),
                "test": accuracy(model, data.batches("test", 256, r)) if data.y_test is not None else float("nan")}
