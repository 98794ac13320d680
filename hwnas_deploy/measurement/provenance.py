"""Where and how a measurement was taken: the state of the host that drove it, and one flat row
per measurement for `hwnas show --rows --provenance`.

Each measurement's `env` already holds the device's facts (runtime and library versions, CPU
model or board, firmware version) and the runtime; the executors add `env["host"]`: the driving
host's load, CPU governor and clock and this process's CPU affinity, read just before the
deploy and again after the measurement (`host_state`). A measurement taken under load, or on a
clock that moved, shows it; `details["drift"]` holds the drift sentinel's reading
(`measurement.drift`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hwnas_deploy.runtimes import RUNTIMES

_CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def host_state() -> dict[str, Any]:
    """This host now: 1-minute load average, CPU 0's governor and clock (MHz) where the kernel
    exposes them (a VM often does not: then absent), and the CPUs this process may run on."""
    state: dict[str, Any] = {"load1": round(os.getloadavg()[0], 2)}
    governor = _read(_CPUFREQ / "scaling_governor")
    if governor:
        state["governor"] = governor
    khz = _read(_CPUFREQ / "scaling_cur_freq")
    if khz and khz.isdigit():
        state["freq_mhz"] = round(int(khz) / 1000)
    if hasattr(os, "sched_getaffinity"):
        state["affinity"] = sorted(os.sched_getaffinity(0))
    return state


def _cpus(affinity: list[int] | None) -> str:
    if not affinity:
        return ""
    runs, start = [], affinity[0]
    for a, b in zip(affinity, [*affinity[1:], None], strict=True):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ",".join(runs)


def _tuned(used: dict | None) -> str:
    """'41/57 workloads, database 1a2b3c4d (312 records)' for a TVM library built with tuning."""
    if not used:
        return ""
    return (f"{used.get('tuned_workloads')}/{used.get('workloads')} workloads, database {used.get('id')} "
            f"({used.get('records')} records)")


def provenance_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored measurement (a `Store.measurements` row) as one flat row of its provenance."""
    env, details = row.get("env") or {}, row.get("details") or {}
    device = env.get("device") or {}
    runtime = row.get("runtime", "")
    base = runtime.partition("@")[0]  # tvm@ID: TVM built with a tuning database
    package = RUNTIMES[base].package if base in RUNTIMES else None  # "imported": another tool's
    version = f"{package} {device[package]}" if package and device.get(package) else device.get("firmware", "")
    imported = env.get("imported")  # another tool's figure (`hwnas store import`): its version is not known
    source = f"{Path(imported['file']).name}:{details.get('imported', {}).get('line', '?')}" if imported else ""
    host = env.get("host") or {}
    start, end = host.get("start") or {}, host.get("end") or {}
    load = f"{start['load1']:.2f}-{end['load1']:.2f}" if "load1" in start and "load1" in end else ""
    drift = details.get("drift") or {}
    return {
        "device": row.get("device"), "config_hash": row.get("config_hash"), "runtime": runtime,
        "median_ms": row.get("median_ms"), "version": version,
        "cpu": device.get("cpu") or device.get("core") or device.get("model") or "",
        "lab_device": (env.get("lab") or {}).get("device", ""),
        "load": load, "governor": start.get("governor", ""), "freq_mhz": start.get("freq_mhz", ""),
        "cpus": _cpus(start.get("affinity")),
        "sentinel_ms": drift.get("ms", ""), "weights": details.get("weights", ""),
        "imported_from": source, "tvm_tuned": _tuned(env.get("tvm_tuning")), "created": row.get("created"),
    }
