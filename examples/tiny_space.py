"""A search space of your own, outside the package: small image classifiers for 32 x 32 inputs.

    hwnas sample --space examples/tiny_space.py:TinyCNN -n 3
    hwnas search --space examples/tiny_space.py:TinyCNN --objective macs --objective max:params \
        --constraint sram<=65536 --out runs/tiny
    hwnas profile --space examples/tiny_space.py:TinyCNN --samples 3 --device qemu-m7 --runtime firmware

A space is a `SearchSpace` subclass with a `name`, its `params` (each a finite set of choices)
and three methods: `blocks(cfg)` (the network as the package's building blocks: they build the
torch module and count MACs, parameters and activations), `unused_genes(cfg)` and
`input_shape(cfg)`. Installed in a package, a space is found by name through the entry-point
group `hwnas.spaces` (`[project.entry-points."hwnas.spaces"] tiny-cnn = "mypkg.spaces:TinyCNN"`).
"""

from __future__ import annotations

from collections.abc import Mapping

from hwnas_deploy.spaces import Param, SearchSpace
from hwnas_deploy.spaces.blocks import ConvBlock, HeadBlock, MBConvBlock

MAX_BLOCKS = 4


class TinyCNN(SearchSpace):
    name = "tiny-cnn"

    def __init__(self, num_classes: int = 10):
        self.num_classes = num_classes
        self.params = (
            Param("width", (8, 16, 24), 1, "stem channels"),
            Param("depth", (1, 2, 3, 4), 1, "inverted-residual blocks"),
            Param("ks", (3, 5), MAX_BLOCKS, "kernel size of each block"),
            Param("e", (2, 4), MAX_BLOCKS, "expand ratio of each block"),
        )

    def blocks(self, cfg: Mapping) -> list:
        stem = ConvBlock(32, 3, cfg["width"], 3, 2, "relu")
        blocks, hw, cin = [stem], stem.out_hw, cfg["width"]
        for i in range(cfg["depth"]):
            stride = 2 if i % 2 else 1
            cout = cin * stride
            b = MBConvBlock(hw, cin, cin * cfg["e"][i], cout, cfg["ks"][i], stride, "relu", 0,
                            stride == 1, cfg["e"][i])
            blocks.append(b)
            hw, cin = b.out_hw, cout
        return blocks + [HeadBlock(hw, cin, 0, self.num_classes, "none")]

    def unused_genes(self, cfg) -> dict[str, list[int]]:
        unused = list(range(cfg["depth"], MAX_BLOCKS))
        return {"ks": unused, "e": unused}

    def input_shape(self, cfg: Mapping) -> tuple[int, int, int, int]:
        return (1, 3, 32, 32)
