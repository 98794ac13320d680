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


def from_store(store, device: str, space: str, runtime: str, threads: int = 1, batch: int = 1) -> Dataset:
    """Latency (ms) of every sub-network of `space` measured on (device, runtime, threads, batch):
    the median of its measurement's median over every round stored (`hwnas profile --rounds`)."""
    rows = store.measurements(device=device, space=space, runtime=runtime, threads=threads, batch=batch,
                              latest_only=False)
    if not rows:
        raise PredictorError(
            f"the store holds no measurements of space {space!r} on device {device!r} with runtime {runtime!r}, "
            f"{threads} thread(s), batch {batch}; measure some with `hwnas profile` first"
        )
    sp = get_space(space)
    rounds: dict[str, tuple[dict, list[float]]] = {}
    for r in rows:
        rounds.setdefault(r["config_hash"], (r["config"], []))[1].append(float(r["median_ms"]))
    configs, ys = _merge(sp, (c for c, _ in rounds.values()), (float(np.median(v)) for _, v in rounds.values()))
    return Dataset(space, "latency_ms", configs, np.asarray(ys), f"store:{device}/{runtime}/{threads}t/b{batch}")


CONFIG_COLUMNS = ("config_json", "config", "Sub-network")


def from_csv(paths: str | Path | Sequence[str | Path], space: str, target: str) -> Dataset:
    """Rows of one or more CSV files (or every *.csv in a folder): a config column (one of
    CONFIG_COLUMNS; JSON or a Python-literal dict) and the numeric column `target`."""
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
    sp = get_space(space)
    configs, ys = [], []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            config_col = next((c for c in CONFIG_COLUMNS if c in columns), None)
            if config_col is None:
                raise PredictorError(f"{f}: no config column; expected one of {', '.join(CONFIG_COLUMNS)}")
            if target not in columns:
                raise PredictorError(f"{f}: no column {target!r}; columns are {', '.join(columns)}")
            rows = 0
            for line, row in enumerate(reader, start=2):
                rows += 1
                if None in row or None in row.values():
                    fields = len(columns) + len(row.get(None, ())) - sum(v is None for v in row.values())
                    raise PredictorError(f"{f}:{line}: {fields} fields, the header has {len(columns)}")
                text = row[config_col]
                try:
                    cfg = json.loads(text) if text.lstrip().startswith("{\"") else ast.literal_eval(text)
                    value = float(row[target])
                except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                    raise PredictorError(f"{f}:{line}: cannot read the row ({exc})") from None
                if not math.isfinite(value):
                    raise PredictorError(f"{f}:{line}: {target} is {row[target]!r}; allowed: a finite number")
                try:
                    sp.validate(cfg)
                except ConfigError as exc:
                    raise PredictorError(f"{f}:{line}: {exc}") from None
                configs.append(cfg)
                ys.append(value)
            if not rows:
                raise PredictorError(f"{f}: no rows below the header")
    configs, ys = _merge(sp, configs, ys)
    return Dataset(space, target, configs, np.asarray(ys), ",".join(map(str, paths)))
