"""``nb201``: the NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

One cell design, repeated: a DAG of 4 nodes whose 6 edges (node j <- node i, i < j) each carry
one of 5 operations; 5^6 = 15,625 cells. The macro skeleton is NAS-Bench-201's CIFAR network:
a 3x3 stem conv + BN, three stages of `cells_per_stage` cells at C, 2C, 4C channels joined by
ResNet basic blocks of stride 2, then BN + ReLU, global pooling and a linear classifier.

A config is ``{"ops": [six op indices into OPS]}`` in NAS-Bench-201's edge order
(1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2); `arch_str` / `from_arch_str` convert to and from the
benchmark's architecture strings, ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``.
Edges that cannot change the cell's output (into a node that never reaches node 3, or out of a
node that only ever receives zeros) are unused genes: the canonical config sets them to
``none``, so such cells share one hash (the architecture string of a config is kept as written;
only identity and the built network use the canonical form).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces.base import Config, Param, SearchSpace
from hwnas_deploy.spaces.blocks import Block, ConvBlock, block_key

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (to, from) of each edge, in the order of the genes and of the architecture string
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
#: kernel taps of the conv operations (op index -> k*k); the other operations have no weights
_CONV_TAPS = {OPS.index("nor_conv_1x1"): 1, OPS.index("nor_conv_3x3"): 9}
_NODE = re.compile(r"^\|(?:[a-z_0-9]+~\d+\|)+$")


def arch_str(ops: Sequence[int]) -> str:
    """The NAS-Bench-201 architecture string of six op indices."""
    nodes = []
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{OPS[ops[e]]}~{i}" for e, (to, i) in enumerate(EDGES) if to == j) + "|")
    return "+".join(nodes)


def parse_arch_str(text: str) -> list[int]:
    """Six op indices from a NAS-Bench-201 architecture string; ConfigError says what is wrong."""
    if not isinstance(text, str):
        raise ConfigError(f"nb201: an architecture string must be text, got {type(text).__name__}")
    parts = text.strip().split("+")
    if len(parts) != 3:
        raise ConfigError(f"nb201: {text!r} has {len(parts)} node groups joined by '+'; a cell has 3 "
                          "(nodes 1, 2 and 3)")
    ops: list[int] = []
    for j, part in enumerate(parts, 1):
        if not _NODE.match(part):
            raise ConfigError(f"nb201: node {j} group {part!r} is not of the form |op~i|op~i|...|")
        edges = part.strip("|").split("|")
        if len(edges) != j:
            raise ConfigError(f"nb201: node {j} takes {j} input edge(s), {part!r} has {len(edges)}")
        for i, edge in enumerate(edges):
            name, _, src = edge.partition("~")
            if name not in OPS:
                raise ConfigError(f"nb201: node {j} edge {edge!r}: unknown operation {name!r}; operations: "
                                  f"{', '.join(OPS)}")
            if int(src) != i:
                raise ConfigError(f"nb201: node {j} edge {edge!r}: input {i} expected at this position, got {src}")
            ops.append(OPS.index(name))
    return ops


def used_edges(ops: Sequence[int]) -> list[bool]:
    """Which edges change the cell's output. A node is zero when none of its input edges carries
    anything (every one ``none`` or from a zero node; NAS-Bench-201's own `to_unique_str(consider_zero=True)`
    treats any operation on a zero node as zero); an edge is used when it is not ``none``, leaves
    a non-zero node and reaches node 3 through used edges."""
    nonzero = {0}
    for j in (1, 2, 3):
        if any(to == j and ops[e] != 0 and i in nonzero for e, (to, i) in enumerate(EDGES)):
            nonzero.add(j)
    carries = [ops[e] != 0 and i in nonzero for e, (_, i) in enumerate(EDGES)]
    live = {3}
    for j in (2, 1):
        if any(carries[e] and i == j and to in live for e, (to, i) in enumerate(EDGES)):
            live.add(j)
    return [carries[e] and to in live for e, (to, _) in enumerate(EDGES)]


# -- blocks ---------------------------------------------------------------------------------
def _relu_conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout))


def _edge_module(op: str, c: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return _relu_conv_bn(c, c, 1, 1)
    if op == "nor_conv_3x3":
        return _relu_conv_bn(c, c, 3, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise ValueError(op)


class CellModule(nn.Module):
    """Node j = sum of op(node i) over its edges that are not ``none``; a node without any is zero."""

    def __init__(self, spec: CellBlock):
        super().__init__()
        ops = spec.op_indices
        self.inputs: list[list[tuple[int, str]]] = [[] for _ in range(4)]
        self.edges = nn.ModuleDict()
        for e, (to, i) in enumerate(EDGES):
            if ops[e] != 0:
                name = f"e{i}{to}"
                self.edges[name] = _edge_module(OPS[ops[e]], spec.channels)
                self.inputs[to].append((i, name))

    def forward(self, x):
        nodes = [x]
        for j in (1, 2, 3):
            terms = [self.edges[name](nodes[i]) for i, name in self.inputs[j]]
            value = terms[0] if terms else torch.zeros_like(x)
            for t in terms[1:]:
                value = value + t
            nodes.append(value)
        return nodes[3]


@dataclass(frozen=True)
class CellBlock:
    """One NAS-Bench-201 cell at `channels` channels (stride 1); `ops` the six op indices as digits."""

    in_hw: int
    channels: int
    ops: str
    kind: str = "nb201cell"

    @property
    def cin(self) -> int:
        return self.channels

    @property
    def op_indices(self) -> list[int]:
        return [int(c) for c in self.ops]

    @property
    def out_hw(self) -> int:
        return self.in_hw

    def macs(self) -> int:
        return sum(_CONV_TAPS.get(o, 0) for o in self.op_indices) * self.in_hw**2 * self.channels**2

    def params(self) -> int:
        return sum(_CONV_TAPS[o] * self.channels**2 + 2 * self.channels for o in self.op_indices if o in _CONV_TAPS)

    def activation_sizes(self) -> list[tuple[int, int]]:
        """Computing node j keeps nodes 0..j-1 alive."""
        t = self.in_hw**2 * self.channels
        return [(j * t, t) for j in (1, 2, 3)]

    def build(self) -> nn.Module:
        return CellModule(self)

    def key(self) -> str:
        return block_key(self)


class ResReduceModule(nn.Module):
    def __init__(self, spec: ResReduceBlock):
        super().__init__()
        self.conv_a = _relu_conv_bn(spec.cin, spec.cout, 3, 2)
        self.conv_b = _relu_conv_bn(spec.cout, spec.cout, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(spec.cin, spec.cout, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


@dataclass(frozen=True)
class ResReduceBlock:
    """NAS-Bench-201's reduction: a ResNet basic block of stride 2 (avg-pool + 1x1 shortcut)."""

    in_hw: int
    cin: int
    cout: int
    kind: str = "nb201reduce"

    @property
    def out_hw(self) -> int:
        return self.in_hw // 2

    def macs(self) -> int:
        o = self.out_hw**2
        return o * self.cout * (9 * self.cin + 9 * self.cout + self.cin)

    def params(self) -> int:
        return 9 * self.cin * self.cout + 9 * self.cout**2 + self.cin * self.cout + 4 * self.cout

    def activation_sizes(self) -> list[tuple[int, int]]:
        i, o = self.in_hw**2 * self.cin, self.out_hw**2 * self.cout
        return [(i, o), (i + o, o), (i + o, o)]

    def build(self) -> nn.Module:
        return ResReduceModule(self)

    def key(self) -> str:
        return block_key(self)


class _BnReluPoolLinear(nn.Module):
    def __init__(self, spec: NB201HeadBlock):
        super().__init__()
        self.bn = nn.BatchNorm2d(spec.cin)
        self.fc = nn.Linear(spec.cin, spec.classes)

    def forward(self, x):
        if self.training:
            x = self.bn(x)
        else:  # the same affine map as a 1x1 depthwise conv: exporters fold nothing into a BN after a sum
            bn = self.bn
            w = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            x = nn.functional.conv2d(x, w.view(-1, 1, 1, 1), bn.bias - bn.running_mean * w, groups=w.numel())
        return self.fc(torch.relu(x).mean((2, 3), keepdim=True).flatten(1))


@dataclass(frozen=True)
class NB201HeadBlock:
    """BN + ReLU, global average pool, linear classifier."""

    in_hw: int
    cin: int
    classes: int
    kind: str = "nb201head"

    out_hw = 1

    def macs(self) -> int:
        return self.cin * self.classes

    def params(self) -> int:
        return 2 * self.cin + self.cin * self.classes + self.classes

    def activation_sizes(self) -> list[tuple[int, int]]:
        return [(self.in_hw**2 * self.cin, self.cin + self.classes)]

    def build(self) -> nn.Module:
        return _BnReluPoolLinear(self)

    def key(self) -> str:
        return block_key(self)


# -- the space ------------------------------------------------------------------------------
class NASBench201(SearchSpace):
    """channels: C of the first stage (16 in NAS-Bench-201); cells_per_stage: N (5);
    resolution: input side (32, CIFAR)."""

    name = "nb201"

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, resolution: int = 32, num_classes: int = 10):
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.resolution, self.num_classes = resolution, num_classes
        self.params = (Param("ops", tuple(range(len(OPS))), len(EDGES),
                             "operation of each cell edge (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2): "
                             + ", ".join(f"{i}={op}" for i, op in enumerate(OPS))),)

    def validate(self, cfg: Mapping | str) -> Config:
        """A config object, or a NAS-Bench-201 architecture string."""
        if isinstance(cfg, str):
            return {"ops": parse_arch_str(cfg)}
        return super().validate(cfg)

    def arch_str(self, cfg: Mapping | str) -> str:
        return arch_str(self.validate(cfg)["ops"])

    def from_arch_str(self, text: str) -> Config:
        return {"ops": parse_arch_str(text)}

    def unused_genes(self, cfg: Config) -> dict[str, list[int]]:
        unused = [e for e, used in enumerate(used_edges(cfg["ops"])) if not used and cfg["ops"][e] != 0]
        return {"ops": unused} if unused else {}

    def input_shape(self, cfg: Mapping) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    def blocks(self, cfg: Mapping) -> list[Block]:
        ops = "".join(str(o) for o in self.canonical(cfg)["ops"])
        c, hw = self.channels, self.resolution
        blocks: list = [ConvBlock(hw, 3, c, 3, 1, "none")]
        for stage in range(3):
            if stage:
                reduce = ResReduceBlock(hw, c, 2 * c)
                blocks.append(reduce)
                hw, c = reduce.out_hw, 2 * c
            blocks += [CellBlock(hw, c, ops) for _ in range(self.cells_per_stage)]
        return blocks + [NB201HeadBlock(hw, c, self.num_classes)]
