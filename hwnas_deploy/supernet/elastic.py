"""An elastic supernet over a staged MobileNet space: one set of weights, every sub-network.

The supernet *is* the space's largest network (`space.build(max_config)`'s module layout). A
sub-network's weights are slices of it:

* depth by prefix: stage s runs its first d[s] blocks (`space.block_slots`);
* channels by prefix: the first `c` output / input channels of each layer. Expand channels are
  kept in order of importance (`reorder_channels`: the L1 norm of each channel's weights in the
  block's projection, as OFA does), so a prefix is the most important set;
* kernels by centre crop: a 3x3 kernel is the centre of the 5x5 of the 7x7;
* resolution: the network is fully convolutional, any input size runs.

`forward(x, cfg)` runs a sub-network on the shared weights (gradients reach the supernet) by
calling the sub-network's own module layout with sliced parameters (`torch.func.functional_call`),
so training and extraction cannot disagree about which weights a sub-network owns. BatchNorm
uses batch statistics there; `extract(cfg)` returns the plain `nn.Module` (the space's own
layout, eval mode) that every exporter takes, with statistics to be recalibrated per
sub-network (`recalibrate_bn`) before it is evaluated, as OFA does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces import get_space
from hwnas_deploy.spaces.blocks import MBConvBlock, build_network
from hwnas_deploy.spaces.mobilenet import StagedMobileNetSpace


def space_for(name: str, num_classes: int) -> StagedMobileNetSpace:
    """The named space with a classifier for `num_classes` classes."""
    base = get_space(name)
    if not isinstance(base, StagedMobileNetSpace):
        raise ConfigError(f"space {name!r} has no elastic supernet (supported: mcu-mbnet, ofa-mbv3-*)")
    sp = copy.copy(base)
    sp.num_classes = num_classes
    return sp


def slice_like(src: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The part of `src` a smaller tensor of `shape` owns: a prefix along the channel dims
    (0 and 1), the centre along the spatial dims (2 and 3) of a kernel."""
    index = []
    for dim, (big, small) in enumerate(zip(src.shape, shape, strict=True)):
        if small > big:
            raise ValueError(f"cannot take shape {tuple(shape)} from {tuple(src.shape)}")
        start = (big - small) // 2 if dim >= 2 else 0
        index.append(slice(start, start + small))
    return src[tuple(index)]


class ElasticSupernet(nn.Module):
    def __init__(self, space: StagedMobileNetSpace, seed: int = 0):
        super().__init__()
        self.space = space
        self.max_config = space.max_config()
        self.max_blocks = space.blocks(self.max_config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_network(self.max_blocks)
        self._layouts: dict[str, nn.Module] = {}

    # -- sub-networks -----------------------------------------------------------------------
    def _layout(self, cfg: Mapping) -> nn.Module:
        """The sub-network's module layout for training: tensors on the meta device (shapes
        only; the supernet's slices are passed in), BatchNorm on batch statistics."""
        key = self.space.config_hash(cfg)
        if key not in self._layouts:
            if len(self._layouts) > 256:
                self._layouts.clear()
            with torch.device("meta"):
                layout = nn.Sequential(*(b.build() for b in self.space.blocks(cfg)))
            for m in layout.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.track_running_stats = False
                    m.running_mean = m.running_var = m.num_batches_tracked = None
            self._layouts[key] = layout.train()
        return self._layouts[key]

    def _shared(self, cfg: Mapping, module: nn.Module) -> dict[str, torch.Tensor]:
        """Sub-network tensor name -> the slice of the supernet's tensor it uses (a view)."""
        slots = self.space.block_slots(cfg)
        big = dict(self.net.named_parameters()) | dict(self.net.named_buffers())
        out = {}
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            block, _, rest = name.partition(".")
            out[name] = slice_like(big[f"{slots[int(block)]}.{rest}"], tensor.shape)
        return out

    def forward(self, x: torch.Tensor, cfg: Mapping) -> torch.Tensor:
        """Logits of sub-network `cfg` on the shared weights (BatchNorm on batch statistics)."""
        cfg = self.space.validate(cfg)
        layout = self._layout(cfg)
        return functional_call(layout, self._shared(cfg, layout), (x,))

    def extract(self, cfg: Mapping) -> nn.Module:
        """Sub-network `cfg` as a plain nn.Module (eval mode) holding copies of its weights."""
        cfg = self.space.validate(cfg)
        module = nn.Sequential(*(b.build() for b in self.space.blocks(cfg)))
        with torch.no_grad():
            shared = self._shared(cfg, module)
            module.load_state_dict({k: v.detach().clone() for k, v in shared.items()})
        return module.eval()

    # -- channel importance -----------------------------------------------------------------
    @torch.no_grad()
    def reorder_channels(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Sort every block's expand channels by importance (L1 norm of the projection's input
        weights), largest first. The largest network computes exactly the same function. With
        `optimizer`, its per-parameter state (momentum) is permuted alike, so training goes on
        as if the channels had always been in this order."""

        def permute(t: torch.Tensor, order: torch.Tensor, dim: int) -> None:
            t.copy_(t.index_select(dim, order))
            state = optimizer.state.get(t) if optimizer is not None and isinstance(t, nn.Parameter) else None
            for value in (state or {}).values():
                if torch.is_tensor(value) and value.shape == t.shape:
                    value.copy_(value.index_select(dim, order))

        for spec, block in zip(self.max_blocks, self.net, strict=True):
            if not isinstance(spec, MBConvBlock) or spec.mid == spec.cin:
                continue
            layers = list(block.body)
            expand, expand_bn, dw, dw_bn = layers[0], layers[1], layers[3], layers[4]
            project = layers[-2]
            se = layers[6] if spec.se_mid else None
            order = torch.argsort(project.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            permute(expand.weight, order, 0)
            permute(dw.weight, order, 0)
            for bn in (expand_bn, dw_bn):
                for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                    permute(t, order, 0)
            if se is not None:
                permute(se.reduce.weight, order, 1)
                permute(se.expand.weight, order, 0)
                permute(se.expand.bias, order, 0)
            permute(project.weight, order, 1)


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to the exact mean/variance over `batches`
    (training images at the sub-network's resolution); returns the module in eval mode."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    module.train()
    for x in batches:
        module(x)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    return module.eval()


@torch.no_grad()
def accuracy(module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy (fraction) of `module` over (images, labels) batches."""
    module.eval()
    right = total = 0
    for x, y in batches:
        right += int((module(x).argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise ConfigError("no images to evaluate on")
    return right / total
