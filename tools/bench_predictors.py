#!/usr/bin/env python
"""Latency predictors and the LUT on the local CPU, rebuilt from nothing by one command.

    .venv/bin/python tools/bench_predictors.py [--n 750] [--rounds 5] [--out runs/pred]

Runs BENCHMARKS.md's latency section in order, each step a `hwnas` command a user can run, each
resumable (the store and the LUT file are the cache; a killed run goes on where it stopped):

1. `hwnas sample`: `--n` distinct `ofa-mbv3-w1.0` sub-networks (seed 0) into configs.jsonl;
2. `hwnas profile --rounds`: every network measured whole on `local-cpu` with onnxruntime,
   one round over all after the other, into lat.sqlite;
3. `hwnas lut build`: every distinct block of those networks measured alone, into lut.json;
4. `hwnas predictor eval`: every estimator on the same split (and learning curves);
5. `hwnas lut compare`: the LUT's block sums against the measured networks;
6. 4 and 5 again on drift-corrected latencies (`--correct-drift`).

Then the peer no estimator can beat, measured in the same run: the measurement against itself
(one round against another, and the median of the odd rounds against the even ones), as measured
and corrected for drift by the sentinel read once a minute during the run (`measurement.drift`).
`tools/bench_search.py` and `tools/bench_tactics.py` read lat.sqlite and lut.json, and run this
first when they are missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

SPACE, DEVICE, RUNTIME = "ofa-mbv3-w1.0", "local-cpu", "onnxruntime"
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "runs/pred"


def hwnas(*args: str, stdout=None) -> None:
    cmd = [str(Path(sys.executable).parent / "hwnas"), *args]
    print("$ hwnas " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, stdout=stdout)


def build(out: Path, n: int, rounds: int) -> tuple[Path, Path]:
    """The store and LUT the latency section (and the search benchmarks) read; resumable."""
    out.mkdir(parents=True, exist_ok=True)
    configs, db, lut = out / "configs.jsonl", out / "lat.sqlite", out / "lut.json"
    if not configs.exists():
        with open(configs.with_suffix(".tmp"), "w") as fh:
            hwnas("sample", "--space", SPACE, "-n", str(n), "--seed", "0", stdout=fh)
        configs.with_suffix(".tmp").rename(configs)
    hwnas("profile", "--device", DEVICE, "--space", SPACE, "--configs", str(configs), "--runtime", RUNTIME,
          "--db", str(db), "--rounds", str(rounds))
    if not lut.exists():
        hwnas("lut", "build", "--device", DEVICE, "--space", SPACE, "--runtime", RUNTIME, "--configs", str(configs),
              "--out", str(lut))
    return db, lut


def self_agreement(db: Path) -> None:
    """How well the measurement predicts itself: the floor under every estimator's error; as
    measured, and corrected for drift by the sentinel's readings (`--correct-drift`)."""
    from hwnas_deploy.measurement.drift import corrected_ms
    from hwnas_deploy.store import Store

    with Store(str(db)) as store:
        rows = store.measurements(device=DEVICE, space=SPACE, runtime=RUNTIME, threads=1, batch=1,
                                  latest_only=False)
        corrected, n_corrected = corrected_ms(store, rows)
        readings = store.measurements(device=DEVICE, runtime=RUNTIME, threads=1, batch=1, latest_only=False,
                                      sentinels=True)
    readings = [r["median_ms"] for r in readings if r["details"].get("role") == "sentinel"]
    matrices = {"as measured": _rounds(rows, [float(r["median_ms"]) for r in rows])}
    if n_corrected == len(rows):
        matrices["drift-corrected"] = _rounds(rows, corrected)
    else:
        print(f"{len(rows) - n_corrected} of {len(rows)} rounds have no sentinel reading: no drift-corrected rows")
    m = matrices["as measured"]
    if m is None:
        print("one round stored: no self-agreement to report")
        return

    def agree(a, b):
        rel = np.abs(a / b - 1)
        return 100 * np.mean(rel <= 0.05), 100 * np.mean(rel <= 0.10), kendalltau(a, b)[0]

    k = m.shape[1]
    print(f"\nThe measurement against itself ({len(m)} networks, {k} rounds):\n")
    print("| latencies | pair | within 5 % | within 10 % | Kendall tau |\n|---|---|---:|---:|---:|")
    for name, mat in matrices.items():
        for i in range(k - 1):
            w5, w10, tau = agree(mat[:, i + 1], mat[:, i])
            print(f"| {name} | round {i + 2} vs round {i + 1} | {w5:.1f} | {w10:.1f} | {tau:.3f} |")
        if k >= 3:
            odd, even = np.median(mat[:, 0::2], axis=1), np.median(mat[:, 1::2], axis=1)
            w5, w10, tau = agree(odd, even)
            print(f"| {name} | median of rounds 1,3,.. vs of 2,4,.. | {w5:.1f} | {w10:.1f} | {tau:.3f} |")
    for name, mat in matrices.items():
        means = mat.mean(axis=0)
        print(f"\nround means, {name} (ms): {', '.join(f'{x:.3f}' for x in means)} "
              f"(spread {100 * (means.max() / means.min() - 1):.1f} %)")
    if readings:
        print(f"the sentinel's {len(readings)} readings: {min(readings):.3f}-{max(readings):.3f} ms "
              f"(median {np.median(readings):.3f})")


def _rounds(rows: list[dict], values: list[float]) -> np.ndarray | None:
    """networks x rounds, in the order measured (rounds beyond the fewest any network has are left out)."""
    per: dict[str, list[tuple[int, float]]] = {}
    for r, v in zip(rows, values, strict=True):
        per.setdefault(r["config_hash"], []).append((r["id"], v))
    series = [[v for _, v in sorted(vals)] for vals in per.values()]
    k = min(len(s) for s in series)
    return np.asarray([s[:k] for s in series]) if k >= 2 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=750, help="distinct networks measured whole")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--train-size", type=int, default=500)
    ap.add_argument("--test-size", type=int, default=250)
    ap.add_argument("--curve", default="50,100,200,500")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--agreement", type=Path, default=None, metavar="DB",
                    help="only print the measurement's agreement with itself, as measured and drift-corrected, "
                         "for the rounds in this store (e.g. one filled by `hwnas profile --rounds 3 "
                         "--sentinel-every 3`)")
    args = ap.parse_args(argv)
    if args.agreement is not None:
        self_agreement(args.agreement)
        return 0
    t0 = time.perf_counter()
    db, lut = build(args.out, args.n, args.rounds)
    t1 = time.perf_counter()
    hwnas("predictor", "eval", "--space", SPACE, "--db", str(db), "--device", DEVICE, "--runtime", RUNTIME,
          "--estimators", "ridge,svr,gp,gbt,rf,kernels,hybrid,costs,macs", "--lut", str(lut),
          "--train-size", str(args.train_size), "--test-size", str(args.test_size), "--curve", args.curve,
          "--trials", "3", "--report", str(args.out / "report"))
    hwnas("lut", "compare", "--lut", str(lut), "--db", str(db), "--calibrate", "10")
    print("\nThe same, each round corrected for drift by the sentinel's readings:")
    hwnas("predictor", "eval", "--space", SPACE, "--db", str(db), "--device", DEVICE, "--runtime", RUNTIME,
          "--estimators", "ridge,gbt,hybrid,costs,macs", "--lut", str(lut), "--train-size", str(args.train_size),
          "--test-size", str(args.test_size), "--correct-drift")
    hwnas("lut", "compare", "--lut", str(lut), "--db", str(db), "--calibrate", "10", "--correct-drift")
    self_agreement(db)
    print(f"\nmeasuring {t1 - t0:.0f} s, evaluating {time.perf_counter() - t1:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
