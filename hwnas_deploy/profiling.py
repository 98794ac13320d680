"""Profile sub-networks of a space on a device: sample -> export -> deploy -> measure -> store.

Resumable by construction: the sub-networks are drawn from `seed`, and every (device, runtime,
config, threads, batch) already in the store is skipped (unless `force`). Each measurement is
committed on its own, so an interrupted run loses only the sub-network in flight; running the
same call again picks up where it stopped.

`rounds` > 1 measures every sub-network that many times, one round over all of them after the
other, so slow drifts of the host (clock, temperature, other load) fall on every network alike;
predictors then take the median over rounds (`predictors.from_store`). A sub-network with fewer
measurements than rounds is measured again on the next run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hwnas_deploy.devices import DeviceProfile, DoesNotFitError, driver_for, load_profile
from hwnas_deploy.errors import ConfigError, HwnasError
from hwnas_deploy.export import Artifact, artifact_filename, export_subnet
from hwnas_deploy.export.artifact import sha256_file
from hwnas_deploy.measure import Summary
from hwnas_deploy.runtimes import runtime_info
from hwnas_deploy.spaces import SearchSpace, get_space
from hwnas_deploy.store import MeasurementKey, Store


@dataclass
class ProfileReport:
    planned: int
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unfit: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    #: on a lab: measurements per device, (device, network, start, end) per measurement, and
    #: what went wrong where (retries, devices lost)
    devices: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[str, str, float, float]] = field(default_factory=list)
    lab_events: list[str] = field(default_factory=list)

    def line(self) -> str:
        runs = len(self.measured)
        nets = len(set(self.measured))
        text = f"measured {nets}" + (f" ({runs} runs)" if runs != nets else "")
        text += f", already stored {len(self.skipped)}, failed {len(self.failed)}"
        if self.unfit:
            text += f", does not fit {len(self.unfit)}"
        return text + (f" of {self.planned} (interrupted)" if self.interrupted else f" of {self.planned}")


def default_artifacts_dir(store: Store) -> Path:
    """`artifacts/` beside a SQLite file; a temporary folder for other databases."""
    database = store.engine.url.database if store.engine.dialect.name == "sqlite" else None
    if database:
        return Path(database).parent / "artifacts"
    return Path(tempfile.gettempdir()) / "hwnas-artifacts"


def _cached_artifact(path: Path) -> Artifact | None:
    """The artifact already at `path`, if its record is there and its file is intact."""
    try:
        art = Artifact.load(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return art if path.exists() and sha256_file(path) == art.sha256 else None


def sample_fitting(sp: SearchSpace, prof: DeviceProfile, n: int, seed: int, max_draws: int = 200) -> list[dict]:
    """`n` distinct sub-networks whose estimated int8 activations and weights fit the device."""
    sram, flash = prof.hardware.get("sram_bytes"), prof.hardware.get("flash_bytes")
    if sram is None and flash is None:
        raise ConfigError(f"device {prof.name!r} states no sram_bytes/flash_bytes budget to fit")

    def fits(cfg: dict) -> bool:
        return (sram is None or sp.peak_activation_bytes(cfg) <= sram) and (
            flash is None or sp.params_count(cfg) <= flash
        )

    try:
        return sp.sample_unique(n, seed, accept=fits, max_draws=max_draws * n)
    except ConfigError:
        raise ConfigError(f"fewer than {n} sampled sub-networks of {sp.name} fit {prof.name}'s budget") from None


@dataclass(frozen=True)
class Job:
    """One measurement to take: which network, on which device, with which runtime."""

    key: MeasurementKey
    config: dict


@dataclass(frozen=True)
class Plan:
    """How `profile` measures: the device, the space, what to export and where it goes."""

    device: DeviceProfile
    space: SearchSpace
    runtime: str
    threads: int
    batch: int
    artifacts_dir: Path

    @property
    def format(self) -> str:
        return runtime_info(self.runtime).format

    @property
    def target(self) -> str:
        """TVM libraries are compiled for the device's target (a remote board's, over RPC)."""
        return str(self.device.hardware.get("target", "host")) if self.format == "tvm" else "host"

    def artifact_path(self, job: Job) -> Path:
        stem = f"{self.space.name}-{job.key.config_hash}-b{self.batch}"
        return self.artifacts_dir / artifact_filename(stem, self.format, self.target)

    def export(self, job: Job) -> Artifact:
        """The job's artifact: the verified one already in the artifacts folder, else a new export."""
        return _cached_artifact(self.artifact_path(job)) or export_subnet(
            self.space, job.config, self.format, self.artifacts_dir, batch=self.batch, target=self.target)

    def run(self, driver, artifact: Artifact) -> Summary:
        """Deploy and time one artifact on an opened driver (DoesNotFitError, HwnasError)."""
        return driver.measure(driver.deploy(artifact, self.threads), self.device.settings)

    def record(self, store: Store, job: Job, summary: Summary, artifact: Artifact, env: Mapping) -> None:
        store.add_measurement(job.key, summary, device_kind=self.device.kind, device_profile=self.device.to_dict(),
                              config=job.config, macs=self.space.macs(job.config),
                              params=self.space.params_count(job.config), artifact=artifact, env=dict(env))

    def record_unfit(self, store: Store, job: Job, exc: DoesNotFitError) -> None:
        store.add_unfit(job.key, exc.reason, exc.details, device_kind=self.device.kind,
                        device_profile=self.device.to_dict(), config=job.config, macs=self.space.macs(job.config),
                        params=self.space.params_count(job.config))


def plan_jobs(plan: Plan, configs: list[Mapping], store: Store, report: ProfileReport, *, rounds: int = 1,
              force: bool = False) -> list[Job]:
    """The measurements still to take, round after round; what the store has is `report.skipped`."""
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    sp, prof = plan.space, plan.device
    per_key = []
    for cfg in configs:
        cfg = sp.canonical(cfg)
        key = MeasurementKey(prof.name, sp.name, sp.config_hash(cfg), plan.runtime, plan.threads, plan.batch)
        if store.unfit_record(key) is not None and not force:
            report.skipped.append(key.config_hash)
            continue
        have = 0 if force else store.measurement_count(key)
        if have >= rounds:
            report.skipped.append(key.config_hash)
        per_key.append((Job(key, cfg), have))
    return [job for r in range(rounds) for job, have in per_key if have <= r]


def profile(
    device: str | DeviceProfile,
    space: str | SearchSpace,
    samples: int,
    runtime: str,
    store: Store,
    *,
    seed: int = 0,
    configs: list[Mapping] | None = None,
    threads: int | None = None,
    batch: int | None = None,
    force: bool = False,
    artifacts_dir: str | Path | None = None,
    progress: bool = True,
    only_fitting: bool = False,
    on_measured: Callable[[str, dict], None] | None = None,
    rounds: int = 1,
    lab: str | None = None,
) -> ProfileReport:
    """Measure `samples` sub-networks of `space` (drawn from `seed`, or the given `configs`).

    `only_fitting` draws only sub-networks whose estimated int8 footprint fits the device's
    `hardware.sram_bytes` / `flash_bytes` (the estimate is the space's; what the device then
    refuses is recorded as not fitting). `lab`: the address of a hardware lab (`hwnas lab up`)
    whose devices of this profile take the measurements in parallel; the store stays this one."""
    prof = device if isinstance(device, DeviceProfile) else load_profile(device)
    sp = space if isinstance(space, SearchSpace) else get_space(space)
    runtime_info(runtime)  # an unknown runtime is named as such before the device's list is
    prof.require_runtime(runtime)
    if configs is None:
        if samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {samples}")
        configs = sample_fitting(sp, prof, samples, seed) if only_fitting else sp.sample_unique(samples, seed)
    plan = Plan(prof, sp, runtime, threads or prof.threads, batch or prof.batch,
                Path(artifacts_dir) if artifacts_dir else default_artifacts_dir(store))
    report = ProfileReport(planned=len(configs))
    todo = plan_jobs(plan, configs, store, report, rounds=rounds, force=force)
    if not todo:
        return report
    if lab is not None:
        from hwnas_deploy.lab import run_jobs

        run_jobs(lab, plan, todo, store, report, progress=progress, on_measured=on_measured)
        return report

    driver = driver_for(prof)
    env = {"device": driver.open(), "runtime": runtime}
    bar = tqdm(total=len(todo), disable=not progress, unit="run", desc=prof.name)
    try:
        for job in todo:
            key = job.key
            bar.set_postfix_str(key.config_hash)
            if key.config_hash in report.unfit or key.config_hash in report.failed:  # an earlier round said so
                bar.update(1)
                continue
            try:
                artifact = plan.export(job)
                summary = plan.run(driver, artifact)
            except DoesNotFitError as exc:
                plan.record_unfit(store, job, exc)
                report.unfit[key.config_hash] = exc.reason
            except HwnasError as exc:
                report.failed[key.config_hash] = str(exc)
                bar.write(f"{key.config_hash}: {exc}")
            else:
                plan.record(store, job, summary, artifact, env)
                report.measured.append(key.config_hash)
                if on_measured is not None:
                    on_measured(key.config_hash, summary.to_dict())
            bar.update(1)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        driver.close()
    return report
