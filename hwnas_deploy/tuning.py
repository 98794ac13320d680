"""`hwnas tune`: tune the TVM workloads of a space's sub-networks (or of models) for a device.

The networks are exported to ONNX, their distinct workloads extracted for the device's TVM target
(its CPU and the thread count measurements run with), and each tuned with meta-schedule
(`export.tvm_tuning.tune`) on the device itself: this host's CPU for a `server` profile, the board
behind a TVM RPC tracker for a `tvm-rpc` one (its twin, `rpc-local`, started and stopped here).
Every later `export --format tvm` and `profile --runtime tvm` builds from the database.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hwnas_deploy.devices import DeviceProfile, load_profile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.export.tvm import CROSS_TARGETS
from hwnas_deploy.export.tvm_tuning import (
    RpcRunner,
    TuneReport,
    Tuning,
    TuningDatabase,
    default_path,
    distinct,
    tune,
    workloads,
)
from hwnas_deploy.measurement import Network, SubNetwork

TUNABLE_KINDS = ("server", "tvm-rpc")


@dataclass
class NetworkTuning:
    """One network's share of the workloads: how many it has, how many the database now holds."""

    name: str
    workloads: int
    tuned: int


@dataclass
class TuningRun:
    report: TuneReport
    networks: list[NetworkTuning] = field(default_factory=list)


def tune_networks(device: str | DeviceProfile, networks: Sequence[Network], *, trials: int = 64,
                  threads: int | None = None, tuning_db: str | Path | None = None, store_url: str | None = None,
                  progress: bool = True, seed: int = 0) -> TuningRun:
    """Tune the workloads of `networks` for `device` up to `trials` records each, into the
    tuning database `tuning_db` (default: `export.tvm_tuning.default_path(store_url)`), created
    if needed. Resumable: workloads that hold the budget already are skipped."""
    prof = device if isinstance(device, DeviceProfile) else load_profile(device)
    if prof.kind not in TUNABLE_KINDS:
        raise ConfigError(f"device {prof.name!r} ({prof.kind}) runs no TVM libraries; tune for a device of kind "
                          f"{' or '.join(TUNABLE_KINDS)}")
    prof.require_runtime("tvm")
    if not networks:
        raise ConfigError("tune: no networks given (--space with --samples or --configs, or --model)")
    for net in networks:
        net.check_format("tvm")
    target = str(prof.hardware.get("target", "host"))
    database = TuningDatabase(tuning_db or default_path(store_url), create=True)
    tuning = Tuning(database, threads or prof.threads)
    spec = tuning.target(target)
    groups = network_workloads(networks, spec, progress)
    found = distinct([g for _, g in groups])
    cross_cc = CROSS_TARGETS[target]["cc"] if target != "host" else None
    if prof.kind == "tvm-rpc":
        from hwnas_deploy.sim.twins import resolve

        resolved, twin = resolve(prof)
        try:
            conn = resolved.connection
            if not conn.get("tracker"):
                raise ConfigError(f"device {prof.name!r}: connection needs 'tracker' (HOST:PORT) to tune through")
            rpc = RpcRunner(str(conn["tracker"]), str(conn.get("key", prof.name)),
                            float(conn.get("session_timeout_s", 60)))
            report = tune(found, database, spec, trials, rpc=rpc, cross_cc=cross_cc, progress=progress, seed=seed)
        finally:
            if twin is not None:
                twin.stop()
    else:
        report = tune(found, database, spec, trials, cross_cc=cross_cc, progress=progress, seed=seed)
    done = database.trials_by_workload(spec)
    shares = [NetworkTuning(name, len(g), sum(1 for w in g if done.get(w.shash))) for name, g in groups]
    return TuningRun(report, shares)


def tune_space(device: str | DeviceProfile, space: str, *, samples: int = 20, seed: int = 0,
               configs: list[Mapping] | None = None, **options) -> TuningRun:
    """`tune_networks` on `samples` sub-networks of `space` drawn from `seed` (or `configs`)."""
    from hwnas_deploy.spaces import get_space

    sp = get_space(space)
    if configs is None:
        if samples < 1:
            raise ConfigError(f"samples (--samples) must be at least 1, got {samples}")
        configs = sp.sample_unique(samples, seed)
    return tune_networks(device, [SubNetwork(sp, c) for c in configs], **options)


def network_workloads(networks: Sequence[Network], spec: dict, progress: bool = True) -> list[tuple[str, list]]:
    """(name, workloads for target `spec`) per network, through its ONNX export."""
    from tqdm import tqdm

    from hwnas_deploy.export.tvm import relax_module

    groups = []
    with tempfile.TemporaryDirectory(prefix="hwnas-tune-onnx-") as tmp:
        for net in tqdm(networks, desc="workloads", unit="net", disable=not progress):
            art = net.export("onnx", Path(tmp), batch=1)
            shape = tuple(art.inputs[0].shape)
            groups.append((getattr(net, "name", None) or net.config_hash,
                           workloads(relax_module(Path(art.path), shape), spec)))
    return groups
