#!/usr/bin/env python
"""Search algorithms side by side: hypervolume reached for the same number of evaluations.

    .venv/bin/python tools/bench_search.py --pop 50 --generations 30 --seeds 3 [--png runs/bench_search.png]

Objectives (both predictors, so thousands of evaluations take seconds): top-1 accuracy of
OFA MobileNetV3 w1.0 sub-networks from a ridge predictor fitted on 500 rows of DyNAS-T's real
ImageNet accuracies (../shared/data/dynast_ofa_mbv3), and latency on this machine from the
kernel-level predictor (`kernels`) fitted on the store and LUT of BENCHMARKS.md's latency
section (`--db runs/pred/lat.sqlite --lut runs/pred/lut.json`, built by tools/bench_predictors.py
when missing; it predicts blocks the LUT never
measured, which any search meets). Every algorithm runs `--seeds` times with the same population
and generations; all fronts are scored in one normalisation (the bounds of every front found),
and each algorithm's mean hypervolume is printed next to random search's, the peer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bench_predictors
import numpy as np
from pymoo.indicators.hv import HV

from hwnas_deploy.predictors import Predictor, from_csv, from_store
from hwnas_deploy.predictors.lut import LatencyLUT
from hwnas_deploy.search import Objective, search
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store

SPACE = "ofa-mbv3-w1.0"
REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pop", type=int, default=50)
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--algorithms", default="nsga2,agemoea,unsga3,random")
    ap.add_argument("--db", default=None, help="[runs/pred/lat.sqlite, built by tools/bench_predictors.py if missing]")
    ap.add_argument("--lut", default=None, help="[runs/pred/lut.json, likewise]")
    ap.add_argument("--dynast", default=str(REPO.parent / "shared/data/dynast_ofa_mbv3"))
    ap.add_argument("--png", default=None, help="hypervolume against evaluations, one line per algorithm")
    args = ap.parse_args(argv)

    sp = get_space(SPACE)
    acc_data = from_csv(args.dynast, SPACE, "Top-1 Acc (%)")
    idx = np.random.default_rng(0).permutation(len(acc_data))[:500]
    acc = Predictor("ridge").fit([acc_data.configs[i] for i in idx], acc_data.y[idx], SPACE, "accuracy")
    if args.db is None or args.lut is None:
        db, lut = bench_predictors.build(bench_predictors.OUT, 750, 5)
        args.db, args.lut = args.db or str(db), args.lut or str(lut)
    with Store(args.db) as store:
        lat_data = from_store(store, "local-cpu", SPACE, "onnxruntime")
    lat = Predictor("kernels", lut=LatencyLUT.load(args.lut)).fit(lat_data.configs, lat_data.y, SPACE)
    objectives = [Objective("accuracy", True, acc.predict, "ridge on DyNAS-T"),
                  Objective("latency_ms", False, lat.predict, "kernels on local-cpu")]

    runs: dict[str, list] = {}
    for name in args.algorithms.split(","):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = search(sp, objectives, (), name, args.pop, args.generations, seed=seed, progress=False)
            runs.setdefault(name, []).append((r, time.perf_counter() - t0))
            print(f"{name} seed {seed}: {r.evaluations} evaluations, front {len(r.front)}, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    def minimised(front):
        return np.asarray([[-row["accuracy"], row["latency_ms"]] for row in front])

    allf = np.vstack([minimised(r.front) for rs in runs.values() for r, _ in rs])
    lo, span = allf.min(0), np.ptp(allf, 0)
    hv = HV(ref_point=np.full(2, 1.1))
    score = {n: [float(hv((minimised(r.front) - lo) / span)) for r, _ in rs] for n, rs in runs.items()}
    peer = float(np.mean(score["random"])) if "random" in score else None
    print(f"\n{SPACE}: accuracy (ridge on 500 DyNAS-T rows) vs latency on local-cpu (kernel-level predictor on "
          f"{len(lat_data)} measured networks + the LUT), population {args.pop}, {args.generations} generations, "
          f"{args.seeds} seeds\n")
    print("| algorithm | evaluations | front size | hypervolume | vs random | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, rs in runs.items():
        ev = np.mean([r.evaluations for r, _ in rs])
        fs = np.mean([len(r.front) for r, _ in rs])
        h = score[n]
        ratio = f"{np.mean(h) / peer:.3f}x" if peer else "-"
        print(f"| {n} | {ev:.0f} | {fs:.1f} | {np.mean(h):.4f} +- {np.std(h):.4f} | {ratio} | "
              f"{np.mean([t for _, t in rs]):.1f} |")
    if args.png:
        from hwnas_deploy.report.figures import new_figure, save_figure

        fig, ax = new_figure(figsize=(6, 4))
        for n, rs in runs.items():
            r = rs[0][0]
            ax.plot([h["evaluations"] for h in r.history], [h["hypervolume"] for h in r.history], label=n)
        ax.set_xlabel("networks evaluated")
        ax.set_ylabel("hypervolume (each run's own normalisation)")
        ax.legend()
        print(f"plot: {save_figure(fig, args.png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
