"""Revalidation: measure a sample of what the store holds again, and say which stored figures no
longer hold.

A runtime upgrade can change latencies 2x, a firmware release changes instruction counts, a
host moves: `revalidate` draws `sample` stored networks of one device and runtime, measures each
again (recorded as a further round), and flags a figure as drifted when the two measurements'
confidence intervals of the median do not overlap (`|now - stored| > stored x ci + now x ci`; a
board counting instructions has ci 0, so any change shows), and a version change when the
runtime's or firmware's version differs (`provenance.provenance_row`). Predictors refuse to mix
versions silently (`predictors.from_store`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hwnas_deploy.devices import DeviceProfile, load_profile
from hwnas_deploy.errors import ConfigError, UnknownNameError
from hwnas_deploy.measurement.loop import Measurer
from hwnas_deploy.measurement.network import SubNetwork
from hwnas_deploy.measurement.provenance import provenance_row
from hwnas_deploy.spaces import get_space


@dataclass
class Revalidation:
    config_hash: str
    space: str
    stored_ms: float
    now_ms: float
    stored_ci: float  # relative half-widths of the medians' 95 % intervals
    now_ci: float
    stored_version: str
    now_version: str

    @property
    def change(self) -> float:
        return self.now_ms / self.stored_ms - 1

    @property
    def drifted(self) -> bool:
        return abs(self.now_ms - self.stored_ms) > self.stored_ms * self.stored_ci + self.now_ms * self.now_ci

    @property
    def version_changed(self) -> bool:
        return self.stored_version != self.now_version

    def to_dict(self) -> dict:
        return {**asdict(self), "change": self.change, "drifted": self.drifted,
                "version_changed": self.version_changed}


def _ci(row_or_summary) -> float:
    ci = row_or_summary.get("ci_rel") if isinstance(row_or_summary, dict) else row_or_summary
    return float(ci) if ci is not None and np.isfinite(ci) else 0.0


def revalidate(device: str | DeviceProfile, runtime: str, store, sample: int = 10, *, space: str | None = None,
               threads: int | None = None, batch: int | None = None, seed: int = 0,
               progress: bool = True) -> list[Revalidation]:
    """Measure `sample` of the store's networks on (device, runtime, threads, batch) again, drawn
    from `seed` among those of the toolchain's spaces (or `space`), and compare (see the module's
    notes). The new measurements are stored as further rounds."""
    prof = device if isinstance(device, DeviceProfile) else load_profile(device)
    if sample < 1:
        raise ConfigError(f"sample (--sample) must be at least 1, got {sample}")
    threads, batch = threads or prof.threads, batch or prof.batch
    rows = store.measurements(device=prof.name, runtime=runtime, threads=threads, batch=batch, space=space)
    known = []
    for r in rows:
        try:
            known.append((r, get_space(r["space"])))
        except UnknownNameError:  # a user's model, a LUT block: the store holds no way to rebuild it
            continue
    if not known:
        raise ConfigError(f"the store holds no measurements of a search space's networks on {prof.name}/{runtime} "
                          f"({threads} thread(s), batch {batch}){f' in space {space!r}' if space else ''} to revalidate")
    picks = np.random.default_rng(seed).permutation(len(known))[:sample]
    chosen = [known[i] for i in sorted(picks)]
    nets = [SubNetwork(sp, r["config"]) for r, sp in chosen]
    with Measurer(prof, store, progress=progress) as m:
        report = m.measure(nets, runtime, threads=threads, batch=batch, force=True).raise_if_interrupted()
    latest = {r["config_hash"]: r for r in store.measurements(device=prof.name, runtime=runtime, threads=threads,
                                                              batch=batch)}
    out = []
    for (row, _), net in zip(chosen, nets, strict=True):
        result = report.results[net.config_hash]
        if result.status != "measured":
            continue
        now = latest[net.config_hash]
        out.append(Revalidation(net.config_hash, net.space, float(row["median_ms"]), float(now["median_ms"]),
                                _ci(row), _ci(now), provenance_row(row)["version"], provenance_row(now)["version"]))
    return out
