"""The reference networks of the four classic tinyML tasks (MLPerf Tiny's, as published), in
torch with random weights and BatchNorm statistics calibrated on random inputs: models of the
kind an embedded engineer brings, for tests and benchmarks.

    hwnas profile --model hwnas_deploy/models/zoo.py:ds_cnn --device qemu-m7 --runtime firmware

Each function returns `(nn.Module, example_input)`, the form `--model module.py:function` takes.

- `ds_cnn`: keyword spotting, DS-CNN (small) on 49 x 10 MFCCs, 12 classes;
- `mobilenet_v1_025`: visual wake words, MobileNetV1 with width 0.25 at 96 x 96 x 3, 2 classes;
- `resnet8`: image classification, the CIFAR-10 ResNet-8 (three stacks, 16/32/64 filters);
- `fc_autoencoder`: anomaly detection, the fully connected autoencoder on 640 values (5 frames
  x 128 mel bins), bottleneck 8.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas_deploy.spaces.blocks import one_compute_thread

SEED = 0


def _calibrated(net: nn.Module, example: torch.Tensor, batches: int = 8) -> tuple[nn.Module, torch.Tensor]:
    """Random weights (seeded), BatchNorm statistics from random inputs, eval mode."""
    gen = torch.Generator().manual_seed(SEED + 1)
    net.train()
    with torch.no_grad(), one_compute_thread():  # the same weights, so the same hash, on every machine
        for _ in range(batches):
            net(torch.randn((16, *example.shape[1:]), generator=gen))
    return net.eval(), example


def _conv_bn(cin: int, cout: int, k, stride=1, padding=0, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def ds_cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(SEED)
    layers = _conv_bn(1, 64, (10, 4), stride=2, padding=(5, 1))  # 49 x 10 -> 25 x 5
    for _ in range(4):
        layers += _conv_bn(64, 64, 3, padding=1, groups=64) + _conv_bn(64, 64, 1)
    net = nn.Sequential(*layers, nn.AvgPool2d((25, 5)), nn.Flatten(), nn.Linear(64, 12))
    return _calibrated(net, torch.randn(1, 1, 49, 10))


def mobilenet_v1_025() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(SEED)
    plan = [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)] + [(128, 128, 1)] * 5 + [
        (128, 256, 2), (256, 256, 1)]
    layers = _conv_bn(3, 8, 3, stride=2, padding=1)
    for cin, cout, stride in plan:
        layers += _conv_bn(cin, cin, 3, stride=stride, padding=1, groups=cin) + _conv_bn(cin, cout, 1)
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 2))
    return _calibrated(net, torch.randn(1, 3, 96, 96))


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride, 1), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet8() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(SEED)
    net = nn.Sequential(*_conv_bn(3, 16, 3, padding=1), _Residual(16, 16, 1), _Residual(16, 32, 2),
                        _Residual(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    return _calibrated(net, torch.randn(1, 3, 32, 32))


def fc_autoencoder() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(SEED)

    def dense(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU()]

    widths = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    layers = [m for a, b in zip(widths, widths[1:], strict=False) for m in dense(a, b)]
    net = nn.Sequential(*layers, nn.Linear(128, 640))
    return _calibrated(net, torch.randn(1, 640))


ZOO = {"ds-cnn": ds_cnn, "mobilenet-v1-0.25": mobilenet_v1_025, "resnet8": resnet8, "fc-autoencoder": fc_autoencoder}
