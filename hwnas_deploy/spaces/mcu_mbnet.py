"""``mcu-mbnet``: a MobileNetV2-style elastic space sized for Cortex-M7 boards (MCUNet-like).

Elastic: width multiplier ``w``, input resolution ``r``, per-stage depth ``d``, per-block expand
ratio ``e`` and kernel size ``ks``. ReLU6 and no squeeze-and-excitation, as MCU kernels prefer.
The smallest sub-networks fit a 320 KB SRAM / 1 MB flash board in int8; the largest do not.
"""

from __future__ import annotations

from collections.abc import Mapping

from hwnas_deploy.spaces.base import Param
from hwnas_deploy.spaces.blocks import Block, ConvBlock, HeadBlock, MBConvBlock, make_divisible
from hwnas_deploy.spaces.mobilenet import MAX_DEPTH, N_STAGES, StagedMobileNetSpace

STEM, FIRST, HEAD = 32, 16, 1280
STAGE_WIDTHS = (24, 32, 64, 96, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)


class MCUMobileNet(StagedMobileNetSpace):
    name = "mcu-mbnet"

    def __init__(self, num_classes: int = 1000):
        self.num_classes = num_classes
        n = N_STAGES * MAX_DEPTH
        self.params = (
            Param("ks", (3, 5, 7), n, "kernel size of each of the 20 blocks"),
            Param("e", (3, 4, 6), n, "expand ratio of each of the 20 blocks"),
            Param("d", (2, 3, 4), N_STAGES, "depth of each of the 5 stages"),
            Param("w", (0.35, 0.5, 0.75, 1.0), 1, "width multiplier"),
            Param("r", tuple(range(64, 225, 16)), 1, "input resolution 64..224, step 16"),
        )

    def blocks(self, cfg: Mapping) -> list[Block]:
        w = cfg["w"]
        stem_c, first_c = make_divisible(STEM * w), make_divisible(FIRST * w)
        stem = ConvBlock(cfg["r"], 3, stem_c, 3, 2, "relu6")
        first = MBConvBlock(stem.out_hw, stem_c, stem_c, first_c, 3, 1, "relu6", 0, False, 1)
        blocks: list[Block] = [stem, first]
        hw, cin = first.out_hw, first_c
        for s in range(N_STAGES):
            cout = make_divisible(STAGE_WIDTHS[s] * w)
            for i in range(cfg["d"][s]):
                j = s * MAX_DEPTH + i
                stride = STAGE_STRIDES[s] if i == 0 else 1
                mid = make_divisible(round(cin * cfg["e"][j]))
                b = MBConvBlock(
                    hw, cin, mid, cout, cfg["ks"][j], stride, "relu6", 0, stride == 1 and cin == cout, cfg["e"][j]
                )
                blocks.append(b)
                hw, cin = b.out_hw, cout
        head_c = make_divisible(HEAD * w)
        final = ConvBlock(hw, cin, head_c, 1, 1, "relu6")
        return blocks + [final, HeadBlock(hw, head_c, 0, self.num_classes, "none")]
