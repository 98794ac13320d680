"""Training data for predictors: sub-network configs of one space and a measured target.

From the store (one device, runtime, threads and batch: the median latency), or from a CSV with
a config column (our `config_json`, or DyNAS-T's `Sub-network` Python-literal dicts) and a target
column. Rows of the same sub-network (equal canonical config) are averaged into one, so a split
never puts the same network on both sides.
"""

from __future__ import annotations

import ast
import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas_deploy.errors import ConfigError, PredictorError
from hwnas_deploy.spaces import SearchSpace, get_space


@dataclass
class Dataset:
    space: str
    target: str
    configs: list[dict]
    y: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.configs)

    def subset(self, idx: Sequence[int]) -> Dataset:
        idx = list(idx)
        return Dataset(self.space, self.target, [self.configs[i] for i in idx], self.y[idx], self.source)


def _merge(space: SearchSpace, configs: Iterable[dict], ys: Iterable[float]) -> tuple[list[dict], list[float]]:
    groups: dict[str, tuple[dict, list[float]]] = {}
    for cfg, y in zip(configs, ys, strict=True):
        canon = space.canonical(cfg)
        groups.setdefault(space.config_hash(canon), (canon, []))[1].append(float(y))
    return [c for c, _ in groups.values()], [float(np.mean(v)) for _, v in groups.values()]


def from_store(store, device: str, space: str, runtime: str, threads: int = 1, batch: int = 1, *,
               correct_drift: bool = False, version: str | None = None) -> Dataset:
    """Latency (ms) of every sub-network of `space` measured on (device, runtime, threads, batch):
    the median of its measurement's median over every round stored (`hwnas profile --rounds`).
    `correct_drift`: each round first scaled by the sentinel's reading beside it
    (`measurement.drift.corrected_ms`); rounds without a reading keep their measured value, and the
    source says how many were corrected. Rows measured with different versions of the runtime (or
    firmware) are never mixed: `version` chooses one ("onnxruntime 1.32.0"), else mixed versions
    are an error naming them."""
    rows = store.measurements(device=device, space=space, runtime=runtime, threads=threads, batch=batch,
                              latest_only=False)
    rows = _one_version(rows, version, f"{space} on {device}/{runtime}")
    if not rows:
        raise PredictorError(
            f"the store holds no measurements of space {space!r} on device {device!r} with runtime {runtime!r}, "
            f"{threads} thread(s), batch {batch}; measure some with `hwnas profile` first"
        )
    sp = get_space(space)
    values = [float(r["median_ms"]) for r in rows]
    source = f"store:{device}/{runtime}/{threads}t/b{batch}"
    if correct_drift:
        from hwnas_deploy.measurement.drift import corrected_ms

        values, n = corrected_ms(store, rows)
        source += f", drift-corrected ({n} of {len(rows)} rounds had a sentinel reading)"
    rounds: dict[str, tuple[dict, list[float]]] = {}
    for r, value in zip(rows, values, strict=True):
        rounds.setdefault(r["config_hash"], (r["config"], []))[1].append(value)
    configs, ys = _merge(sp, (c for c, _ in rounds.values()), (float(np.median(v)) for _, v in rounds.values()))
    return Dataset(space, "latency_ms", configs, np.asarray(ys), source)


def _one_version(rows: list[dict], version: str | None, what: str) -> list[dict]:
    from hwnas_deploy.measurement.provenance import provenance_row

    versions: dict[str, int] = {}
    tagged = [(provenance_row(r)["version"], r) for r in rows]
    for v, _ in tagged:
        versions[v] = versions.get(v, 0) + 1
    if version is not None:
        if version not in versions:
            raise PredictorError(f"--runtime-version {version!r}: the measurements of {what} were taken with "
                                 f"{', '.join(sorted(map(repr, versions)))}")
        return [r for v, r in tagged if v == version]
    named = {v: n for v, n in versions.items() if v}
    if len(named) > 1:
        listed = ", ".join(f"{v} ({n} rounds)" for v, n in sorted(named.items()))
        raise PredictorError(f"the measurements of {what} were taken with {len(named)} versions: {listed}; "
                             "latencies of two versions do not mix: choose one with --runtime-version")
    return rows


CONFIG_COLUMNS = ("config_json", "config", "Sub-network")


def csv_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files named (a folder: every *.csv in it); PredictorError when none or one is missing."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.csv"))
        elif p.exists():
            files.append(p)
        else:
            raise PredictorError(f"{p}: no such file or folder")
    if not files:
        raise PredictorError(f"no CSV files in {', '.join(map(str, paths))}")
    return files


def csv_rows(path: Path, space: SearchSpace, target: str, config_column: str | None = None
             ) -> Iterable[tuple[int, dict, float]]:
    """(line, config, value) of every row of one CSV file: a config column (`config_column`, else
    the first of CONFIG_COLUMNS; JSON or a Python-literal dict) and the numeric column `target`.
    A row that cannot be read is a PredictorError naming the file and line."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        names = (config_column,) if config_column else CONFIG_COLUMNS
        config_col = next((c for c in names if c in columns), None)
        if config_col is None:
            raise PredictorError(f"{path}: no config column; expected {' or '.join(names)}, the columns are "
                                 f"{', '.join(columns)}")
        if target not in columns:
            raise PredictorError(f"{path}: no column {target!r}; columns are {', '.join(columns)}")
        rows = 0
        for line, row in enumerate(reader, start=2):
            rows += 1
            if None in row or None in row.values():
                fields = len(columns) + len(row.get(None, ())) - sum(v is None for v in row.values())
                raise PredictorError(f"{path}:{line}: {fields} fields, the header has {len(columns)}")
            text = row[config_col]
            try:
                cfg = json.loads(text) if text.lstrip().startswith("{\"") else ast.literal_eval(text)
                value = float(row[target])
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                raise PredictorError(f"{path}:{line}: cannot read the row ({exc})") from None
            if not math.isfinite(value):
                raise PredictorError(f"{path}:{line}: {target} is {row[target]!r}; allowed: a finite number")
            try:
                space.validate(cfg)
            except ConfigError as exc:
                raise PredictorError(f"{path}:{line}: {exc}") from None
            yield line, cfg, value
        if not rows:
            raise PredictorError(f"{path}: no rows below the header")


def from_csv(paths: str | Path | Sequence[str | Path], space: str, target: str) -> Dataset:
    """Rows of one or more CSV files (or every *.csv in a folder): a config column (one of
    CONFIG_COLUMNS; JSON or a Python-literal dict) and the numeric column `target`."""
    sp = get_space(space)
    configs, ys = [], []
    for f in csv_files(paths):
        for _, cfg, value in csv_rows(f, sp, target):
            configs.append(cfg)
            ys.append(value)
    configs, ys = _merge(sp, configs, ys)
    label = paths if isinstance(paths, (str, Path)) else ",".join(map(str, paths))
    return Dataset(space, target, configs, np.asarray(ys), str(label))
