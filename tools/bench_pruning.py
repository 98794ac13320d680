#!/usr/bin/env python
"""Search-space pruning study on BLOX (as the Bosch search-space pruning poster), per device.

    .venv/bin/python tools/bench_pruning.py --device local-cpu:onnxruntime --device sim-android:tflite

1. Latency: each device's LUT over every block of the space (45 designs x 3 stages + stem,
   reductions, head), measured on the device (`build_lut`; cached in --out, resumable). A
   network's latency is the sum of its blocks.
2. Accuracy: a weight-sharing BLOX supernet (single-path, uniform sampling) trained on digits;
   --evaluated random networks scored on the validation split with BatchNorm recalibrated; a
   surrogate (random forest on the one-hot blocks) fitted on them scores all 45^3 networks (as
   NAS-Bench-301 does; its held-out Kendall tau is printed).
3. Reference front: the exact Pareto front of (accuracy, latency) over all 91,125 networks.
4. Pruning: per stage, the 45 blocks ranked by parameters per LUT millisecond on the device
   (`reduction.block_efficiency`, as the poster), and by MACs per millisecond (how well a block
   uses the device), the least efficient 0 / 50 / 70 / 90 % dropped; control: as many dropped
   at random (a new draw per seed).
5. Search: multi-objective regularized evolution with non-dominated sorting
   (`search.evolution`, population --population, sample --sample) in each space, --seeds seeds;
   generational distance (GD) and inverted GD of the networks found so far to the reference
   front, objectives scaled to [0, 1] over the whole table, at 10 / 100 / 250 / 500 / 1000
   evolutions.

Prints Markdown tables (mean +- std over seeds) and writes --figure (GD against evolutions,
one panel per device). Peer in the same run: no pruning (0 %).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hwnas_deploy.predictors.lut import LatencyLUT, build_lut
from hwnas_deploy.report.figures import kendall_tau, new_figure, save_figure
from hwnas_deploy.search.evolution import regularized_evolution
from hwnas_deploy.search.reduction import block_efficiency, random_pruning
from hwnas_deploy.spaces import get_space
from hwnas_deploy.spaces.blox import DESIGNS

CHECKPOINTS = (10, 100, 250, 500, 1000)
SHARES = (0.0, 0.5, 0.7, 0.9)


def device_lut(space, device: str, runtime: str, out: Path) -> LatencyLUT:
    configs = [{"blocks": [k, k, k]} for k in range(len(DESIGNS))]  # every block at every stage
    return build_lut(device, space.name, runtime, configs, out / f"lut-{space.name}-{device}-{runtime}.json")


def supernet_accuracies(space, out: Path, epochs: int, evaluated: int, seed: int) -> tuple[list[dict], np.ndarray]:
    import torch

    from hwnas_deploy.supernet.blox import BloxSupernet, evaluate_blox, train_blox_supernet
    from hwnas_deploy.supernet.data import load_dataset

    cache = out / f"accuracy-{space.name}-e{epochs}-n{evaluated}-s{seed}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        return data["configs"], np.asarray(data["val"])
    digits = load_dataset("digits")
    weights = out / f"supernet-{space.name}-e{epochs}-s{seed}.pt"
    if weights.exists():
        net = BloxSupernet(space)
        net.load_state_dict(torch.load(weights))
        net.eval()
    else:
        t = time.perf_counter()
        net = train_blox_supernet(space, digits, epochs=epochs, seed=seed, progress=lambda e, loss: print(
            f"  supernet epoch {e + 1}/{epochs}: loss {loss:.3f} ({time.perf_counter() - t:.0f} s)", file=sys.stderr))
        torch.save(net.state_dict(), weights)
    configs = space.sample_unique(evaluated, seed)
    t = time.perf_counter()
    acc = evaluate_blox(net, configs, digits)
    print(f"  {evaluated} networks evaluated on the supernet in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    cache.write_text(json.dumps({"configs": configs, "val": acc.tolist()}))
    return configs, acc


def surrogate(space, configs: list[dict], acc: np.ndarray, seed: int):
    from sklearn.ensemble import RandomForestRegressor

    X = np.vstack([space.encode(c) for c in configs])
    order = np.random.default_rng(seed).permutation(len(X))
    cut = int(0.8 * len(X))
    probe = RandomForestRegressor(300, min_samples_leaf=3, random_state=seed, n_jobs=-1)
    probe.fit(X[order[:cut]], acc[order[:cut]])
    tau = kendall_tau(list(acc[order[cut:]]), list(probe.predict(X[order[cut:]])))
    model = RandomForestRegressor(300, min_samples_leaf=3, random_state=seed, n_jobs=-1).fit(X, acc)
    return model, tau


def all_networks() -> np.ndarray:
    n = len(DESIGNS)
    return np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 3)


def one_hot(genes: np.ndarray) -> np.ndarray:
    n = len(DESIGNS)
    X = np.zeros((len(genes), 3 * n), dtype=np.float32)
    for s in range(3):
        X[np.arange(len(genes)), s * n + genes[:, s]] = 1
    return X


def latency_table(space, lut: LatencyLUT, genes: np.ndarray) -> np.ndarray:
    """Sum of LUT entries: fixed blocks once, each stage's cell by its design."""
    n, cells = len(DESIGNS), (1, 3, 5)  # positions of the three cells among a network's blocks
    per_stage = np.zeros((3, n))
    for k in range(n):
        keys = [b.key() for b in space.blocks({"blocks": [k, k, k]})]
        per_stage[:, k] = [lut.entries[keys[i]] for i in cells]
    keys = [b.key() for b in space.blocks({"blocks": [0, 0, 0]})]
    fixed = sum(lut.entries[key] for i, key in enumerate(keys) if i not in cells)
    return fixed + per_stage[0, genes[:, 0]] + per_stage[1, genes[:, 1]] + per_stage[2, genes[:, 2]]


def pareto_mask(F: np.ndarray) -> np.ndarray:
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    mask = np.zeros(len(F), dtype=bool)
    mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def study(space, lut: LatencyLUT, genes: np.ndarray, F: np.ndarray, front: np.ndarray, args) -> dict:
    """GD / IGD at the checkpoints, per pruning setting, over seeds (`front`: the reference
    front's mask over `genes`)."""
    from pymoo.indicators.gd import GD
    from pymoo.indicators.igd import IGD

    lo, hi = F.min(0), F.max(0)
    scaled = (F - lo) / (hi - lo)
    ref = scaled[front]
    gd, igd = GD(ref), IGD(ref)
    index = {tuple(g): i for i, g in enumerate(genes.tolist())}
    settings = ([("params", s) for s in SHARES] + [("macs", s) for s in SHARES[1:]]
                + [("random", s) for s in SHARES[1:]])
    out = {}
    for kind, share in settings:
        rows = {"gd": [], "igd": [], "front_kept": [], "allowed": []}
        ranked = None if kind == "random" else block_efficiency(space, lut, share, seed=0, capacity=kind)
        for seed in range(args.seeds):
            # only the random control varies by seed
            allowed = ranked if ranked is not None else random_pruning(space, share, seed=1000 + seed)
            kept = np.all([np.isin(genes[:, s], allowed[s]) for s in range(3)], axis=0)
            rows["front_kept"].append(float(np.mean(kept[front])))
            res = regularized_evolution(lambda g: scaled[index[tuple(int(v) for v in g)]], allowed,
                                        max(CHECKPOINTS), population=args.population, sample=args.sample, seed=seed)
            rows["gd"].append([gd(res.front_after(n)) for n in CHECKPOINTS])
            rows["igd"].append([igd(res.front_after(n)) for n in CHECKPOINTS])
            rows["allowed"].append(allowed)
        out[f"{kind}-{int(share * 100)}"] = rows
    return out


def markdown(device: str, results: dict, metric: str) -> str:
    lines = [f"| {device}: {metric.upper()} | " + " | ".join(f"{n} evol." for n in CHECKPOINTS)
             + " | reference front kept |", "|---|" + "---|" * (len(CHECKPOINTS) + 1)]
    for name, rows in results.items():
        a = np.asarray(rows[metric])
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in zip(a.mean(0), a.std(0), strict=True)]
        kind, share = name.split("-")
        how = {"params": "by params/latency", "macs": "by MACs/latency", "random": "at random"}[kind]
        label = "no pruning" if share == "0" else f"{share} % pruned {how}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(rows['front_kept']):.0%} |")
    return "\n".join(lines)


def plot(all_results: dict, path: Path) -> Path:
    fig, axes = new_figure(1, len(all_results), figsize=(5.5 * len(all_results), 4), squeeze=False)
    for ax, (device, results) in zip(axes[0], all_results.items(), strict=True):
        for name, rows in results.items():
            a = np.asarray(rows["gd"])
            kind, share = name.split("-")
            style = {"params": "-", "macs": "--", "random": ":"}[kind]
            label = "no pruning" if share == "0" else f"{share} % " + (f"{kind}/ms" if kind != "random" else "random")
            ax.errorbar(CHECKPOINTS, a.mean(0), yerr=a.std(0), ls=style, marker="o", ms=3, capsize=2, label=label,
                        color="black" if share == "0" else None, lw=2 if share == "0" else 1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("evolutions (networks evaluated)")
        ax.set_ylabel("generational distance to the reference front")
        ax.set_title(f"BLOX pruning on {device}")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", default=None, help="PROFILE:RUNTIME (repeatable)")
    ap.add_argument("--space", default="blox-mini")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--evaluated", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--sample", type=int, default=5)
    ap.add_argument("--out", default="runs/bench-pruning")
    ap.add_argument("--figure", default="docs/figures/bench_pruning.png")
    args = ap.parse_args(argv)
    devices = args.device or ["local-cpu:onnxruntime", "sim-android:tflite"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    t0 = time.perf_counter()

    configs, acc = supernet_accuracies(space, out, args.epochs, args.evaluated, seed=0)
    model, tau = surrogate(space, configs, acc, seed=0)
    genes = all_networks()
    table_acc = model.predict(one_hot(genes))
    print(f"Accuracy: supernet ({args.epochs} epochs, digits at {space.resolution}px) on {len(configs)} networks, "
          f"val accuracy {acc.min():.3f}-{acc.max():.3f}; random-forest surrogate, held-out Kendall tau {tau:.3f}; "
          f"table accuracy {table_acc.min():.3f}-{table_acc.max():.3f} over {len(genes)} networks\n")

    all_results = {}
    for spec in devices:
        device, _, runtime = spec.partition(":")
        lut = device_lut(space, device, runtime, out)
        latency = latency_table(space, lut, genes)
        F = np.column_stack([-table_acc, latency])
        front = pareto_mask(F)
        results = study(space, lut, genes, F, front, args)
        all_results[device] = results
        kept90 = results["params-90"]["allowed"][0]
        print(f"### {device} ({runtime}): latency {latency.min():.3f}-{latency.max():.3f} ms (LUT sums), "
              f"reference front {int(front.sum())} networks\n")
        print(markdown(device, results, "gd") + "\n")
        print(markdown(device, results, "igd") + "\n")
        print("Blocks kept at 90 % by params/latency, per stage: " + "; ".join(
            f"stage {s + 1}: " + ", ".join(DESIGNS[k].name for k in kept90[s]) for s in range(3)) + "\n")
    if len(all_results) > 1:
        names = list(all_results)
        for kind in ("params", "macs"):
            for x, y in zip(names, names[1:] + names[:1], strict=True) if len(names) > 2 else [names[:2]]:
                a, b = (all_results[n][f"{kind}-70"]["allowed"][0] for n in (x, y))
                same = [len(set(u) & set(v)) / len(u) for u, v in zip(a, b, strict=True)]
                print(f"Blocks kept at 70 % by {kind}/latency on both {x} and {y}, per stage: "
                      + ", ".join(f"{v:.0%}" for v in same) + "\n")
    print(f"figure: {plot(all_results, Path(args.figure))}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
