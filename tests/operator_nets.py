"""A small torch network that exercises the firmware's operators beyond our spaces' (issue 21,
item 5), for tests/test_mcu.py: it exports to int8 and float32 blobs, must be bit-exact with
LiteRT's reference kernels (int8) and track torch (float32), on the host build and on the board."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: what the TFLite graph of EveryOperator holds that our spaces' networks do not
EVERY_OPERATOR_OPS = {"DEPTHWISE_CONV_2D", "HARD_SWISH", "TANH", "LEAKY_RELU", "CONCATENATION", "LOGISTIC", "MEAN",
                      "SOFTMAX"}


class EveryOperator(nn.Module):
    """An asymmetric explicit pad (right and bottom only) folded into a 3x1 depthwise convolution
    with stride (2, 1) and depth multiplier 2; hard-swish, tanh and leaky ReLU as operators of their
    own (int8: tables taken from LiteRT; the quantiser leaves leaky ReLU in float32 between a
    DEQUANTIZE and a QUANTIZE, one table for the three); a fire module's concatenation (its inputs
    requantised to the output's scale first); a 3x3 depthwise with depth multiplier 2; logistic;
    torch's x.mean((2, 3)) (a TRANSPOSE to NCHW before a MEAN over axes 2, 3); softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.tall = nn.Conv2d(4, 8, (3, 1), stride=(2, 1), groups=4)
        self.expand1 = nn.Conv2d(8, 8, 1)
        self.expand3 = nn.Conv2d(8, 8, 3, padding=1)
        self.wide = nn.Conv2d(16, 32, 3, groups=16, padding=1)
        self.mix = nn.Conv2d(32, 8, 1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        x = F.pad(F.relu(self.stem(x)), (0, 1, 0, 1))
        x = F.hardswish(self.tall(x))
        x = torch.cat([torch.tanh(self.expand1(x)), F.leaky_relu(self.expand3(x), 0.1)], 1)
        x = torch.sigmoid(self.mix(F.relu(self.wide(x))))
        return torch.softmax(self.fc(x.mean((2, 3))), -1)


def every_operator() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return EveryOperator().eval(), torch.randn(1, 3, 16, 16)
