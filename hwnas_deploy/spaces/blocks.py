"""Building blocks shared by the MobileNet-style spaces.

A block is a plain, hashable description (the LUT key) that knows its own MACs, parameters,
activation sizes and how to build itself as a torch module. Counting conventions follow OFA /
DyNAS-T: MACs count every Conv2d (squeeze-and-excitation convolutions on the pooled 1x1 map
included) and every Linear at batch 1; BatchNorm, activations and additions count none.
Parameters count everything trainable, BatchNorm affine parameters and biases included.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

ACTIVATIONS = ("relu", "relu6", "h_swish", "none")


def make_divisible(v: float, divisor: int = 8, min_val: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor` as MobileNet/OFA do (never below 90 %)."""
    min_val = divisor if min_val is None else min_val
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a 'same'-padded convolution (padding kernel // 2)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "h_swish":
        return nn.Hardswish(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"activation {name!r} not in {ACTIVATIONS}")


def _conv_bn_act(cin: int, cout: int, k: int, stride: int, act: str, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        _act(act),
    ]


@dataclass(frozen=True)
class ConvBlock:
    """Conv + BatchNorm + activation (stems and the final 1x1 expansion)."""

    in_hw: int
    cin: int
    cout: int
    kernel: int
    stride: int
    act: str
    kind: str = "conv"

    @property
    def out_hw(self) -> int:
        return conv_out(self.in_hw, self.kernel, self.stride)

    def macs(self) -> int:
        return self.out_hw**2 * self.cout * self.cin * self.kernel**2

    def params(self) -> int:
        return self.cout * self.cin * self.kernel**2 + 2 * self.cout

    def activation_sizes(self) -> list[tuple[int, int]]:
        """(input elements, output elements) of each layer in execution order."""
        return [(self.in_hw**2 * self.cin, self.out_hw**2 * self.cout)]

    def build(self) -> nn.Module:
        return nn.Sequential(*_conv_bn_act(self.cin, self.cout, self.kernel, self.stride, self.act))

    def key(self) -> str:
        return block_key(self)


class SqueezeExcite(nn.Module):
    """OFA's SE module: global pool, 1x1 conv (bias) + ReLU, 1x1 conv (bias) + hard sigmoid."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x):
        y = x.mean((2, 3), keepdim=True)
        y = self.gate(self.expand(self.relu(self.reduce(y))))
        return x * y


class MBConv(nn.Module):
    def __init__(self, spec: MBConvBlock):
        super().__init__()
        layers: list[nn.Module] = []
        if spec.mid != spec.cin:
            layers += _conv_bn_act(spec.cin, spec.mid, 1, 1, spec.act)
        layers += _conv_bn_act(spec.mid, spec.mid, spec.kernel, spec.stride, spec.act, groups=spec.mid)
        if spec.se_mid:
            layers.append(SqueezeExcite(spec.mid, spec.se_mid))
        layers += [nn.Conv2d(spec.mid, spec.cout, 1, bias=False), nn.BatchNorm2d(spec.cout)]
        self.body = nn.Sequential(*layers)
        self.residual = spec.residual

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


@dataclass(frozen=True)
class MBConvBlock:
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ identity).

    `mid == cin` means no expansion layer (expand ratio 1). `se_mid` is 0 without SE.
    """

    in_hw: int
    cin: int
    mid: int
    cout: int
    kernel: int
    stride: int
    act: str
    se_mid: int
    residual: bool
    expand: float
    kind: str = "mbconv"

    @property
    def out_hw(self) -> int:
        return conv_out(self.in_hw, self.kernel, self.stride)

    def macs(self) -> int:
        hw_in, hw_out = self.in_hw**2, self.out_hw**2
        m = 0
        if self.mid != self.cin:
            m += hw_in * self.cin * self.mid
        m += hw_out * self.mid * self.kernel**2
        if self.se_mid:
            m += 2 * self.mid * self.se_mid
        return m + hw_out * self.mid * self.cout

    def params(self) -> int:
        p = 0
        if self.mid != self.cin:
            p += self.cin * self.mid + 2 * self.mid
        p += self.mid * self.kernel**2 + 2 * self.mid
        if self.se_mid:
            p += 2 * self.mid * self.se_mid + self.mid + self.se_mid
        return p + self.mid * self.cout + 2 * self.cout

    def activation_sizes(self) -> list[tuple[int, int]]:
        hw_in, hw_out = self.in_hw**2, self.out_hw**2
        sizes = []
        if self.mid != self.cin:
            sizes.append((hw_in * self.cin, hw_in * self.mid))
        sizes.append((hw_in * self.mid, hw_out * self.mid))
        sizes.append((hw_out * self.mid, hw_out * self.cout))
        if self.residual:
            # The block input stays alive until the addition at the end.
            keep = hw_in * self.cin
            sizes = [(i + keep, o) if n else (i, o) for n, (i, o) in enumerate(sizes)]
        return sizes

    def build(self) -> nn.Module:
        return MBConv(self)

    def key(self) -> str:
        return block_key(self)


class ClassifierHeadModule(nn.Module):
    def __init__(self, spec: HeadBlock):
        super().__init__()
        self.mix = (
            nn.Sequential(nn.Conv2d(spec.cin, spec.hidden, 1, bias=False), _act(spec.act))
            if spec.hidden
            else nn.Identity()
        )
        self.fc = nn.Linear(spec.hidden or spec.cin, spec.classes)

    def forward(self, x):
        x = x.mean((2, 3), keepdim=True)
        return self.fc(self.mix(x).flatten(1))


@dataclass(frozen=True)
class HeadBlock:
    """Global average pool -> [1x1 conv without BN + activation] -> Linear classifier."""

    in_hw: int
    cin: int
    hidden: int
    classes: int
    act: str
    kind: str = "head"

    out_hw = 1

    def macs(self) -> int:
        width = self.hidden or self.cin
        return self.cin * self.hidden + width * self.classes

    def params(self) -> int:
        width = self.hidden or self.cin
        return self.cin * self.hidden + width * self.classes + self.classes

    def activation_sizes(self) -> list[tuple[int, int]]:
        return [(self.in_hw**2 * self.cin, self.classes + (self.hidden or self.cin))]

    def build(self) -> nn.Module:
        return ClassifierHeadModule(self)

    def key(self) -> str:
        return block_key(self)


Block = ConvBlock | MBConvBlock | HeadBlock


def block_key(block: Block) -> str:
    """Stable text key of a block: every field that changes its cost, in a fixed order."""
    fields = asdict(block)
    kind = fields.pop("kind")
    return kind + ":" + ",".join(f"{k}={v}" for k, v in sorted(fields.items()))


def build_network(blocks: list[Block]) -> nn.Module:
    model = nn.Sequential(*(b.build() for b in blocks))
    init_weights(model)
    return model


@contextmanager
def one_compute_thread():
    """Run torch on one thread inside: batch statistics are sums whose order follows the thread
    count, and a network must get the same weights bit for bit in every process (exports are
    cached and stored by content: one thread and two gave two files for one network)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set BatchNorm running statistics from one batch (as OFA re-calibrates sub-networks).

    Randomly initialised weights with identity BatchNorm let activations shrink layer by layer
    to ~1e-9; calibrated statistics keep every layer near unit scale, like a trained network."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    with one_compute_thread():
        model.train()
        with torch.no_grad():
            model(x)
    model.eval()
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum


def init_weights(model: nn.Module) -> None:
    """MobileNet initialisation (as torchvision): activations keep their scale through depth,
    so random-weight sub-networks give outputs large enough for export checks to mean something."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def peak_activation_elements(blocks: list[Block]) -> int:
    """Peak of live activation elements when layers run one after another (no in-place reuse)."""
    return max(i + o for b in blocks for i, o in b.activation_sizes())
