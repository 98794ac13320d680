"""Once-for-All MobileNetV3 space (Cai et al., ICLR 2020) with OFA's own encoding.

``ks``: 20 kernel sizes, ``e``: 20 expand ratios (4 blocks x 5 stages), ``d``: 5 stage depths,
``r``: input resolution. The layout follows OFA's ``OFAMobileNetV3`` so MACs and parameters match
the published search logs (DyNAS-T) exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

from hwnas_deploy.spaces.base import Param
from hwnas_deploy.spaces.blocks import Block, ConvBlock, HeadBlock, MBConvBlock, make_divisible
from hwnas_deploy.spaces.mobilenet import MAX_DEPTH, N_STAGES, StagedMobileNetSpace

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
RESOLUTIONS = tuple(range(128, 225, 4))


class OFAMobileNetV3(StagedMobileNetSpace):
    tolerated_keys = {"wid": None}  # DyNAS-T logs carry 'wid': None

    def __init__(self, width_mult: float, num_classes: int = 1000):
        self.width_mult = width_mult
        self.num_classes = num_classes
        self.name = f"ofa-mbv3-w{width_mult:.1f}"
        n = N_STAGES * MAX_DEPTH
        self.params = (
            Param("ks", (3, 5, 7), n, "kernel size of each of the 20 blocks"),
            Param("e", (3, 4, 6), n, "expand ratio of each of the 20 blocks"),
            Param("d", (2, 3, 4), N_STAGES, "depth of each of the 5 stages"),
            Param("r", RESOLUTIONS, 1, "input resolution 128..224, step 4"),
        )
        self.widths = [make_divisible(w * width_mult) for w in BASE_WIDTHS]

    def blocks(self, cfg: Mapping) -> list[Block]:
        w = self.widths
        stem = ConvBlock(cfg["r"], 3, w[0], 3, 2, "h_swish")
        first = MBConvBlock(stem.out_hw, w[0], w[0], w[1], 3, 1, "relu", 0, w[0] == w[1], 1)
        blocks: list[Block] = [stem, first]
        hw, cin = first.out_hw, w[1]
        for s in range(N_STAGES):
            cout = w[2 + s]
            for i in range(cfg["d"][s]):
                j = s * MAX_DEPTH + i
                e, k = cfg["e"][j], cfg["ks"][j]
                stride = STAGE_STRIDES[s] if i == 0 else 1
                mid = make_divisible(round(cin * e))
                se_mid = make_divisible(mid // 4) if STAGE_SE[s] else 0
                residual = stride == 1 and cin == cout
                b = MBConvBlock(hw, cin, mid, cout, k, stride, STAGE_ACTS[s], se_mid, residual, e)
                blocks.append(b)
                hw, cin = b.out_hw, cout
        final = ConvBlock(hw, cin, w[7], 1, 1, "h_swish")
        head = HeadBlock(final.out_hw, w[7], w[8], self.num_classes, "h_swish")
        return blocks + [final, head]
