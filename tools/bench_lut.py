#!/usr/bin/env python
"""A whole latency LUT on the Cortex-M7 twin: every distinct block of `mcu-mbnet` at one
resolution and width, built cold, against the path every block took before (same run).

    .venv/bin/python tools/bench_lut.py [--r 128] [--w 0.5] [--peer 8]

"now": `hwnas lut build --every-block r=R,w=W` as a user runs it on qemu-m7 (generated weights,
the next block exported while one is measured, the space's drift sentinel as the device's profile
sets it), with an empty conversion cache and a fresh artifacts folder: every block converted.
"before": --peer of the same blocks (every n-th) with real weights uploaded, no conversion cache
and no pipelining (one QEMU twin of its own); its seconds per block, times the number of blocks,
is what the whole LUT would have taken. Issue 22's target: the whole LUT in <= 20 min on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from hwnas_deploy.measurement import InProcess, Measurer
from hwnas_deploy.predictors.lut import block_networks, build_lut
from hwnas_deploy.spaces import get_space

TARGET_MIN = 20.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--r", type=int, default=128, help="input resolution")
    ap.add_argument("--w", type=float, default=0.5, help="width multiplier")
    ap.add_argument("--peer", type=int, default=8, help="blocks measured the old way")
    args = ap.parse_args()

    sp = get_space("mcu-mbnet")
    configs = sp.covering_configs({"r": args.r, "w": args.w})
    blocks = block_networks(sp.name, configs)
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-lut-") as tmp:
        os.environ["HWNAS_CACHE_DIR"] = str(Path(tmp) / "cache")  # cold: every block converted
        start = time.perf_counter()
        lut = build_lut("qemu-m7", sp.name, "firmware", configs, Path(tmp) / "lut.json", progress=False)
        now_s = time.perf_counter() - start
        if len(lut.entries) != len(blocks):
            sys.exit(f"the LUT holds {len(lut.entries)} of {len(blocks)} blocks")

        os.environ["HWNAS_CACHE_DIR"] = "off"
        step = max(1, len(blocks) // args.peer)  # spread over the network: later blocks carry more weights
        sampled = list(blocks.items())[::step][:args.peer]
        peer = [net for _, net in sampled]
        with Measurer("qemu-m7", None, executor=InProcess(pipeline=False), artifacts_dir=Path(tmp) / "before",
                      progress=False) as m:
            start = time.perf_counter()
            report = m.measure(peer, "firmware", weights="real")
            before_s = (time.perf_counter() - start) / len(peer)
        if report.failed or report.unfit:
            sys.exit(f"before: {report.failed or report.unfit}")
        same = [abs(report.results[n.config_hash].median_ms - lut.entries[k]) / lut.entries[k]
                for k, n in sampled]

    n = len(blocks)
    print(f"mcu-mbnet r={args.r} w={args.w}: {n} distinct blocks on qemu-m7 (one QEMU twin), {os.cpu_count()} cores")
    print("| path | s/block | whole LUT, min | target |")
    print("|---|---:|---:|---|")
    print(f"| before (real weights, no cache, not pipelined; {len(peer)} blocks) | {before_s:.1f} | "
          f"{before_s * n / 60:.1f} (projected) | |")
    print(f"| now (`hwnas lut build --every-block`, cold) | {now_s / n:.1f} | {now_s / 60:.1f} | "
          f"<= {TARGET_MIN:.0f} min: {'met' if now_s / 60 <= TARGET_MIN else 'NOT met'} |")
    print(f"speed-up {before_s * n / now_s:.1f}x; the {len(peer)} blocks both paths measured: latency |diff| "
          f"max {max(same):.3%}")


if __name__ == "__main__":
    main()
