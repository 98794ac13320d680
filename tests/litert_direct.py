"""Runs in the LiteRT converter environment (.venv-litert), not through hwnas: a full-integer int8
TFLite model made the way a user's own pipeline makes one (channels-last input, as TensorFlow
models take it; the quantizer's int8 recipe), for tests/test_models.py.

    .venv-litert/bin/python tests/litert_direct.py OUT.tflite
"""

import os
import sys

import litert_torch
import numpy as np
import torch
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import quantizer, recipe
from torch import nn


def main(out: str) -> None:
    torch.manual_seed(7)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4), nn.Softmax(-1),
    ).eval()
    nhwc = litert_torch.to_channel_last_io(net, args=[0])
    fp32 = out + ".fp32.tflite"
    litert_torch.convert(nhwc, (torch.randn(1, 24, 24, 3),)).export(fp32)
    key = next(iter(Interpreter(model_path=fp32).get_signature_list()))
    name = Interpreter(model_path=fp32).get_signature_list()[key]["inputs"][0]
    rng = np.random.default_rng(3)
    samples = [{name: rng.uniform(-1, 1, (1, 24, 24, 3)).astype(np.float32)} for _ in range(8)]
    q = quantizer.Quantizer(fp32, recipe.static_wi8_ai8())
    q.quantize(q.calibrate({key: samples})).export_model(out, overwrite=True)
    os.unlink(fp32)


if __name__ == "__main__":
    main(sys.argv[1])
