"""Measurements from elsewhere: another tool's or another lab's latencies recorded in the store as
measurements of a named device, so that predictors can be fitted and evaluated for a device only
someone else measured.

    hwnas store import --csv ofa_gpu.csv --device a100 --space ofa-mbv3-w1.2 \\
        --config-column "Sub-network" --target "latency (ms)"

Each row becomes one measurement (its value as the median; one sample) of the device, under the
runtime named (`imported` unless told); its provenance says imported, from which file (path and
SHA-256) and line. A file already imported into the store (same SHA-256, device and runtime) is
not imported twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.measure import Summary
from hwnas_deploy.predictors.data import csv_files, csv_rows
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import MeasurementKey, Store

UNITS = {"ms": 1.0, "us": 1e-3, "s": 1e3}
IMPORTED_KIND = "imported"


@dataclass
class ImportReport:
    files: int = 0
    rows: int = 0
    skipped_files: list[str] | None = None  # imported before

    def line(self) -> str:
        text = f"imported {self.rows} measurements from {self.files} file(s)"
        if self.skipped_files:
            text += f"; already in the store: {', '.join(self.skipped_files)}"
        return text


def import_csv(store: Store, paths, device: str, space: str, target: str, *, config_column: str | None = None,
               unit: str = "ms", runtime: str = "imported", threads: int = 1, batch: int = 1) -> ImportReport:
    """Record every row of the CSV file(s) at `paths` (see the module's notes); returns what was
    imported. Rows are checked before any is written: a bad row imports nothing from its file."""
    if unit not in UNITS:
        raise ConfigError(f"--unit {unit!r}: allowed: {', '.join(UNITS)}")
    if not device.strip():
        raise ConfigError("--device: a name for the device that was measured (it need not be a profile)")
    sp = get_space(space)
    report = ImportReport(skipped_files=[])
    done = _imported_files(store, device, runtime)
    for path in csv_files(paths):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha in done:
            report.skipped_files.append(str(path))
            continue
        rows = list(csv_rows(path, sp, target, config_column))
        source = {"file": str(Path(path).resolve()), "sha256": sha, "column": target, "unit": unit}
        for line, cfg, value in rows:
            ms = value * UNITS[unit]
            canon = sp.canonical(cfg)
            key = MeasurementKey(device, sp.name, sp.config_hash(canon), runtime, threads, batch)
            summary = Summary(median_ms=ms, mean_ms=ms, p90_ms=ms, iqr_ms=0.0, min_ms=ms, std_ms=0.0, n=1,
                              n_outliers=0, ci_rel=float("nan"), converged=True, samples_ms=[ms],
                              details={"imported": {"line": line, "value": value}})
            store.add_measurement(key, summary, device_kind=IMPORTED_KIND,
                                  device_profile={"name": device, "kind": IMPORTED_KIND, "source": source["file"]},
                                  config=canon, macs=sp.macs(canon), params=sp.params_count(canon),
                                  env={"imported": source, "runtime": runtime})
        report.files += 1
        report.rows += len(rows)
    return report


def _imported_files(store: Store, device: str, runtime: str) -> set[str]:
    return {r["env"]["imported"]["sha256"] for r in store.measurements(device=device, runtime=runtime,
                                                                         latest_only=False)
            if "imported" in (r.get("env") or {})}
