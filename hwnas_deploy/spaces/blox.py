"""``blox``: the BLOX macro space (Chau et al., NeurIPS 2022 Datasets and Benchmarks).

Three stages; each is one searchable *block* followed by a fixed reduction (stride 2, channels
doubled), after a 3x3 stem and before global pooling + a linear classifier. A block has two
nodes: node 1 applies an operation to the block input, node 2 an operation chosen with three
connection flags (from node 1, from the block input, a shortcut from node 1 to the output).
Operations are BLOX's: ``conv`` (four 3x3 convs), ``mbconv`` (two inverted residuals of
expand 2 with squeeze-and-excitation) and ``bconv`` (six bottleneck 1x1-5x5dw-1x1 residuals of
ratios 1/2, 1, 2). Of the 72 flag/op combinations, 45 distinct blocks remain (one flag setting
has no output; node 2 fed by the input alone leaves node 1 dangling; a parallel pair is
symmetric) in six connectivity schemes:

====================  ==============================  ======
scheme                output                          blocks
====================  ==============================  ======
``single``            op1(x)                          3
``seq``               op2(op1(x))                     9
``par``               op1(x) + op2(x)                 6
``seq-res``           op2(op1(x)) + op1(x)            9
``seq-skip``          op2(op1(x) + x)                 9
``seq-skip-res``      op2(op1(x) + x) + op1(x)        9
====================  ==============================  ======

45^3 = 91,125 networks. A config is ``{"blocks": [three indices into DESIGNS]}``; `arch_vec` /
`from_arch_vec` convert to and from BLOX's arch vectors (``[[[op1], [op2, prev, input, sc]], ...]``).
``blox`` is BLOX's CIFAR-100 network (stem 32 channels, 32x32 input); ``blox-mini`` (16
channels, 16x16 input, 10 classes) is the same space at a size digits and a 2-core CPU can train.
Departures: convolutions carry no bias (BatchNorm follows each), as in the other spaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces.base import Config, Param, SearchSpace
from hwnas_deploy.spaces.blocks import Block, ConvBlock, HeadBlock, block_key

OPS = ("conv", "mbconv", "bconv")
SCHEMES = ("single", "seq", "par", "seq-res", "seq-skip", "seq-skip-res")
#: node-2 flags (from node 1, from the block input, shortcut from node 1) of each scheme
_FLAGS = {"seq": (1, 0, 0), "par": (0, 1, 1), "seq-res": (1, 0, 1), "seq-skip": (1, 1, 0), "seq-skip-res": (1, 1, 1)}
MB_EXPAND = 2
BCONV_RATIOS = (0.5, 1, 2)  # bottleneck width / channels of the six residuals, cycled


@dataclass(frozen=True)
class Design:
    scheme: str
    op1: str
    op2: str | None = None

    @property
    def name(self) -> str:
        return self.op1 if self.scheme == "single" else f"{self.scheme}:{self.op1},{self.op2}"

    @property
    def ops(self) -> tuple[str, ...]:
        return (self.op1,) if self.op2 is None else (self.op1, self.op2)


def _designs() -> tuple[Design, ...]:
    out = [Design("single", o) for o in OPS]
    for scheme in SCHEMES[1:]:
        for i, a in enumerate(OPS):
            for b in OPS[i:] if scheme == "par" else OPS:
                out.append(Design(scheme, a, b))
    return tuple(out)


DESIGNS = _designs()
_BY_NAME = {d.name: i for i, d in enumerate(DESIGNS)}


def design_index(name: str) -> int:
    if name not in _BY_NAME:
        raise ConfigError(f"blox: no block named {name!r}; blocks: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def design_of_cell(cell: Sequence) -> int:
    """The design a BLOX cell vector ``[[op1], [op2, prev, input, sc]]`` builds."""
    try:
        (op1,), (op2, prev, inp, sc) = cell
        op1, op2, flags = int(op1), int(op2), (int(prev), int(inp), int(sc))
    except (TypeError, ValueError):
        raise ConfigError(f"blox: a cell is [[op1], [op2, prev, input, sc]], got {cell!r}") from None
    if not (0 <= op1 < len(OPS) and 0 <= op2 < len(OPS) and all(f in (0, 1) for f in flags)):
        raise ConfigError(f"blox: cell {cell!r}: ops are 0..{len(OPS) - 1} ({', '.join(OPS)}), flags 0 or 1")
    a, b = OPS[op1], OPS[op2]
    if flags == (0, 0, 0):
        raise ConfigError(f"blox: cell {cell!r} has no output (node 2 has no input and no shortcut)")
    if flags == (0, 0, 1):
        return _BY_NAME[a]
    if flags == (0, 1, 0):
        return _BY_NAME[b]
    if flags == (0, 1, 1):
        a, b = sorted((a, b), key=OPS.index)
    scheme = next(s for s, f in _FLAGS.items() if f == flags)
    return _BY_NAME[Design(scheme, a, b).name]


def cell_of_design(index: int) -> list[list[int]]:
    """BLOX's cell vector of a design (the first of its equivalent vectors)."""
    d = DESIGNS[index]
    if d.scheme == "single":
        return [[OPS.index(d.op1)], [0, 0, 0, 1]]
    return [[OPS.index(d.op1)], [OPS.index(d.op2), *_FLAGS[d.scheme]]]


# -- operations -----------------------------------------------------------------------------
def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _SE(nn.Module):
    """BLOX's squeeze-and-excitation: pool, 1x1 conv (no reduction), ReLU, 1x1 conv, sigmoid."""

    def __init__(self, c: int):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * self.c2(self.c1(x.mean((2, 3), keepdim=True)).relu()).sigmoid()


class _Residuals(nn.Module):
    def __init__(self, units: list[nn.Module]):
        super().__init__()
        self.units = nn.ModuleList(units)

    def forward(self, x):
        for u in self.units:
            x = x + u(x)
        return x


def _bconv_width(c: int, i: int) -> int:
    return max(1, int(c * BCONV_RATIOS[i % 3]))


def build_op(op: str, c: int) -> nn.Module:
    if op == "conv":
        return nn.Sequential(*(_cbr(c, c, 3) for _ in range(4)))
    if op == "mbconv":
        m = MB_EXPAND * c
        return _Residuals([nn.Sequential(_cbr(c, m, 3), _SE(m), _cbr(m, c, 1)) for _ in range(2)])
    if op == "bconv":
        units = []
        for i in range(6):
            b = _bconv_width(c, i)
            units.append(nn.Sequential(_cbr(c, b, 1), _cbr(b, b, 5, groups=b), _cbr(b, c, 1)))
        return _Residuals(units)
    raise ValueError(op)


def op_macs(op: str, c: int, hw: int) -> int:
    px = hw * hw
    if op == "conv":
        return 4 * 9 * c * c * px
    if op == "mbconv":
        m = MB_EXPAND * c
        return 2 * (9 * c * m * px + 2 * m * m + m * c * px)
    return sum((2 * c + 25) * _bconv_width(c, i) * px for i in range(6))


def op_params(op: str, c: int) -> int:
    if op == "conv":
        return 4 * (9 * c * c + 2 * c)
    if op == "mbconv":
        m = MB_EXPAND * c
        return 2 * (9 * c * m + 2 * m + 2 * (m * m + m) + m * c + 2 * c)
    return sum(2 * c * b + 25 * b + 4 * b + 2 * c for b in (_bconv_width(c, i) for i in range(6)))


def op_activation_sizes(op: str, c: int, hw: int, keep: int) -> list[tuple[int, int]]:
    """(input, output) elements of each layer; `keep` elements stay alive throughout."""
    t = hw * hw * c
    if op == "conv":
        return [(t + keep, t)] * 4
    if op == "mbconv":
        m = MB_EXPAND * t
        return [(t + keep, m), (t + m + keep, m), (t + m + keep, t)] * 2
    sizes = []
    for i in range(6):
        b = hw * hw * _bconv_width(c, i)
        sizes += [(t + keep, b), (t + b + keep, b), (t + b + keep, t)]
    return sizes


class BloxCellModule(nn.Module):
    def __init__(self, spec: BloxCellBlock):
        super().__init__()
        self.design = DESIGNS[spec.design]
        self.op1 = build_op(self.design.op1, spec.channels)
        self.op2 = build_op(self.design.op2, spec.channels) if self.design.op2 else None

    def forward(self, x):
        return cell_forward(self.design, self.op1, self.op2, x)


def cell_forward(design: Design, op1: nn.Module, op2: nn.Module | None, x):
    """A block's output from its two operations, wired as its scheme says."""
    n1 = op1(x)
    if design.scheme == "single":
        return n1
    if design.scheme == "par":
        return n1 + op2(x)
    y = op2(n1 + x if design.scheme.startswith("seq-skip") else n1)
    return y + n1 if design.scheme.endswith("res") else y


@dataclass(frozen=True)
class BloxCellBlock:
    """One of the 45 BLOX blocks at `channels` channels (stride 1)."""

    in_hw: int
    channels: int
    design: int
    kind: str = "bloxcell"

    @property
    def cin(self) -> int:
        return self.channels

    @property
    def out_hw(self) -> int:
        return self.in_hw

    def macs(self) -> int:
        return sum(op_macs(o, self.channels, self.in_hw) for o in DESIGNS[self.design].ops)

    def params(self) -> int:
        return sum(op_params(o, self.channels) for o in DESIGNS[self.design].ops)

    def activation_sizes(self) -> list[tuple[int, int]]:
        d, t = DESIGNS[self.design], self.in_hw**2 * self.channels
        if d.scheme == "single":
            return op_activation_sizes(d.op1, self.channels, self.in_hw, 0)
        keep_x = t if d.scheme in ("par", "seq-skip", "seq-skip-res") else 0  # x is read again
        keep_n1 = t if d.scheme in ("par", "seq-res", "seq-skip-res") else 0  # node 1 is added at the end
        return (op_activation_sizes(d.op1, self.channels, self.in_hw, keep_x)
                + op_activation_sizes(d.op2, self.channels, self.in_hw, keep_n1 if d.scheme != "par" else t))

    def build(self) -> nn.Module:
        return BloxCellModule(self)

    def key(self) -> str:
        return block_key(self)


class BloxReduceModule(nn.Module):
    def __init__(self, spec: BloxReduceBlock):
        super().__init__()
        self.conv1 = _cbr(spec.cin, spec.cout, 3, 2)
        self.conv2 = _cbr(spec.cout, spec.cout, 3)
        self.proj = nn.Sequential(nn.Conv2d(spec.cin, spec.cout, 2, 2, bias=False), nn.BatchNorm2d(spec.cout),
                                  nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv2(self.conv1(x)) + self.proj(x)


@dataclass(frozen=True)
class BloxReduceBlock:
    """BLOX's reduction: 3x3/2 conv, 3x3 conv, plus a 2x2/2 conv projection (even input sides)."""

    in_hw: int
    cin: int
    cout: int
    kind: str = "bloxreduce"

    @property
    def out_hw(self) -> int:
        return self.in_hw // 2

    def macs(self) -> int:
        return self.out_hw**2 * self.cout * (9 * self.cin + 9 * self.cout + 4 * self.cin)

    def params(self) -> int:
        return 9 * self.cin * self.cout + 9 * self.cout**2 + 4 * self.cin * self.cout + 6 * self.cout

    def activation_sizes(self) -> list[tuple[int, int]]:
        i, o = self.in_hw**2 * self.cin, self.out_hw**2 * self.cout
        return [(i, o), (i + o, o), (i + o, o)]

    def build(self) -> nn.Module:
        return BloxReduceModule(self)

    def key(self) -> str:
        return block_key(self)


class Blox(SearchSpace):
    """channels: stem width C (stages run at C, 2C, 4C); resolution: input side (even, >= 8)."""

    def __init__(self, name: str = "blox", channels: int = 32, resolution: int = 32, num_classes: int = 100):
        if resolution % 8 or resolution < 8:
            raise ConfigError(f"blox: resolution {resolution} must be a multiple of 8 (three stride-2 reductions)")
        self.name, self.channels, self.resolution, self.num_classes = name, channels, resolution, num_classes
        self.params = (Param("blocks", tuple(range(len(DESIGNS))), 3,
                             "block of each of the 3 stages, an index into the 45 BLOX designs "
                             "(hwnas_deploy.spaces.blox.DESIGNS; names like 'seq-res:conv,mbconv')"),)

    def validate(self, cfg: Mapping | Sequence) -> Config:
        """A config object, with block indices or names, or a BLOX arch vector."""
        if isinstance(cfg, Sequence) and not isinstance(cfg, str):
            return self.from_arch_vec(cfg)
        if isinstance(cfg, Mapping) and isinstance(cfg.get("blocks"), Sequence):
            blocks = [design_index(b) if isinstance(b, str) else b for b in cfg["blocks"]]
            cfg = {**cfg, "blocks": blocks}
        return super().validate(cfg)

    def from_arch_vec(self, vec: Sequence) -> Config:
        if len(vec) != 3:
            raise ConfigError(f"blox: an arch vector has 3 cells, got {len(vec)}")
        return {"blocks": [design_of_cell(cell) for cell in vec]}

    def arch_vec(self, cfg: Mapping) -> list:
        return [cell_of_design(i) for i in self.validate(cfg)["blocks"]]

    def names(self, cfg: Mapping) -> list[str]:
        return [DESIGNS[i].name for i in self.validate(cfg)["blocks"]]

    def unused_genes(self, cfg: Config) -> dict[str, list[int]]:
        return {}

    def input_shape(self, cfg: Mapping) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    def blocks(self, cfg: Mapping) -> list[Block]:
        c, hw = self.channels, self.resolution
        blocks: list = [ConvBlock(hw, 3, c, 3, 1, "relu")]
        for design in self.validate(cfg)["blocks"]:
            reduce = BloxReduceBlock(hw, c, 2 * c)
            blocks += [BloxCellBlock(hw, c, design), reduce]
            hw, c = reduce.out_hw, 2 * c
        return blocks + [HeadBlock(hw, c, 0, self.num_classes, "none")]
