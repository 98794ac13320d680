#!/usr/bin/env python
"""Search efficiency: hypervolume against the number of validations, per tactic.

    .venv/bin/python tools/bench_tactics.py --seeds 5 [--png runs/bench_tactics.png]

A ground truth no search sees whole (as NAS-Bench-301 does with surrogates): top-1 accuracy of
OFA MobileNetV3 w1.0 sub-networks from an SVR fitted on *all* of DyNAS-T's real ImageNet
accuracies (../shared/data/dynast_ofa_mbv3; the surrogate is the estimator with the lowest
held-out error on that data: RMSE 0.088 against GBT 0.094, RF 0.116, ridge 0.161 with 1,600
training rows; `--truth gbt` swaps in the GBT surrogate, to see what depends on the surrogate's
model family), and latency on this machine from the
kernel-level predictor fitted on the measured store and LUT of BENCHMARKS.md's latency section
(`runs/pred`, built by tools/bench_predictors.py when missing). A *validation* is one network looked up in the ground truth (both objectives: it
stands for training/evaluating and measuring it); every tactic is charged for each one.

The reference front is the non-dominated union of a long NSGA-II run on the ground truth
(population 100, 300 generations) and every front found below; each front is scored by its
hypervolume as a share of the reference front's, in two normalisations: `front box` (the
reference front's ideal 0 and nadir 1, reference point 1.1: strict, it sees 0.1 % of accuracy)
and `space box` (ideal as before, nadir the worst accuracy and latency of 1,000 random networks,
reference point 1.1: the whole space's range, as papers usually draw it). Tactics, each
`--seeds` times:

- random: random networks (the peer every ratio is against);
- validated: NSGA-II (population 50) with every evaluation a validation;
- full: `budget - population` validations (random, plus the smallest and largest network) train
  Gaussian-process (accuracy) and `costs` (latency: a plane through MACs and output elements) predictors,
  NSGA-II (population 100) runs on them for 100 generations, 20 % of the budget is validated
  spread along its front; one run per budget;
- concurrent: batches of `--batch` (10) validated (the first random plus both extremes), the same
  predictors refitted on all validations, a 50-generation NSGA-II (population 100, started from
  the validated front) on them, the candidates with the largest predicted hypervolume gain
  validated next, up to 500.
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
from hwnas_deploy.search import Objective, pareto_front, search
from hwnas_deploy.search.tactics import concurrent, full
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store

SPACE = "ofa-mbv3-w1.0"
REPO = Path(__file__).resolve().parent.parent
ESTIMATORS = {"accuracy": "gp", "latency": "costs"}


class Ledger:
    """The ground truth, recording every network it is asked about, in order (the validations)."""

    def __init__(self, space, accuracy, latency):
        self.space, self.acc, self.lat = space, accuracy, latency
        self.rows: list[dict] = []

    def objectives(self, measured: bool) -> list[Objective]:
        def accuracy(configs):
            return self.acc.predict(configs)

        def latency(configs):
            values = self.lat.predict(configs)
            acc = self.acc.predict(configs)
            self.rows += [{"config": c, "accuracy": float(a), "latency": float(v)}
                          for c, a, v in zip(configs, acc, values, strict=True)]
            return values

        return [Objective("accuracy", True, accuracy, "ground truth", measured),
                Objective("latency", False, latency, "ground truth", measured)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", default="50,100,250,500")
    ap.add_argument("--tactics", default="random,validated,full,concurrent")
    ap.add_argument("--db", default=None, help="[runs/pred/lat.sqlite, built by tools/bench_predictors.py if missing]")
    ap.add_argument("--lut", default=None, help="[runs/pred/lut.json, likewise]")
    ap.add_argument("--dynast", default=str(REPO.parent / "shared/data/dynast_ofa_mbv3"))
    ap.add_argument("--truth", default="svr", choices=["svr", "gbt"], help="the accuracy surrogate's estimator")
    ap.add_argument("--batch", type=int, default=10, help="concurrent: networks validated per iteration")
    ap.add_argument("--estimator", default=ESTIMATORS["accuracy"], help="full / concurrent: the accuracy predictor")
    ap.add_argument("--png", default=None, help="hypervolume share against validations, one line per tactic")
    args = ap.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    top = max(budgets)
    estimators = {**ESTIMATORS, "accuracy": args.estimator}
    t_start = time.perf_counter()

    sp = get_space(SPACE)
    acc_data = from_csv(args.dynast, SPACE, "Top-1 Acc (%)")
    acc = Predictor(args.truth).fit(acc_data.configs, acc_data.y, SPACE, "accuracy")
    if args.db is None or args.lut is None:
        db, lut = bench_predictors.build(bench_predictors.OUT, 750, 5)
        args.db, args.lut = args.db or str(db), args.lut or str(lut)
    with Store(args.db) as store:
        lat_data = from_store(store, "local-cpu", SPACE, "onnxruntime")
    lat = Predictor("kernels", lut=LatencyLUT.load(args.lut)).fit(lat_data.configs, lat_data.y, SPACE)

    def ledger() -> Ledger:
        return Ledger(sp, acc, lat)

    t0 = time.perf_counter()
    long = ledger()
    long_run = search(sp, long.objectives(False), (), "nsga2", 100, 300, seed=0, progress=False)
    print(f"reference: NSGA-II 100 x 300 on the ground truth, {long_run.evaluations} evaluations, "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    # per tactic: per seed, the hypervolume is read at each budget from the ordered validations
    runs: dict[str, list[dict[int, list[dict]]]] = {}
    timing: dict[str, float] = {}
    for tactic in args.tactics.split(","):
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            by_budget: dict[int, list[dict]] = {}
            if tactic == "random":
                led = ledger()
                led.objectives(True)[1].evaluate(sp.sample_unique(top, seed))
                by_budget = {b: led.rows[:b] for b in budgets}
            elif tactic == "validated":
                led = ledger()
                search(sp, led.objectives(True), (), "nsga2", 50, top // 50 + 2, seed=seed, progress=False)
                by_budget = {b: led.rows[:b] for b in budgets}
            elif tactic in ("concurrent", "concurrent-ei"):
                led = ledger()
                concurrent(sp, led.objectives(True), (), top, args.batch, 50, estimators, seed=seed, progress=False,
                           inner_pop=100, expected_gain=tactic == "concurrent-ei")
                by_budget = {b: led.rows[:b] for b in budgets}
            elif tactic == "full":
                for b in budgets:
                    led = ledger()
                    full(sp, led.objectives(True), (), b, max(4, b // 5), 100, estimators, seed=seed, progress=False,
                         inner_pop=100)
                    by_budget[b] = led.rows
            else:
                raise SystemExit(f"unknown tactic {tactic!r}")
            runs.setdefault(tactic, []).append(by_budget)
            print(f"{tactic} seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        timing[tactic] = (time.perf_counter() - t0) / args.seeds

    objectives = ledger().objectives(False)

    def front(rows):
        return pareto_front(rows, objectives)

    def f(rows):
        return np.asarray([[-r["accuracy"], r["latency"]] for r in rows])

    every = [r for rs in runs.values() for run in rs for rows in run.values() for r in front(rows)]
    reference = front(long_run.front + every)
    ref = f(reference)
    space_led = ledger()
    space_led.objectives(True)[1].evaluate(sp.sample_unique(1000, 12345))
    boxes = {"front box": (ref.min(0), ref.max(0)), "space box": (ref.min(0), f(space_led.rows).max(0))}
    hv = HV(ref_point=np.full(2, 1.1))

    def share(rows, box) -> float:
        lo, hi = box
        fr = front(rows)
        return float(hv((f(fr) - lo) / (hi - lo))) / float(hv((ref - lo) / (hi - lo))) if fr else 0.0

    tables = {name: {t: {b: [share(run[b], box) for run in rs] for b in budgets} for t, rs in runs.items()}
              for name, box in boxes.items()}
    print(f"\n{SPACE}: accuracy ({args.truth} on all {len(acc_data)} DyNAS-T networks; predicted by "
          f"{args.estimator}, concurrent batches of {args.batch}) vs latency on local-cpu (kernel-level "
          f"predictor on {len(lat_data)} measured networks + the LUT); reference front of {len(reference)} networks "
          f"(the long NSGA-II run alone: {100 * share(long_run.front, boxes['front box']):.1f} % of its front-box "
          f"hypervolume); {args.seeds} seeds; {time.perf_counter() - t_start:.0f} s in all")
    for name, table in tables.items():
        peer = table.get("random")
        print(f"\n{name}:\n")
        print("| tactic | " + " | ".join(f"{b} validations" for b in budgets) + " | seconds per run |")
        print("|---|" + "---:|" * len(budgets) + "---:|")
        for t, row in table.items():
            cells = []
            for b in budgets:
                cell = f"{100 * np.mean(row[b]):.1f} +- {100 * np.std(row[b]):.1f} %"
                if peer and t != "random":
                    cell += f" ({np.mean(row[b]) / np.mean(peer[b]):.2f}x)"
                cells.append(cell)
            print(f"| {t} | " + " | ".join(cells) + f" | {timing[t]:.0f} |")
    table = tables["front box"]
    if args.png:
        from hwnas_deploy.report.figures import new_figure, save_figure

        fig, ax = new_figure(figsize=(6.5, 4.2))
        for t, row in table.items():
            m = np.asarray([100 * np.mean(row[b]) for b in budgets])
            s = np.asarray([100 * np.std(row[b]) for b in budgets])
            ax.errorbar(budgets, m, yerr=s, marker="o", ms=4, capsize=3, label=t)
        ax.axhline(97, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_formatter("")
        ax.set_xlabel("validations (networks measured)")
        ax.set_ylabel("% of the reference hypervolume (front box)")
        ax.legend()
        print(f"\nplot: {save_figure(fig, args.png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
