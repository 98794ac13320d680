"""Drift-proof measurement: a sentinel network measured at intervals, and latencies corrected by it.

A host's speed moves while a long run goes on (other tenants of a virtual machine, the clock
governor, temperature): on a 2-vCPU VM one pass over 750 networks read 5.5 ms on average and
the next 6.8 ms. Rounds (`--rounds`) spread that over every network at 5x the cost; a sentinel
measures it. One fixed network (`sentinel_for`) is measured before a device's first job and
again whenever its last reading is `every_s` old and ten times as old as that reading took;
each measurement stores the reading in force beside it (`details["drift"]`), and the
sentinel's readings are stored as measurements of their own. A corrected latency is then

    measured ms x (the sentinel's median over every stored reading) / (its reading at the time)

with the reading at the time interpolated between the one before the measurement and the next
one (`sentinel_at`). It is computed when read (`corrected_ms`, `hwnas predictor ...
--correct-drift`), so the raw figure stays what was measured, and a later run's readings refine
the reference.

The sentinel of a space's networks is one of its sub-networks (`sentinel_for`); of a user's
models, the first model. The interval is the device profile's `measurement.sentinel_every_s`
(by kind: 5 s on a host CPU, whose speed on a shared VM moves within tens of seconds; a minute
on phones and RPC boards, where a reading costs an upload; none on MCU boards, which count cycles
or instructions; the adb and RPC twins' profiles say none too: they check the device path, and
their times are this host's).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas_deploy.errors import HwnasError
from hwnas_deploy.store import SENTINEL_ROLE as ROLE

if TYPE_CHECKING:
    from hwnas_deploy.measure import Summary
    from hwnas_deploy.measurement.network import Network

#: a reading is due `every_s` after the last, and no sooner than this many times the last one's
#: duration (a slow sentinel, such as a large model of the user's, then costs at most ~10 %)
SHARE = 10.0
SENTINEL_SEED = 20261207  # which sub-network of a space is its sentinel (fixed: readings compare across runs)


def sentinel_for(space) -> Network:
    """A space's sentinel: one sub-network drawn from a fixed seed, the same in every run."""
    from hwnas_deploy.measurement.network import SubNetwork
    from hwnas_deploy.spaces import SearchSpace, get_space

    sp = space if isinstance(space, SearchSpace) else get_space(space)
    return SubNetwork(sp, sp.sample(np.random.default_rng(SENTINEL_SEED)))


@dataclass
class SentinelWatch:
    """One device's sentinel readings in a run (an executor keeps one per opened device).

    `check` measures the sentinel when it is due; `stamp()` is the reading in force, to be stored
    beside the next measurement. A sentinel that cannot be measured (it fails, or the device cannot
    hold it) turns the watch off for the run, with a note, and measurements go on unstamped.
    Readings are numbered per run (`run`, `n`), so that a measurement can later be placed between
    the reading before it and the one after."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    readings: dict[Any, dict[str, Any]] = field(default_factory=dict)  # per store key of the sentinel
    off: str | None = None

    def check(self, plan, driver, artifact: Callable[[], Any], note: Callable[[str], None] | None = None
              ) -> tuple[Summary | None, Any]:
        """(a new reading's summary, with its run, number and time in its details, and the
        sentinel's artifact), or (None, None) when none is due."""
        if plan.sentinel is None or plan.sentinel_every_s <= 0 or self.off:
            return None, None
        key = plan.key(plan.sentinel)
        last = self.readings.get(key)
        if last is not None and time.time() - last["at"] < max(plan.sentinel_every_s, SHARE * last["took"]):
            return None, None
        try:
            art = artifact()
            started = time.time()
            summary = plan.run(driver, art)
        except HwnasError as exc:  # DoesNotFitError too
            self.off = f"sentinel {plan.sentinel.config_hash} not measured ({exc}); no drift readings in this run"
            if note is not None:
                note(self.off)
            return None, None
        reading = {"space": plan.sentinel.space, "config_hash": plan.sentinel.config_hash,
                   "ms": float(summary.median_ms), "run": self.run, "n": 0 if last is None else last["n"] + 1,
                   "at": time.time(), "took": time.time() - started}
        self.readings[key] = reading
        summary.details.update({"role": ROLE, "run": reading["run"], "n": reading["n"], "at": reading["at"],
                                "took_s": round(reading["took"], 4)})
        return summary, art

    def stamp(self, plan) -> dict[str, Any] | None:
        """The reading in force for `plan`'s sentinel: space, config_hash, ms, run, n and its age
        in seconds."""
        if plan.sentinel is None or self.off:
            return None
        last = self.readings.get(plan.key(plan.sentinel))
        if last is None:
            return None
        stamp = {k: v for k, v in last.items() if k not in ("at", "took")}
        return {**stamp, "age_s": round(time.time() - last["at"], 3)}


def _series(store, row: Mapping[str, Any], drift: Mapping[str, Any]) -> tuple[float | None, dict]:
    """The sentinel's median over every reading the store holds for the row's setting (device,
    runtime, threads, batch), and its readings by (run, n) -> (time, ms)."""
    rows = store.measurements(device=row["device"], space=drift["space"], config_hash=drift["config_hash"],
                              runtime=row["runtime"], threads=row["threads"], batch=row["batch"], latest_only=False,
                              sentinels=True)
    ref = float(statistics.median(r["median_ms"] for r in rows)) if rows else None
    readings = {(r["details"]["run"], r["details"]["n"]): (float(r["details"]["at"]), float(r["median_ms"]))
                for r in rows if r["details"].get("role") == ROLE and "run" in r["details"]}
    return ref, readings


def sentinel_at(drift: Mapping[str, Any], readings: Mapping[tuple, tuple[float, float]]) -> float:
    """The sentinel's reading at the time of a measurement stamped `drift`: interpolated between
    the reading before it and the next one of the same run when the store holds both (linear in
    time), else the reading before it."""
    before = readings.get((drift.get("run"), drift.get("n")))
    after = readings.get((drift.get("run"), (drift.get("n") or 0) + 1))
    if before is None or after is None or after[0] <= before[0]:
        return float(drift["ms"])
    w = min(max(float(drift.get("age_s", 0.0)) / (after[0] - before[0]), 0.0), 1.0)
    return before[1] + w * (after[1] - before[1])


def corrected_ms(store, rows: Iterable[Mapping[str, Any]]) -> tuple[list[float], int]:
    """Each row's median_ms corrected for drift (see the module's notes), and how many rows had
    a sentinel reading to correct by (the others keep their measured value)."""
    series: dict[tuple, tuple[float | None, dict]] = {}
    out, corrected = [], 0
    for r in rows:
        drift = (r.get("details") or {}).get("drift")
        if not drift or not drift.get("ms"):
            out.append(float(r["median_ms"]))
            continue
        key = (r["device"], drift["space"], drift["config_hash"], r["runtime"], r["threads"], r["batch"])
        if key not in series:
            series[key] = _series(store, r, drift)
        ref, readings = series[key]
        out.append(float(r["median_ms"]) * ref / sentinel_at(drift, readings) if ref else float(r["median_ms"]))
        corrected += ref is not None
    return out, corrected


def spread(readings: Iterable[float]) -> float | None:
    """Max over min of a run's sentinel readings, minus one (None below two readings)."""
    values = list(readings)
    return max(values) / min(values) - 1 if len(values) >= 2 and min(values) > 0 else None
