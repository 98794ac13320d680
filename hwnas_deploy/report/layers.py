"""Where a network's time goes, layer by layer, from a stored measurement.

An MCU board times each layer of one instrumented run (the firmware's per-layer counts, stored
in the measurement's details); this turns them into a table (operator, output shape, MACs,
count, count per MAC, share of the whole network, cumulative share, arena bytes live), a figure
and an HTML page. The layers' counts add up to the whole network's within 1 %; what is left is
shown as a last row, "(outside the layers)".

    rows = layer_rows(store.measurements(device="qemu-m7", config_hash=h)[0])
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from collections.abc import Sequence
from pathlib import Path

from hwnas_deploy.errors import ConfigError


def find_measurement(store, key: str, device: str | None = None, runtime: str | None = None) -> dict:
    """The newest measurement of the network `key` (a user model's name, or a config hash or
    its prefix) on `device` (and `runtime`); an error names what the store holds instead."""
    rows = [r for r in store.measurements(device=device, runtime=runtime)
            if r["config_hash"].startswith(key) or r["config"].get("name") == key]
    if not rows:
        raise ConfigError(f"--layers {key}: no measurement of a network with that name or hash"
                          + (f" on {device}" if device else "") + (f" with {runtime}" if runtime else ""))
    kinds = {(r["device"], r["runtime"], r["config_hash"]) for r in rows}
    if len(kinds) > 1:
        listed = ", ".join(f"{h[:8]} on {d}/{rt}" for d, rt, h in sorted(kinds))
        raise ConfigError(f"--layers {key}: several measurements match ({listed}); give --device, --runtime or a "
                          "longer hash")
    return rows[0]


def layer_rows(measurement: dict) -> list[dict]:
    """One row per layer of `measurement` (a row of `Store.measurements`), then the rest of the
    whole network's count as "(outside the layers)"."""
    d = measurement["details"]
    ops, counts = d.get("layer_ops"), d.get("layer_counts")
    if not ops or not counts:
        raise ConfigError(f"{measurement['device']}/{measurement['runtime']} measurement of "
                          f"{measurement['config_hash']}: no per-layer counts (an MCU board's firmware gives them)")
    unit = d.get("count_unit", "cycles")
    whole = float(statistics.median(d["counts"]))
    n = len(counts)
    macs = d.get("layer_macs") or [None] * n
    shapes = d.get("layer_shapes") or [None] * n
    live = d.get("layer_live_bytes") or [None] * n
    rows, cumulative = [], 0.0
    for i, (op, count) in enumerate(zip(ops, counts, strict=False)):
        cumulative += count
        rows.append({
            "layer": i, "op": op, "output": "x".join(str(x) for x in shapes[i]) if shapes[i] else "",
            "macs": macs[i], unit: round(count), f"{unit}_per_mac": round(count / macs[i], 3) if macs[i] else None,
            "share_%": round(100 * count / whole, 2), "cumulative_%": round(100 * cumulative / whole, 2),
            "arena_live_bytes": live[i],
        })
    rest = whole - cumulative
    rows.append({"layer": None, "op": "(outside the layers)", "output": "", "macs": None, unit: round(rest),
                 f"{unit}_per_mac": None, "share_%": round(100 * rest / whole, 2), "cumulative_%": 100.0,
                 "arena_live_bytes": None})
    return rows


def count_unit(rows: Sequence[dict]) -> str:
    """What the counts are in: "instructions" (QEMU) or "cycles" (a board's cycle counter)."""
    return list(rows[0])[4]


def plot_layers(rows: Sequence[dict], title: str, path: str | Path) -> Path:
    """Bars of each layer's share of the network's count, coloured by operator, with its count
    per MAC written beside it."""
    from hwnas_deploy.report.figures import new_figure, save_figure

    layers = [r for r in rows if r["layer"] is not None]
    unit = count_unit(rows)
    ops = sorted({r["op"] for r in layers})
    colours = {op: f"C{i % 10}" for i, op in enumerate(ops)}
    fig, ax = new_figure(figsize=(8, max(3.0, 0.22 * len(layers) + 1.2)), dpi=120)
    y = list(range(len(layers)))
    ax.barh(y, [r["share_%"] for r in layers], color=[colours[r["op"]] for r in layers])
    for yi, r in zip(y, layers, strict=True):
        per = r[f"{unit}_per_mac"]
        if per is not None:
            ax.text(r["share_%"], yi, f" {per:.2f}/MAC", va="center", fontsize=6)
    ax.set_yticks(y, [f"{r['layer']} {r['op']} {r['output']}" for r in layers], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(f"share of the network's {unit} (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[_patch(colours[op], op) for op in ops], fontsize=6, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _patch(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def layers_html(rows: Sequence[dict], title: str, path: str | Path) -> Path:
    """A self-contained page: the figure (embedded) and the table."""
    png = io.BytesIO()
    tmp = Path(path).with_suffix(".tmp.png")
    plot_layers(rows, title, tmp)
    png.write(tmp.read_bytes())
    tmp.unlink()
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{'' if r[c] is None else html.escape(str(r[c]))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>"
            f"<h1>{html.escape(title)}</h1>"
            f"<img alt='per-layer share' src='data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}'>"
            f"<table><tr>{head}</tr>{body}</table>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
