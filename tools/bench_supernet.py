#!/usr/bin/env python
"""Does the supernet rank sub-networks as training them alone would? Sandwich vs Pareto
rank-preserving training, judged by stand-alone ground truth on held-out networks.

    .venv/bin/python tools/bench_supernet.py --out runs/bench-supernet

1. N sub-networks of mcu-mbnet (resolutions up to --max-resolution) are trained stand-alone on
   the default dataset (digits); their test accuracy is the ground truth. Their latency is
   measured on local-cpu (onnxruntime, the 10-class network as deployed).
2. The first --n-reference networks (validation accuracy + latency) are the pareto-rank
   strategy's reference; the others are held out: every figure below is on them.
3. Two supernets with the same seed, data and epochs: `sandwich` and `pareto-rank`.
4. Per strategy: Kendall tau and Spearman rho between the supernet's estimate and the stand-alone
   accuracy, both on the validation and test splits together (719 images: digits is easy, and
   every image counts when networks differ by a few); the true (accuracy, latency) front of the held-out networks
   against the front the estimates pick: the share of true-front networks found, and the
   hypervolume of the picked networks' true values over the true front's.

Every step is cached in --out (stand-alone results, latencies, checkpoints), so a stopped run
resumes. Prints Markdown tables; writes supernet.png (estimate vs truth; the fronts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from hwnas_deploy.measurement import Measurer, SubNetwork
from hwnas_deploy.supernet import load_dataset, space_for
from hwnas_deploy.supernet.objective import SupernetAccuracy
from hwnas_deploy.supernet.standalone import train_standalone
from hwnas_deploy.supernet.train import TrainSettings, resolutions, train_supernet


def _jsonl(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["hash"]: r for r in rows}


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def front_mask(acc: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Non-dominated (maximise accuracy, minimise latency)."""
    keep = np.ones(len(acc), bool)
    for i in range(len(acc)):
        dominated = (acc >= acc[i]) & (lat <= lat[i]) & ((acc > acc[i]) | (lat < lat[i]))
        keep[i] = not dominated.any()
    return keep


def hypervolume(acc: np.ndarray, lat: np.ndarray, ref_acc: float, ref_lat: float) -> float:
    """Area dominated by the points (max accuracy, min latency) above (ref_acc, ref_lat)."""
    pts = sorted(zip(lat, acc, strict=True))
    area, best = 0.0, ref_acc
    edges = [p[0] for p in pts] + [ref_lat]
    for (lat_i, acc_i), nxt in zip(pts, edges[1:], strict=True):
        best = max(best, acc_i)
        area += (best - ref_acc) * max(0.0, nxt - lat_i)
    return area


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--n-reference", type=int, default=12)
    ap.add_argument("--epochs-standalone", type=int, default=6)
    ap.add_argument("--epochs-supernet", type=int, default=8)
    ap.add_argument("--max-resolution", type=int, default=80)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default="runs/bench-supernet")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    data = load_dataset("digits")
    space = space_for("mcu-mbnet", data.num_classes)
    res = resolutions(space, args.max_resolution)
    rng = np.random.default_rng(args.seed)
    configs = []
    for cfg in space.sample_unique(args.n, args.seed):
        configs.append(space.canonical({**cfg, "r": int(rng.choice(res))}))
    hashes = [space.config_hash(c) for c in configs]

    truth_path = out / "standalone.jsonl"
    truth = _jsonl(truth_path)
    for i, (cfg, h) in enumerate(zip(configs, hashes, strict=True)):
        if h not in truth:
            t0 = time.time()
            acc = train_standalone(space.name, cfg, data, epochs=args.epochs_standalone, seed=args.seed)
            truth[h] = {"hash": h, "config": cfg, **acc, "seconds": round(time.time() - t0, 1)}
            _append(truth_path, truth[h])
            print(f"stand-alone {i + 1}/{len(configs)} {h}: val {acc['val']:.3f} test {acc['test']:.3f} "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr)

    lat_path = out / "latency.jsonl"
    lat = _jsonl(lat_path)
    todo = [SubNetwork(space, cfg) for cfg, h in zip(configs, hashes, strict=True) if h not in lat]
    if todo:
        def record(net, summary: dict) -> None:  # one line per network as it is measured: resumable
            lat[net.config_hash] = {"hash": net.config_hash, "ms": summary["median_ms"]}
            _append(lat_path, lat[net.config_hash])

        with Measurer("local-cpu", artifacts_dir=out / "onnx", progress=False) as m:
            report = m.measure(todo, "onnxruntime", threads=1, on_measured=record)
        if report.failed:
            raise SystemExit(f"latency: {report.failed}")

    reference = out / "reference.jsonl"
    reference.write_text("".join(json.dumps({"config": truth[h]["config"], "accuracy": truth[h]["val"],
                                             "cost": lat[h]["ms"]}) + "\n" for h in hashes[:args.n_reference]))
    held = hashes[args.n_reference:]
    n_val, n_test = len(data.y_val), len(data.y_test)

    def union(val, test):
        return (np.asarray(val) * n_val + np.asarray(test) * n_test) / (n_val + n_test)

    true_acc = union([truth[h]["val"] for h in held], [truth[h]["test"] for h in held])
    latency = np.array([lat[h]["ms"] for h in held])
    true_front = front_mask(true_acc, latency)
    ref_acc, ref_lat = float(true_acc.min()), float(latency.max())
    hv_true = hypervolume(true_acc[true_front], latency[true_front], ref_acc, ref_lat)

    results = {}
    for strategy in ("sandwich", "pareto-rank"):
        settings = TrainSettings(epochs=args.epochs_supernet, max_resolution=args.max_resolution, seed=args.seed,
                                 strategy=strategy, reference=str(reference) if strategy == "pareto-rank" else None)
        t0 = time.time()
        train_supernet(settings, out / f"{strategy}.pt", progress=True, data=data)
        held_cfgs = [truth[h]["config"] for h in held]
        estimate = union(SupernetAccuracy(out / f"{strategy}.pt", split="val")(held_cfgs),
                         SupernetAccuracy(out / f"{strategy}.pt", split="test")(held_cfgs)) / 100
        picked = front_mask(estimate, latency)
        found = float((picked & true_front).sum() / true_front.sum())
        hv = hypervolume(true_acc[picked], latency[picked], ref_acc, ref_lat) / hv_true if hv_true > 0 else float("nan")
        results[strategy] = {"tau": kendalltau(estimate, true_acc)[0], "rho": spearmanr(estimate, true_acc)[0],
                             "found": found, "hv": hv, "estimate": estimate, "picked": picked,
                             "seconds": time.time() - t0}

    print(f"{len(held)} held-out sub-networks of {space.name} (of {args.n}; {args.n_reference} reference), digits, "
          f"resolutions {res[0]}-{res[-1]}; stand-alone {args.epochs_standalone} epochs, supernets "
          f"{args.epochs_supernet} epochs; {time.time() - t_start:.0f} s in all\n")
    print(f"stand-alone accuracy (val + test) of the held-out networks: {true_acc.min():.3f}-{true_acc.max():.3f} "
          f"(median {np.median(true_acc):.3f}); true front: {int(true_front.sum())} networks\n")
    print("| strategy | Kendall tau | Spearman rho | true-front networks found | hypervolume ratio |")
    print("|---|---:|---:|---:|---:|")
    for strategy, r in results.items():
        print(f"| {strategy} | {r['tau']:.3f} | {r['rho']:.3f} | {r['found']:.2f} | {r['hv']:.3f} |")
    _plot(out / "supernet.png", true_acc, latency, true_front, results)
    print(f"\nplot: {out / 'supernet.png'}")
    return 0


def _plot(path: Path, true_acc, latency, true_front, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for (strategy, r), color in zip(results.items(), ("tab:blue", "tab:orange"), strict=True):
        a.scatter(true_acc, r["estimate"], s=18, color=color, label=f"{strategy} (tau {r['tau']:.2f})")
        sel = r["picked"]
        order = np.argsort(latency[sel])
        b.plot(latency[sel][order], true_acc[sel][order], "o--", color=color, ms=5,
               label=f"picked by {strategy} ({r['found']:.0%} of the true front)")
    a.set_xlabel("stand-alone accuracy (val + test)")
    a.set_ylabel("supernet estimate (val + test)")
    a.legend()
    order = np.argsort(latency[true_front])
    b.plot(latency[true_front][order], true_acc[true_front][order], "k-", lw=2, label="true front")
    b.scatter(latency, true_acc, s=10, color="grey")
    b.set_xlabel("latency on local-cpu, onnxruntime (ms)")
    b.set_ylabel("stand-alone accuracy (val + test)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
