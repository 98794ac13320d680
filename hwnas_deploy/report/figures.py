"""Plots people would rather look at than read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scipy.stats import kendalltau


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall tau-b, or None with fewer than 3 points or a constant series."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return float(kendalltau(xs, ys).statistic)


def new_figure(*args, **kwargs):
    """matplotlib's subplots on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def latency_vs_macs(rows: Sequence[dict], path: str | Path) -> Path:
    """Scatter of measured median latency against MACs, one series per (device, space, runtime,
    threads, batch), each labelled with its Kendall tau: how well MACs rank latency there."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["space"], r["runtime"], r["threads"], r["batch"]), []).append(r)
    fig, ax = new_figure(figsize=(7, 4.5), dpi=120)
    for (device, space, runtime, threads, batch), rs in sorted(groups.items()):
        macs = [r["macs"] / 1e6 for r in rs]
        lat = [r["median_ms"] for r in rs]
        tau = kendall_tau(macs, lat)
        label = f"{device} / {space} / {runtime} ({threads}t, b{batch}), n={len(rs)}"
        label += f", tau={tau:.2f}" if tau is not None else ""
        ax.scatter(macs, lat, s=16, alpha=0.8, label=label)
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("Measured latency vs MACs (Kendall tau: how well MACs rank latency)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)
