"""A one-shot (weight-sharing) supernet over the ``blox`` spaces, trained single-path.

Each stage holds one module per operation for node 1 and another set for node 2 (BLOX's
supernet: the two nodes do not share weights), then its fixed reduction; stem and head are
shared by all networks. Training draws one network uniformly per batch (single-path one-shot,
as SPOS): the block of each stage, hence its two operations and wiring. A network's accuracy is
taken from its extracted copy (`extract`: the space's own module, weights copied, so it exports
like any other) with BatchNorm statistics recalibrated on training images first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas_deploy.spaces.blocks import init_weights
from hwnas_deploy.spaces.blox import DESIGNS, OPS, Blox, build_op, cell_forward
from hwnas_deploy.supernet.data import Dataset
from hwnas_deploy.supernet.elastic import accuracy, recalibrate_bn
from hwnas_deploy.supernet.train import sgd_cosine


class BloxSupernet(nn.Module):
    def __init__(self, space: Blox):
        super().__init__()
        self.space = space
        blocks = space.blocks({"blocks": [0, 0, 0]})
        self.stem = blocks[0].build()
        self.op1, self.op2, self.reduce = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for cell, reduce in zip(blocks[1:-1:2], blocks[2:-1:2], strict=True):
            self.op1.append(nn.ModuleDict({o: build_op(o, cell.channels) for o in OPS}))
            self.op2.append(nn.ModuleDict({o: build_op(o, cell.channels) for o in OPS}))
            self.reduce.append(reduce.build())
        self.head = blocks[-1].build()
        init_weights(self)

    def forward(self, x: torch.Tensor, cfg: Mapping) -> torch.Tensor:
        x = self.stem(x)
        for s, index in enumerate(cfg["blocks"]):
            d = DESIGNS[index]
            x = cell_forward(d, self.op1[s][d.op1], self.op2[s][d.op2] if d.op2 else None, x)
            x = self.reduce[s](x)
        return self.head(x)

    def extract(self, cfg: Mapping) -> nn.Module:
        """The network `cfg` as `space.build` makes it, with this supernet's weights."""
        cfg = self.space.validate(cfg)
        module = self.space.build(cfg)
        parts = list(module)
        parts[0].load_state_dict(self.stem.state_dict())
        for s, index in enumerate(cfg["blocks"]):
            cell, d = parts[1 + 2 * s], DESIGNS[index]
            cell.op1.load_state_dict(self.op1[s][d.op1].state_dict())
            if d.op2:
                cell.op2.load_state_dict(self.op2[s][d.op2].state_dict())
            parts[2 + 2 * s].load_state_dict(self.reduce[s].state_dict())
        parts[-1].load_state_dict(self.head.state_dict())
        return module.eval()


def train_blox_supernet(space: Blox, data: Dataset, *, epochs: int = 30, batch_size: int = 64, lr: float = 0.05,
                        weight_decay: float = 3e-5, seed: int = 0, progress=None) -> BloxSupernet:
    """Single-path training, one uniformly drawn network per batch; SGD + Nesterov, cosine
    learning rate. `progress(epoch, loss)` is called after each epoch when given."""
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = BloxSupernet(space)
        steps = epochs * math.ceil(len(data.y_train) / batch_size)
        opt, sched = sgd_cosine(net.parameters(), lr, 0.9, weight_decay, steps)
        for epoch in range(epochs):
            net.train()
            total = 0.0
            for x, y in data.batches("train", batch_size, space.resolution, shuffle=True,
                                     seed=int(rng.integers(2**31))):
                cfg = {"blocks": [int(b) for b in rng.integers(0, len(DESIGNS), 3)]}
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x, cfg), y)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(y)
            if progress is not None:
                progress(epoch, total / len(data.y_train))
    return net.eval()


def evaluate_blox(net: BloxSupernet, configs: Sequence[Mapping], data: Dataset, split: str = "val",
                  calib_images: int = 256) -> np.ndarray:
    """Accuracy (fraction) of each network, BatchNorm recalibrated on training images first."""
    r = net.space.resolution
    calib = [x for x, _ in data.batches("train", calib_images, r, limit=calib_images)]
    batches = list(data.batches(split, 512, r))
    out = []
    for cfg in configs:
        path = _Path(net, net.space.validate(cfg))  # the supernet's own modules: no copy per network
        out.append(accuracy(recalibrate_bn(path, calib), batches))  # leaves the supernet in eval mode
    return np.asarray(out)


class _Path(nn.Module):
    def __init__(self, net: BloxSupernet, cfg: Mapping):
        super().__init__()
        self.net, self.cfg = net, cfg

    def forward(self, x):
        return self.net(x, self.cfg)


__all__ = ["BloxSupernet", "evaluate_blox", "train_blox_supernet"]
