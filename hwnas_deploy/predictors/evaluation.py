"""How good a predictor is: held-out metrics, learning curves and their plots.

Metrics (Intel's DyNAS-T predictor analysis reports the same): MAPE, RMSE, Kendall tau and
Spearman rho (ranking is what a search needs), and the share of predictions within +-5 % and
+-10 % of the measured value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from hwnas_deploy.errors import PredictorError
from hwnas_deploy.predictors.data import Dataset
from hwnas_deploy.predictors.lut import LatencyLUT
from hwnas_deploy.predictors.predictor import Predictor
from hwnas_deploy.report.figures import new_figure, save_figure

METRICS = ("mape", "rmse", "tau", "spearman", "within5", "within10")


def metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    rel = np.abs(p - y) / np.abs(y)
    return {
        "mape": float(100 * np.mean(rel)),
        "rmse": float(np.sqrt(np.mean((p - y) ** 2))),
        "tau": float(kendalltau(y, p).statistic),
        "spearman": float(spearmanr(y, p).statistic),
        "within5": float(100 * np.mean(rel <= 0.05)),
        "within10": float(100 * np.mean(rel <= 0.10)),
    }


def split(n: int, train_size: int, test_size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random train/test indices; test_size None takes every row not trained on."""
    if train_size < 2:
        raise PredictorError(f"train size must be at least 2, got {train_size}")
    test_size = n - train_size if test_size is None else test_size
    if train_size + test_size > n or test_size < 3:
        raise PredictorError(f"{n} rows cannot give {train_size} training and {test_size} test rows (>= 3)")
    order = np.random.default_rng(seed).permutation(n)
    return order[:train_size], order[train_size : train_size + test_size]


@dataclass
class Evaluation:
    estimator: str
    train_size: int
    test_size: int
    metrics: dict[str, float]
    y_true: np.ndarray
    y_pred: np.ndarray


def holdout(data: Dataset, estimators: Sequence[str], train_size: int, test_size: int | None = None,
            seed: int = 0, params: dict[str, dict] | None = None, lut: LatencyLUT | None = None,
            sources: dict | None = None) -> list[Evaluation]:
    """Every estimator trained on the same `train_size` rows and tested on the same other rows
    (`lut`: the device's LUT, for the estimators built on one; `sources`: other devices' rows, for
    the transfer estimator)."""
    tr, te = split(len(data), train_size, test_size, seed)
    train, test = data.subset(tr), data.subset(te)
    out = []
    for name in estimators:
        pred = Predictor(name, (params or {}).get(name), lut=lut, sources=sources).fit(
            train.configs, train.y, data.space, data.target)
        p = pred.predict(test.configs)
        out.append(Evaluation(name, len(train), len(test), metrics(test.y, p), test.y, p))
    return out


def kfold(data: Dataset, estimator: str, k: int = 5, seed: int = 0, lut: LatencyLUT | None = None) -> dict[str, float]:
    """Mean of each metric over k folds."""
    if not 2 <= k <= len(data) // 3:
        raise PredictorError(f"k-fold needs 2 <= k <= rows/3; got k={k} for {len(data)} rows")
    order = np.random.default_rng(seed).permutation(len(data))
    folds = np.array_split(order, k)
    scores = []
    for i in range(k):
        train = data.subset(np.concatenate([f for j, f in enumerate(folds) if j != i]))
        test = data.subset(folds[i])
        pred = Predictor(estimator, lut=lut).fit(train.configs, train.y, data.space, data.target)
        scores.append(metrics(test.y, pred.predict(test.configs)))
    return {m: float(np.mean([s[m] for s in scores])) for m in METRICS}


def learning_curve(data: Dataset, estimators: Sequence[str], sizes: Sequence[int], trials: int = 5,
                   test_size: int | None = None, seed: int = 0, lut: LatencyLUT | None = None,
                   sources: dict | None = None) -> dict[str, dict[int, dict[str, tuple[float, float]]]]:
    """estimator -> training size -> metric -> (mean, std) over `trials` random splits. The test
    set of each trial is fixed across sizes, so curves differ only by what was trained on."""
    sizes = sorted(int(s) for s in sizes)
    test_size = test_size or max(3, len(data) - sizes[-1])
    out: dict[str, dict[int, dict[str, tuple[float, float]]]] = {e: {} for e in estimators}
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for t in range(trials):
        tr, te = split(len(data), sizes[-1], test_size, seed + t)
        test = data.subset(te)
        for size in sizes:
            train = data.subset(tr[:size])
            for e in estimators:
                pred = Predictor(e, lut=lut, sources=sources).fit(train.configs, train.y, data.space, data.target)
                runs.setdefault((e, size), []).append(metrics(test.y, pred.predict(test.configs)))
    for (e, size), scores in runs.items():
        out[e][size] = {m: (float(np.mean([s[m] for s in scores])), float(np.std([s[m] for s in scores])))
                        for m in METRICS}
    return out


def markdown_table(evals: Sequence[Evaluation]) -> str:
    lines = ["| estimator | train | test | MAPE % | RMSE | Kendall tau | Spearman | within 5 % | within 10 % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ev in evals:
        m = ev.metrics
        lines.append(f"| {ev.estimator} | {ev.train_size} | {ev.test_size} | {m['mape']:.2f} | {m['rmse']:.4g} | "
                     f"{m['tau']:.3f} | {m['spearman']:.3f} | {m['within5']:.1f} | {m['within10']:.1f} |")
    return "\n".join(lines)


def scatter_plot(evals: Sequence[Evaluation], path: str | Path, target: str) -> Path:
    """Predicted against measured, one panel per estimator, with the y = x line."""
    n = len(evals)
    fig, axes = new_figure(1, n, figsize=(3.2 * n, 3.4), dpi=120, squeeze=False)
    for ax, ev in zip(axes[0], evals, strict=True):
        lo, hi = float(min(ev.y_true.min(), ev.y_pred.min())), float(max(ev.y_true.max(), ev.y_pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.scatter(ev.y_true, ev.y_pred, s=6, alpha=0.6)
        ax.set_title(f"{ev.estimator}: tau {ev.metrics['tau']:.2f}, MAPE {ev.metrics['mape']:.1f} %", fontsize=8)
        ax.set_xlabel(f"measured {target}", fontsize=8)
        ax.set_ylabel(f"predicted {target}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def learning_curve_plot(curves: dict, path: str | Path) -> Path:
    """MAPE and Kendall tau against the number of training rows (mean +- std over trials)."""
    fig, (a1, a2) = new_figure(1, 2, figsize=(9, 3.6), dpi=120)
    for e, by_size in curves.items():
        sizes = sorted(by_size)
        for ax, m in ((a1, "mape"), (a2, "tau")):
            mean = np.array([by_size[s][m][0] for s in sizes])
            std = np.array([by_size[s][m][1] for s in sizes])
            ax.plot(sizes, mean, marker="o", ms=3, label=e)
            ax.fill_between(sizes, mean - std, mean + std, alpha=0.15)
    a1.set_ylabel("MAPE (%)")
    a2.set_ylabel("Kendall tau")
    all_sizes = sorted({s for by_size in curves.values() for s in by_size})
    for ax in (a1, a2):
        ax.set_xlabel("training rows")
        ax.set_xscale("log")
        ax.set_xticks(all_sizes, [str(s) for s in all_sizes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    a2.legend(fontsize=7)
    return save_figure(fig, path)


def write_report(out_dir: str | Path, data: Dataset, evals: Sequence[Evaluation], seed: int,
                 curves: dict | None = None) -> Path:
    """report.json (held-out metrics per estimator, learning curves), scatter.png and
    learning_curve.png in `out_dir`; returns the folder."""
    import json

    from hwnas_deploy.datafile import finite

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"space": data.space, "target": data.target, "source": data.source, "rows": len(data),
              "seed": seed, "holdout": [{"estimator": e.estimator, "train": e.train_size, "test": e.test_size,
                                        **e.metrics} for e in evals]}
    scatter_plot(evals, out / "scatter.png", data.target)
    if curves:
        report["learning_curve"] = {e: {str(s): v for s, v in c.items()} for e, c in curves.items()}
        learning_curve_plot(curves, out / "learning_curve.png")
    (out / "report.json").write_text(json.dumps(finite(report), indent=1) + "\n")
    return out
