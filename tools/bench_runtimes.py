#!/usr/bin/env python
"""Median latency of the same sub-networks under onnxruntime, LiteRT (fp32, int8) and TVM on
this machine, side by side, plus export time per format.

    .venv/bin/python tools/bench_runtimes.py --space ofa-mbv3-w1.0 --n 10 --threads 1

Prints a Markdown table (one row per sub-network), the geometric-mean ratio of each runtime to
onnxruntime measured in the same run, the Kendall tau of MACs vs latency per runtime, and the
mean export time per format. Every measurement also goes into the store given by --db.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time

import numpy as np
from scipy.stats import kendalltau

from hwnas_deploy.devices import load_profile
from hwnas_deploy.measurement import Measurer, SubNetwork
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store

PEER = "onnxruntime"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runtimes", default="onnxruntime,tflite,tflite-int8,tvm")
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--db", default=":memory:")
    args = ap.parse_args(argv)

    runtimes = args.runtimes.split(",")
    if PEER not in runtimes:
        runtimes.insert(0, PEER)
    sp = get_space(args.space)
    prof = load_profile(args.device)
    configs = sp.sample_unique(args.n, args.seed)
    latency = {r: [] for r in runtimes}
    export_s = {r: [] for r in runtimes}
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp, Store(args.db) as store, \
            Measurer(prof, store, artifacts_dir=tmp, progress=False) as measurer:
        for i, cfg in enumerate(configs):
            net = SubNetwork(sp, cfg)
            for r in runtimes:
                result = measurer.measure([net], r, threads=args.threads, batch=1, force=True).results[net.config_hash]
                if result.status != "measured":
                    raise SystemExit(f"{net.config_hash} on {r}: {result.reason}")
                export_s[r].append(result.artifact.export_seconds)
                latency[r].append(result.median_ms)
            done = ", ".join(f"{r} {latency[r][-1]:.2f}" for r in runtimes)
            print(f"[{i + 1}/{len(configs)}] {net.config_hash}: {done} ms", file=sys.stderr, flush=True)
        env = measurer.executor.facts

    macs = [sp.macs(c) / 1e6 for c in configs]
    print(f"\n{args.space}, {args.n} sub-networks (seed {args.seed}), {args.threads} thread(s), batch 1, "
          f"{env['cpu']} ({platform.machine()}), median latency in ms")
    print(f"onnxruntime {env['onnxruntime']}, ai-edge-litert {env['ai-edge-litert']}, "
          f"apache-tvm {env['apache-tvm']}; {time.time() - t_start:.0f} s in all\n")
    print("| sub-network | MMACs | " + " | ".join(runtimes) + " |")
    print("|---|---:|" + "---:|" * len(runtimes))
    for i, cfg in enumerate(configs):
        cells = " | ".join(f"{latency[r][i]:.2f}" for r in runtimes)
        print(f"| {sp.config_hash(cfg)} | {macs[i]:.0f} | {cells} |")
    print("\n| runtime | geo-mean ratio to onnxruntime | Kendall tau (MACs vs latency) | mean export s |")
    print("|---|---:|---:|---:|")
    peer = np.asarray(latency[PEER])
    for r in runtimes:
        ratio = float(np.exp(np.mean(np.log(np.asarray(latency[r]) / peer))))
        tau = kendalltau(macs, latency[r]).statistic
        print(f"| {r} | {ratio:.2f} | {tau:.2f} | {np.mean(export_s[r]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
