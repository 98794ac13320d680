"""How a measurement is taken: one device, one runtime, threads and batch, an artifacts folder.

A `Plan` turns a `Job` (a network and its store key) into an artifact (exported once, kept in the
artifacts folder and reused while its checksum holds) and times it on an opened driver. What comes
back from any executor is an `Outcome`: a measurement, a network the device cannot hold, or an
error, never an exception, so that the loop that records them is the same for every executor.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas_deploy.artifact import exporter_digest, sha256_file
from hwnas_deploy.devices import DeviceProfile
from hwnas_deploy.export import EXPORT_LOCK, Artifact
from hwnas_deploy.measure import Summary
from hwnas_deploy.measurement.network import Network
from hwnas_deploy.runtimes import runtime_info
from hwnas_deploy.store import MeasurementKey


def default_artifacts_dir(store) -> Path:
    """`artifacts/` beside a SQLite file; a temporary folder for other databases (or none)."""
    engine = getattr(store, "engine", None)
    database = engine.url.database if engine is not None and engine.dialect.name == "sqlite" else None
    if database:
        return Path(database).parent / "artifacts"
    return Path(tempfile.gettempdir()) / "hwnas-artifacts"


def cached_artifact(path: Path) -> Artifact | None:
    """The artifact already at `path`, if its record is there, its file is intact and the code
    that made it is this one (`exporter_digest`: an upgrade or a fixed converter exports again)."""
    try:
        art = Artifact.load(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fresh = art.exporter == exporter_digest()
    return art if fresh and path.exists() and sha256_file(path) == art.sha256 else None


@dataclass(frozen=True)
class Job:
    """One measurement to take: which network, under which store key."""

    key: MeasurementKey
    network: Network

    @property
    def name(self) -> str:
        return self.key.config_hash


@dataclass
class Outcome:
    """What taking one job gave. Exactly one of `summary`, `unfit`, `error` is set."""

    job: Job
    summary: Summary | None = None
    artifact: Artifact | None = None
    env: dict[str, Any] = field(default_factory=dict)
    unfit: tuple[str, dict] | None = None  # (reason, numbers)
    error: str | None = None
    device: str | None = None  # the lab device that took it
    #: a sentinel reading taken just before this job (stored as the sentinel's own measurement)
    sentinel: Summary | None = None
    sentinel_artifact: Artifact | None = None
    started: float = 0.0  # deploy + measure (the export before is not counted)
    finished: float = 0.0


@dataclass(frozen=True)
class Plan:
    device: DeviceProfile
    runtime: str
    threads: int
    batch: int
    artifacts_dir: Path
    #: "generated": a device behind a slow link makes the weights up (latency only), "real"
    weights: str = "real"
    #: measured before a device's first job and whenever its last reading is this old
    #: (`measurement.drift`); none, or 0 s: no drift readings
    sentinel: Network | None = None
    sentinel_every_s: float = 0.0
    #: TVM libraries built from a tuning database (`export.tvm_tuning.Tuning`); stored under the
    #: runtime `tvm@<database id>`, so tuned and untuned latencies never mix
    tuning: Any = None

    @property
    def format(self) -> str:
        return runtime_info(self.runtime).format

    @property
    def stored_runtime(self) -> str:
        """The runtime in the store's key: `tvm@<id>` for libraries built with a tuning database."""
        return self.runtime if self.tuning is None else f"{self.runtime}@{self.tuning.database.id}"

    @property
    def target(self) -> str:
        """TVM libraries are compiled for the device's target (a remote board's, over RPC)."""
        return str(self.device.hardware.get("target", "host")) if self.format == "tvm" else "host"

    def key(self, network: Network) -> MeasurementKey:
        return MeasurementKey(self.device.name, network.space, network.config_hash, self.stored_runtime,
                              self.threads, self.batch)

    def export(self, job: Job) -> Artifact:
        """The job's artifact: the verified one already in the artifacts folder, else a new export
        (a tuned library also when the tuning database has gained records since it was built)."""
        net = job.network
        folder = self.artifacts_dir
        if self.tuning is not None:
            folder = folder / f"tvm-tuned-{self.tuning.database.id}-t{self.threads}"
        with EXPORT_LOCK:
            art = cached_artifact(net.artifact_path(folder, self.format, self.batch, self.target))
            if art is not None and self.tuning is not None:
                used = art.extra.get("tvm_tuning") or {}
                if used.get("records") != self.tuning.database.records(self.tuning.target(self.target)):
                    art = None
            tuned = {"tuning": self.tuning} if self.tuning is not None else {}  # a Network of older code takes none
            return art or net.export(self.format, folder, batch=self.batch, target=self.target, **tuned)

    def sentinel_job(self) -> Job | None:
        return None if self.sentinel is None else Job(self.key(self.sentinel), self.sentinel)

    def run(self, driver, artifact: Artifact) -> Summary:
        """Deploy and time one artifact on an opened driver (DoesNotFitError, HwnasError)."""
        return driver.measure(driver.deploy(artifact, self.threads, self.weights), self.device.settings)
