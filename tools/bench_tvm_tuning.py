#!/usr/bin/env python
"""Tuned TVM against untuned TVM and onnxruntime on the same sub-networks, in one run, and how
tuning cost amortises over a space.

    .venv/bin/python tools/bench_tvm_tuning.py --space ofa-mbv3-w1.0 --n 10 --tune 10 --trials 64
    .venv/bin/python tools/bench_tvm_tuning.py --n 30 --resolution 224 --workloads-only

1. Workloads: the distinct meta-schedule tasks of the first j of the n networks, j = 1..n,
   against the j networks' task count (what tuning per workload saves over tuning per network).
2. Tuning: the workloads of the first `--tune` networks, `--trials` trials each, on this CPU
   (`hwnas_deploy.tuning.tune_networks`, local-cpu profile, its thread count); time and trials.
3. Measurement of every network through the measurement layer (local-cpu, 1 thread, batch 1):
   onnxruntime (the peer), TVM untuned, TVM built from the database; networks outside the tuned
   sample compile from the records of the workloads they share (their share is printed).

Prints Markdown tables; geo-mean latency ratios to onnxruntime measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas_deploy.devices import load_profile
from hwnas_deploy.export.tvm_tuning import Tuning, TuningDatabase, distinct
from hwnas_deploy.measurement import Measurer, SubNetwork
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store
from hwnas_deploy.tuning import network_workloads, tune_networks


def geo(ratios: list[float]) -> float:
    return float(np.exp(np.mean(np.log(ratios)))) if ratios else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="ofa-mbv3-w1.0")
    ap.add_argument("--n", type=int, default=10, help="networks measured")
    ap.add_argument("--tune", type=int, default=10, help="of them, the first this many have their workloads tuned")
    ap.add_argument("--trials", type=int, default=64, help="trials per workload")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--tuning-db", default=None, help="tuning database folder [a temporary one]")
    ap.add_argument("--resolution", type=int, default=None,
                    help="draw every network at this input resolution (the space's gene 'r')")
    ap.add_argument("--workloads-only", action="store_true", help="only table 1 (no tuning, no measurement)")
    args = ap.parse_args(argv)

    sp = get_space(args.space)
    prof = load_profile(args.device)
    configs = sp.sample_unique(args.n, args.seed)
    if args.resolution is not None:
        configs = [sp.canonical({**c, "r": args.resolution}) for c in configs]
    nets = list({n.config_hash: n for n in (SubNetwork(sp, c) for c in configs)}.values())
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-tvm-tuning-") as tmp:
        db_path = Path(args.tuning_db or Path(tmp) / "tuning")
        spec = Tuning(TuningDatabase(db_path, create=True), prof.threads).target("host")

        # 1. workloads of 1..n networks
        groups = [found for _, found in network_workloads(nets, spec, progress=False)]
        at = f" at resolution {args.resolution}" if args.resolution else ""
        print(f"\n{args.space}, {len(nets)} sub-networks{at} (seed {args.seed}); target {spec}\n")
        print("| networks | their tasks | distinct workloads | tuning jobs saved |")
        print("|---:|---:|---:|---:|")
        for j in range(1, len(nets) + 1):
            total = sum(len(g) for g in groups[:j])
            uniq = len(distinct(groups[:j]))
            print(f"| {j} | {total} | {uniq} | {100 * (1 - uniq / total):.0f} % |")
        if args.workloads_only:
            return 0

        # 2. tuning
        run = tune_networks(prof, nets[:args.tune], trials=args.trials, tuning_db=db_path, progress=True)
        rep = run.report
        secs = [w["seconds"] for w in rep.per_workload]
        print(f"\ntuned {rep.tuned} workloads of {args.tune} networks ({rep.already} already tuned) in "
              f"{rep.seconds:.0f} s: {rep.trials} trials, {args.trials} per workload, "
              f"{np.mean(secs) if secs else float('nan'):.1f} s per workload "
              f"({rep.seconds / max(rep.trials, 1):.2f} s per trial)", flush=True)

        # 3. measurement
        lat: dict[str, list[float]] = {"onnxruntime": [], "tvm": [], "tvm-tuned": []}
        share: list[str] = []
        store = Store(":memory:")
        artifacts = Path(tmp) / "artifacts"
        with Measurer(prof, store, artifacts_dir=artifacts, progress=False, tuning="none") as plain, \
                Measurer(prof, store, artifacts_dir=artifacts, progress=False, tuning=db_path) as tuned:
            for i, net in enumerate(nets):
                for name, measurer, runtime in (("onnxruntime", plain, "onnxruntime"), ("tvm", plain, "tvm"),
                                                ("tvm-tuned", tuned, "tvm")):
                    res = measurer.measure([net], runtime, force=True, sentinel_every_s=0).results[net.config_hash]
                    if res.status != "measured":
                        raise SystemExit(f"{net.config_hash} on {name}: {res.reason}")
                    lat[name].append(res.median_ms)
                    if name == "tvm-tuned":
                        used = res.artifact.extra.get("tvm_tuning") or {}
                        share.append(f"{used.get('tuned_workloads', 0)}/{used.get('workloads', '?')}")
                print(f"[{i + 1}/{len(nets)}] {net.config_hash}: " +
                      ", ".join(f"{k} {v[-1]:.2f}" for k, v in lat.items()) + f" ms ({share[-1]} tuned)",
                      file=sys.stderr, flush=True)
            env = plain.executor.facts

    print(f"\n{env.get('cpu')} ({platform.machine()}), {prof.threads} thread(s), batch 1, median latency in ms; "
          f"onnxruntime {env.get('onnxruntime')}, apache-tvm {env.get('apache-tvm')}; "
          f"{time.time() - t_start:.0f} s in all\n")
    print("| sub-network | MMACs | in tuning sample | workloads tuned | onnxruntime | TVM untuned | TVM tuned |")
    print("|---|---:|:---:|---:|---:|---:|---:|")
    for i, net in enumerate(nets):
        print(f"| {net.config_hash} | {net.macs / 1e6:.0f} | {'yes' if i < args.tune else 'no'} | {share[i]} | "
              f"{lat['onnxruntime'][i]:.2f} | {lat['tvm'][i]:.2f} | {lat['tvm-tuned'][i]:.2f} |")
    peer = np.asarray(lat["onnxruntime"])
    print("\n| networks | TVM untuned / onnxruntime | TVM tuned / onnxruntime | tuned speed-up over untuned |")
    print("|---|---:|---:|---:|")
    for label, idx in (("in the tuning sample", range(args.tune)), ("not in it", range(args.tune, len(nets))),
                       ("all", range(len(nets)))):
        idx = list(idx)
        if not idx:
            continue
        untuned = geo([lat["tvm"][i] / peer[i] for i in idx])
        tuned_r = geo([lat["tvm-tuned"][i] / peer[i] for i in idx])
        print(f"| {label} ({len(idx)}) | {untuned:.2f} | {tuned_r:.2f} | {untuned / tuned_r:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
