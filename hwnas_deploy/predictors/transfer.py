"""Transfer: a latency predictor for a device with few measurements, from the devices measured
before (the `transfer` estimator).

    sources = sources_from_store(store, "ofa-mbv3-w1.0", ("pixel4-a76", "tflite", 1, 1), "all")
    Predictor("transfer", sources=sources).fit(configs_20, y_20, "ofa-mbv3-w1.0")

A *source* is another (device, runtime, threads, batch) setting of the same space in the store,
with at least `min_rows` networks. Each source gets a predictor of its own (`base`, gradient-
boosted trees by default) fitted on all its rows; the new device's few rows then fit a ridge
regression from the sources' predicted log latencies (and log MACs) to its own log latency.
The sources' rows are saved inside the predictor file, so it refits anywhere (no pickles).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hwnas_deploy.errors import PredictorError

MIN_ROWS = 20
_FITTED: dict[str, Any] = {}  # a source's fitted model by its rows' digest: refitting is the slow part


def source_name(device: str, runtime: str, threads: int, batch: int) -> str:
    return f"{device}/{runtime}/{threads}t/b{batch}"


def parse_source(text: str) -> tuple[str, str, int | None, int | None]:
    """DEVICE/RUNTIME[/Nt][/bN] -> (device, runtime, threads or None, batch or None)."""
    parts = [p for p in text.strip().split("/") if p]
    threads = batch = None
    rest = parts[2:]
    try:
        for p in rest:
            if p.endswith("t") and p[:-1].isdigit():
                threads = int(p[:-1])
            elif p.startswith("b") and p[1:].isdigit():
                batch = int(p[1:])
            else:
                raise ValueError(p)
    except ValueError:
        rest = None
    if len(parts) < 2 or rest is None:
        raise PredictorError(f"--transfer-from {text!r}: allowed: all, or DEVICE/RUNTIME[/Nt][/bN] (e.g. "
                             "local-cpu/onnxruntime/1t/b1), comma-separated")
    return parts[0], parts[1], threads, batch


def sources_from_store(store, space: str, target: tuple[str, str, int, int], spec: str = "all", *,
                       min_rows: int = MIN_ROWS, correct_drift: bool = False) -> dict[str, dict[str, list]]:
    """The store's other settings of `space` (not `target`: device, runtime, threads, batch) with
    at least `min_rows` networks: name -> {"configs", "y"} (latency, ms). `spec`: "all", or
    settings named DEVICE/RUNTIME[/Nt][/bN], comma-separated."""
    from hwnas_deploy.predictors.data import from_store

    have = {(g["device"], g["runtime"], g["threads"], g["batch"]): g["subnets"] for g in store.overview()
            if g["space"] == space}
    have.pop(tuple(target), None)
    if spec.strip() == "all":
        chosen = [k for k, n in sorted(have.items()) if n >= min_rows]
        if not chosen:
            listed = ", ".join(f"{source_name(*k)} ({n})" for k, n in sorted(have.items())) or "none"
            raise PredictorError(f"--transfer-from all: no other setting of {space} in the store has {min_rows}+ "
                                 f"networks (it has: {listed})")
    else:
        chosen = []
        for text in spec.split(","):
            device, runtime, threads, batch = parse_source(text)
            match = [k for k in have if k[:2] == (device, runtime) and threads in (None, k[2])
                     and batch in (None, k[3])]
            if not match:
                listed = ", ".join(source_name(*k) for k in sorted(have)) or "none"
                raise PredictorError(f"--transfer-from {text.strip()}: the store has no measurements of {space} "
                                     f"there (it has: {listed})")
            chosen += [k for k in match if k not in chosen]
    out = {}
    for key in chosen:
        data = from_store(store, key[0], space, key[1], key[2], key[3], correct_drift=correct_drift)
        out[source_name(*key)] = {"configs": data.configs, "y": [float(v) for v in data.y]}
    return out


def source_models(space: str, sources: dict[str, dict[str, list]] | None, base: str) -> dict[str, Any]:
    """Each source's fitted `base` predictor (cached by its rows: the same sources are fitted once
    per process however many target splits are evaluated)."""
    from hwnas_deploy.predictors.predictor import Predictor

    if not sources:
        raise PredictorError("the transfer estimator needs at least one source device's rows")
    if base == "transfer":
        raise PredictorError("the transfer estimator's base must be another estimator, e.g. gbt or ridge")
    out = {}
    for name, rows in sorted(sources.items()):
        text = json.dumps([space, base, rows["configs"], rows["y"]], sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest not in _FITTED:
            if len(_FITTED) >= 64:
                _FITTED.clear()
            _FITTED[digest] = Predictor(base).fit(rows["configs"], rows["y"], space, "latency_ms", name)
        out[name] = _FITTED[digest]
    return out


def informative(space: str, sources: dict[str, dict[str, list]], n: int, seed: int = 0, *, pool: int = 2000,
                base: str = "gbt", candidates: list[dict] | None = None) -> list[dict]:
    """`n` sub-networks of `space` to measure first on a new device: drawn from `pool` random ones
    (`seed`) by farthest-point selection in the transfer estimator's own inputs (the sources'
    predicted log latencies and log MACs, standardised), starting from the network farthest from
    their mean. Spread-out inputs pin down the regression from the sources to the new device
    with fewer rows than a random draw, whose networks crowd around the typical latency.
    `candidates`: choose among these instead of a random pool."""
    import numpy as np

    from hwnas_deploy.spaces import get_space

    sp = get_space(space)
    if candidates is None:
        candidates = sp.sample_unique(max(pool, n), seed)
    elif len(candidates) < n:
        raise PredictorError(f"{n} networks cannot be chosen from {len(candidates)} candidates")
    models = source_models(space, sources, base)
    z = np.column_stack([np.log(np.maximum(m.predict(candidates), 1e-12)) for m in models.values()]
                        + [np.log([max(sp.macs(c), 1) for c in candidates])])
    z = (z - z.mean(axis=0)) / np.where(z.std(axis=0) > 0, z.std(axis=0), 1.0)
    chosen = [int(np.argmax(np.linalg.norm(z, axis=1)))]
    nearest = np.linalg.norm(z - z[chosen[0]], axis=1)
    while len(chosen) < n:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(z - z[pick], axis=1))
    return [candidates[i] for i in chosen]
