#!/usr/bin/env python
"""TFLite conversion: one long-lived converter process against a fresh process per model.

    .venv/bin/python tools/bench_converter.py --n 8

Converts the same --n LUT blocks of `blox-mini` (a LUT build's workload: small models, many of
them) to TFLite fp32 twice, alternating per block: through the long-lived converter
(`hwnas_deploy.export.tflite._CONVERTER`, as every export now runs) and with the converter
stopped before each block (a fresh process per model, as before: the converter's imports paid
every time). Prints seconds per block for both and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from hwnas_deploy.export import export_model
    from hwnas_deploy.export.tflite import _CONVERTER
    from hwnas_deploy.spaces import get_space
    from hwnas_deploy.spaces.blocks import init_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args(argv)
    space = get_space("blox-mini")
    blocks = [space.blocks({"blocks": [k, k, k]})[1] for k in range(0, 45, max(1, 45 // args.n))][: args.n]
    times: dict[str, list[float]] = {"long-lived": [], "fresh process": []}
    with tempfile.TemporaryDirectory() as tmp:
        warm = torch.nn.Conv2d(1, 1, 1).eval()  # starts the long-lived converter before timing
        export_model(warm, torch.zeros(1, 1, 2, 2), "tflite", Path(tmp) / "warm.tflite", verify=False)
        for i, block in enumerate(blocks):
            torch.manual_seed(i)
            model = block.build().eval()
            init_weights(model)
            x = torch.randn(1, block.cin, block.in_hw, block.in_hw)
            for mode in (("fresh process", "long-lived") if i % 2 else ("long-lived", "fresh process")):
                if mode == "fresh process":
                    _CONVERTER.stop()
                t = time.perf_counter()
                export_model(model, x, "tflite", Path(tmp) / f"b{i}-{mode[0]}.tflite", verify=False)
                times[mode].append(time.perf_counter() - t)
    long, fresh = (sum(times[m]) / len(times[m]) for m in ("long-lived", "fresh process"))
    print(f"{len(blocks)} blocks of blox-mini to TFLite fp32: long-lived converter {long:.2f} s/block, "
          f"fresh process per block {fresh:.2f} s/block; ratio (fresh / long-lived) {fresh / long:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
