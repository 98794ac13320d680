#!/usr/bin/env python
"""A new device's latency predictor from 10, 20 or 50 measurements: transfer from every other
setting measured here, leave one setting out.

    .venv/bin/python tools/bench_transfer.py [--n 80] [--out runs/transfer]

Measures the same `mcu-mbnet` sub-networks (drawn to fit qemu-m7's budget, so that every device
can hold them) on every setting the project can measure on one machine (`--settings`: local-cpu
with onnxruntime, LiteRT fp32 and int8 and TVM at 1 and 2 threads, the Android twin, the
Cortex-M7 twin), one `hwnas profile --configs` per setting into one store (resumable). Then each
setting in turn is the new device: k of its networks are "measured" (k = 10, 20, 50; chosen at
random, over `--seeds` draws, or by informative selection among its networks), every other
network of it is the test set, and these are compared on the same rows:

- transfer: `Predictor("transfer")` from every other setting (`--transfer-from all`);
- the same estimators without transfer: gbt and ridge on the k rows alone;
- the MACs line fitted on the k rows.

Kendall tau, MAPE and the share within 5 / 10 %, mean +- std over the random draws; once on the
latencies as measured, once drift-corrected (`--correct-drift`: host settings read a sentinel
every 5 s; the twins' settings have none and are left as they are).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPACE = "mcu-mbnet"
SETTINGS = ("local-cpu/onnxruntime/1", "local-cpu/onnxruntime/2", "local-cpu/tflite/1", "local-cpu/tflite/2",
            "local-cpu/tflite-int8/1", "local-cpu/tflite-int8/2", "local-cpu/tvm/1", "local-cpu/tvm/2",
            "sim-android/tflite/1", "qemu-m7/firmware/1")
ESTIMATORS = ("transfer", "gbt", "ridge", "macs")


def hwnas(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "hwnas"), *args]
    print("$ hwnas " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def measure(out: Path, n: int, settings: list[str]) -> Path:
    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.profiling import sample_fitting
    from hwnas_deploy.spaces import get_space

    out.mkdir(parents=True, exist_ok=True)
    configs, db = out / "configs.jsonl", out / "transfer.sqlite"
    if not configs.exists():
        chosen = sample_fitting(get_space(SPACE), load_profile("qemu-m7"), n, 2026)
        configs.write_text("".join(json.dumps(c) + "\n" for c in chosen))
    for setting in settings:
        device, runtime, threads = setting.split("/")
        hwnas("profile", "--device", device, "--space", SPACE, "--configs", str(configs), "--runtime", runtime,
              "--threads", threads, "--db", str(db), "--quiet")
    return db


def evaluate(db: Path, settings: list[str], ks: list[int], seeds: int, correct_drift: bool = False) -> dict:
    from hwnas_deploy.predictors import Predictor, from_store, metrics
    from hwnas_deploy.predictors.transfer import informative, sources_from_store
    from hwnas_deploy.store import Store

    results: dict = {}
    with Store(str(db)) as store:
        for held in settings:
            device, runtime, threads = held.split("/")
            data = from_store(store, device, SPACE, runtime, int(threads), 1, correct_drift=correct_drift)
            sources = sources_from_store(store, SPACE, (device, runtime, int(threads), 1), "all",
                                         correct_drift=correct_drift)
            for k in ks:
                if k + 5 > len(data):
                    continue
                draws = [("random", np.random.default_rng(s).permutation(len(data))[:k]) for s in range(seeds)]
                picks = informative(SPACE, sources, k, candidates=data.configs)
                index = {json.dumps(c, sort_keys=True): i for i, c in enumerate(data.configs)}
                draws.append(("informative", np.asarray([index[json.dumps(c, sort_keys=True)] for c in picks])))
                for selection, train_idx in draws:
                    test_idx = np.setdiff1d(np.arange(len(data)), train_idx)
                    train, test = data.subset(train_idx), data.subset(test_idx)
                    for est in ESTIMATORS:
                        pred = Predictor(est, sources=sources if est == "transfer" else None)
                        pred.fit(train.configs, train.y, SPACE)
                        m = metrics(test.y, pred.predict(test.configs))
                        results.setdefault((held, k, selection, est), []).append(m)
            print(f"  {held}: {len(data)} networks, {len(sources)} sources", file=sys.stderr, flush=True)
    return results


def report(results: dict, settings: list[str], ks: list[int]) -> None:
    def cell(ms: list[dict], key: str, pct: bool = False) -> str:
        v = np.asarray([m[key] for m in ms])
        return f"{v.mean():.1f}" if pct else f"{v.mean():.3f}+-{v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"

    print("\n| held-out setting | k | selection | estimator | Kendall tau | MAPE % | within 5 % | within 10 % |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for (held, k, selection, est), ms in sorted(results.items()):
        print(f"| {held} | {k} | {selection} | {est} | {cell(ms, 'tau')} | {cell(ms, 'mape', True)} | "
              f"{cell(ms, 'within5', True)} | {cell(ms, 'within10', True)} |")
    print("\nMean over the held-out settings (random selection, mean over draws first):\n")
    print("| k | estimator | Kendall tau | MAPE % | within 10 % | settings where transfer is not best on tau |")
    print("|---:|---|---:|---:|---:|---|")
    for k in ks:
        for est in ESTIMATORS:
            per = [results[(h, k, "random", est)] for h in settings if (h, k, "random", est) in results]
            if not per:
                continue
            tau = np.mean([np.mean([m["tau"] for m in ms]) for ms in per])
            mape = np.mean([np.mean([m["mape"] for m in ms]) for ms in per])
            w10 = np.mean([np.mean([m["within10"] for m in ms]) for ms in per])
            worse = ""
            if est == "transfer":
                worse = ", ".join(h for h in settings if (h, k, "random", est) in results and any(
                    np.mean([m["tau"] for m in results[(h, k, "random", o)]])
                    > np.mean([m["tau"] for m in results[(h, k, "random", est)]]) for o in ESTIMATORS if o != est))
            print(f"| {k} | {est} | {tau:.3f} | {mape:.1f} | {w10:.1f} | {worse} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=80, help="networks measured on every setting")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="DEVICE/RUNTIME/THREADS, comma-separated")
    ap.add_argument("--ks", default="10,20,50")
    ap.add_argument("--seeds", type=int, default=5, help="random draws of the k measured networks")
    ap.add_argument("--out", type=Path, default=Path("runs/transfer"))
    args = ap.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    ks = [int(k) for k in args.ks.split(",")]
    t0 = time.perf_counter()
    db = measure(args.out, args.n, settings)
    t1 = time.perf_counter()
    for correct in (False, True):
        print(f"\n### {'Drift-corrected latencies (--correct-drift)' if correct else 'Latencies as measured'}")
        report(evaluate(db, settings, ks, args.seeds, correct), settings, ks)
    print(f"\nmeasuring {t1 - t0:.0f} s, evaluating {time.perf_counter() - t1:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
