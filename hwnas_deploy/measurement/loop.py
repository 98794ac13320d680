"""The one measurement loop: plan -> (executor: export, deploy, measure) -> record -> return.

    with Measurer("qemu-m7", store) as m:
        report = m.measure([SubNetwork("mcu-mbnet", cfg), ...], "firmware")
        report.median_ms(net)          # what was measured now, or what the store already had

The store is the record and the cache: what it holds for a key is not measured again (unless
`force`), every outcome is written as it arrives (a crash loses at most the measurements in
flight), and the report carries the measurements themselves, so no caller rebuilds a store key.
Without a store (`store=None`) nothing is skipped or recorded: the report is the only record.

`rounds` > 1 measures every network that many times, one round over all of them after the
other, so slow drifts of the host fall on every network alike; `median_ms` is then the median
over the rounds. A `sentinel` network measured at intervals records the drift itself beside every
measurement instead (`measurement.drift`), at the cost of a few per cent of the run.

Clients sharing a store (a lab's PostgreSQL, a SQLite file) measure each network once: a job is
claimed just before it is taken (`measurement.claims`); one another client holds waits until it
is stored, or until that client's claim lapses (it died) and is taken over.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hwnas_deploy.allowed import integer
from hwnas_deploy.devices import DeviceProfile, load_profile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.export import Artifact
from hwnas_deploy.export.tvm_tuning import Tuning, TuningDatabase, open_database
from hwnas_deploy.mcu.weights import check_weights
from hwnas_deploy.measurement.claims import Claims
from hwnas_deploy.measurement.drift import spread
from hwnas_deploy.measurement.executor import Executor, InProcess
from hwnas_deploy.measurement.network import Network
from hwnas_deploy.measurement.plan import Job, Outcome, Plan, default_artifacts_dir
from hwnas_deploy.runtimes import runtime_info
from hwnas_deploy.store import MeasurementKey, Store

CLAIM_POLL_S = 1.0  # how often a client looks again at networks another client is measuring


@dataclass
class Measurement:
    """A network's latency on one device/runtime: the rounds measured now and those stored."""

    key: MeasurementKey
    status: str = "pending"  # measured | stored | unfit | failed | pending (interrupted)
    rounds_ms: list[float] = field(default_factory=list)  # the median of each round, oldest first
    details: dict[str, Any] = field(default_factory=dict)  # the newest round's (per-layer counts, checks)
    reason: str | None = None  # why unfit / failed
    wall_s: float | None = None  # wall time of the newest deploy + measure taken now
    artifact: Artifact | None = None  # what was measured now

    @property
    def median_ms(self) -> float:
        """The median over rounds; infinite when there is none (the network does not fit, or it
        failed with nothing stored)."""
        return float(statistics.median(self.rounds_ms)) if self.rounds_ms else math.inf


@dataclass
class Report:
    planned: int
    results: dict[str, Measurement] = field(default_factory=dict)  # config hash -> its measurement
    measured: list[str] = field(default_factory=list)  # one entry per round taken now
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unfit: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    #: measurements per device, (device, network, start, end) per measurement, what went wrong where
    devices: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[str, str, float, float]] = field(default_factory=list)
    lab_events: list[str] = field(default_factory=list)
    #: the drift sentinel's readings taken now, in order, per device (the lab's, or the profile's)
    sentinel: dict[str, list[float]] = field(default_factory=dict)
    #: networks another client sharing the store measured (or found unfit) while this one ran
    by_others: list[str] = field(default_factory=list)

    def raise_if_interrupted(self) -> Report:
        """For callers that go on with the numbers (a search, a deploy): an interrupted
        measurement ends them too, instead of reading as networks that failed. What was
        measured is stored either way."""
        if self.interrupted:
            raise KeyboardInterrupt("the measurement was interrupted")
        return self

    def median_ms(self, network: Network | str) -> float:
        h = network if isinstance(network, str) else network.config_hash
        return self.results[h].median_ms if h in self.results else math.inf

    def line(self) -> str:
        runs = len(self.measured)
        nets = len(set(self.measured))
        text = f"measured {nets}" + (f" ({runs} runs)" if runs != nets else "")
        text += f", already stored {len(self.skipped)}, failed {len(self.failed)}"
        if self.by_others:
            text += f", measured by another client {len(self.by_others)}"
        if self.unfit:
            text += f", does not fit {len(self.unfit)}"
        text += f" of {self.planned} (interrupted)" if self.interrupted else f" of {self.planned}"
        spreads = [x for x in map(spread, self.sentinel.values()) if x is not None]
        if spreads:
            readings = sum(map(len, self.sentinel.values()))
            text += (f"; drift: the sentinel's {readings} readings spread {100 * max(spreads):.1f} %"
                     + (" (the most on one device)" if len(self.sentinel) > 1 else ""))
        return text


class Measurer:
    """Measures networks on one device through an executor (this process by default), recording
    into `store`. A context manager: `close()` releases the device (and stops a twin it started)."""

    def __init__(self, device: str | DeviceProfile, store: Store | None = None, *,
                 executor: Executor | None = None, artifacts_dir: str | Path | None = None,
                 progress: bool = True, tuning: str | Path | TuningDatabase | None = "auto"):
        self.device = device if isinstance(device, DeviceProfile) else load_profile(device)
        self.store = store
        #: TVM's tuning database ("auto": the one beside the store if there is one; None or "none":
        #: untuned), opened when a TVM plan is made
        self.tuning = tuning
        self.executor = executor or InProcess()
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir else default_artifacts_dir(store)
        self.progress = progress
        self._artifacts_writable = False
        self._known: dict[MeasurementKey, int] = {}  # rounds the store held when last read or written here
        self._unfit_known: set[MeasurementKey] = set()  # recorded unfit before a forced run

    def plan(self, runtime: str, threads: int | None = None, batch: int | None = None,
             weights: str = "generated", sentinel: Network | None = None,
             sentinel_every_s: float | None = None) -> Plan:
        runtime_info(runtime)  # an unknown runtime is named as such before the device's list is
        self.device.require_runtime(runtime)
        try:
            check_weights(weights)
        except ValueError as exc:
            raise ConfigError(f"--weights: {exc}") from None
        for name, value in (("threads", threads), ("batch", batch)):
            if value is not None:
                integer(1, text="an integer >= 1 (or none: the profile's)").check(value, f"{name} (--{name})")
        if sentinel_every_s is None:
            sentinel_every_s = self.device.sentinel_every_s
        elif not isinstance(sentinel_every_s, (int, float)) or not sentinel_every_s >= 0:
            raise ConfigError(f"sentinel interval (--sentinel-every) {sentinel_every_s!r}: allowed: seconds >= 0 "
                              "(0: no sentinel)")
        if not self._artifacts_writable:  # once: a search plans a measurement per generation
            try:
                self.artifacts_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.artifacts_dir):
                    pass
            except OSError as exc:
                raise ConfigError(f"artifacts folder (--artifacts) {self.artifacts_dir}: cannot write there "
                                  f"({exc.strerror or exc})") from None
            self._artifacts_writable = True
        threads = threads or self.device.threads
        return Plan(self.device, runtime, threads, batch or self.device.batch,
                    self.artifacts_dir, weights, sentinel, float(sentinel_every_s) if sentinel is not None else 0.0,
                    self._tuning(runtime, threads))

    def _tuning(self, runtime: str, threads: int) -> Tuning | None:
        """TVM builds from the tuning database when it holds records for this target and thread
        count; otherwise (or for other runtimes) none."""
        if runtime_info(runtime).format != "tvm" or self.tuning is None:
            return None
        database = open_database(self.tuning, self.store.url if self.store is not None else None)
        if database is None:
            return None
        tuning = Tuning(database, threads)
        return tuning if database.records(tuning.target(str(self.device.hardware.get("target", "host")))) else None

    def measure(self, networks: Sequence[Network], runtime: str, *, threads: int | None = None,
                batch: int | None = None, rounds: int = 1, force: bool = False, weights: str = "generated",
                on_measured: Callable[[Network, dict], None] | None = None, sentinel: Network | None = None,
                sentinel_every_s: float | None = None) -> Report:
        """Measure `networks` (see the module's notes). `weights="generated"` (latency only) lets
        an MCU board make the weights up instead of receiving them; "real" uploads them and
        checks the board's output against the float model too. `sentinel`: a network measured
        before the first job and again every `sentinel_every_s` seconds (the device kind's default:
        5 s on host CPUs, a minute on phones, none on MCU boards; and no sooner than 10x the last
        reading's duration), its reading stored beside each measurement."""
        if rounds < 1:
            raise ConfigError(f"rounds (--rounds) must be at least 1, got {rounds}")
        plan = self.plan(runtime, threads, batch, weights, sentinel, sentinel_every_s)
        unique = list({n.config_hash: n for n in networks}.values())
        report = Report(planned=len(unique))
        self._known, self._unfit_known = {}, set()
        todo = self._todo(plan, unique, report, rounds, force)
        if not todo:
            return report
        bar = tqdm(total=len(todo), disable=not self.progress, unit="run",
                   desc=f"{self.device.name} ({self.executor.describe()})")
        claims = Claims(self.store) if self.store is not None and self.store.shared else None
        deferred: list[Job] = []  # claimed by another client sharing the store

        def settled(job: Job) -> bool:
            if job.name in report.unfit or job.name in report.failed:  # an earlier round gave up on it
                bar.update(1)
                return True
            if claims is None:
                return False
            if not claims.take(job.key):
                deferred.append(job)
                return True
            if self._done_elsewhere(job, report):
                claims.release(job.key)
                bar.update(1)
                return True
            return False

        def note(text: str) -> None:
            report.lab_events.append(text)
            bar.write(text)

        self.executor.stage = bar.set_postfix_str
        try:
            pending = todo
            while pending:
                deferred.clear()
                for out in self.executor.run(plan, pending, settled, note):
                    self._record(plan, out, report, bar)
                    if claims is not None:
                        claims.release(out.job.key)
                    if out.summary is not None and on_measured is not None:
                        on_measured(out.job.network, out.summary.to_dict())
                    bar.set_postfix_str(out.job.name)
                    bar.update(1)
                pending = self._wait_for_others(list(deferred), claims, report, bar, note) if deferred else []
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            bar.close()
            self.executor.stage = Executor.stage
            if claims is not None:
                claims.close()
        return report

    def _done_elsewhere(self, job: Job, report: Report) -> bool:
        """Whether another client sharing the store measured the network (or found it unfit)
        since this one last read or wrote it (`_known`); `report` then carries what it stored."""
        result = report.results[job.name]
        unfit = None if job.key in self._unfit_known else self.store.unfit_record(job.key)
        if unfit is not None:
            result.status, result.reason, result.rounds_ms = "unfit", unfit["reason"], []
        else:
            rows = self.store.rounds(job.key)
            if len(rows) <= self._known.get(job.key, 0):
                return False
            self._known[job.key] = len(rows)
            result.rounds_ms = [r["median_ms"] for r in reversed(rows)]
            result.details = rows[0]["details"]
            if result.status != "measured":
                result.status = "stored"
        report.by_others.append(job.name)
        return True

    def _wait_for_others(self, waiting: list[Job], claims: Claims, report: Report, bar,
                         note: Callable[[str], None]) -> list[Job]:
        """Wait until the networks other clients hold are stored (nothing left to do) or their
        claims lapse (a client that died: these are ours to measure)."""
        note(f"{len(waiting)} network(s) are being measured by another client sharing the store: waiting for them")
        while waiting:
            free, held = [], []
            for job in waiting:
                if self._done_elsewhere(job, report):
                    bar.update(1)
                elif claims.holder(job.key) is None:
                    free.append(job)
                else:
                    held.append(job)
            if free:
                return free + held
            waiting = held
            if waiting:
                time.sleep(CLAIM_POLL_S)
        return []

    def _todo(self, plan: Plan, networks: list[Network], report: Report, rounds: int, force: bool) -> list[Job]:
        """The jobs still to take, round after round; what the store has fills `report` first."""
        per_key = []
        for net in networks:
            key = plan.key(net)
            result = report.results[net.config_hash] = Measurement(key)
            have = 0
            if self.store is not None and not force:
                unfit = self.store.unfit_record(key)
                if unfit is not None:  # known not to fit: skipped (`unfit` counts what this call found)
                    result.status, result.reason = "unfit", unfit["reason"]
                    report.skipped.append(key.config_hash)
                    continue
                rows = self.store.rounds(key)
                have = len(rows)
                if rows:
                    result.status = "stored"
                    result.rounds_ms = [r["median_ms"] for r in reversed(rows)]
                    result.details = rows[0]["details"]
                if have >= rounds:
                    report.skipped.append(key.config_hash)
            if self.store is not None and self.store.shared:  # for `_done_elsewhere`
                self._known[key] = self.store.measurement_count(key) if force else have
                if force and self.store.unfit_record(key) is not None:
                    self._unfit_known.add(key)
            per_key.append((Job(key, net), have))
        return [job for r in range(rounds) for job, have in per_key if have <= r]

    def _record(self, plan: Plan, out: Outcome, report: Report, bar) -> None:
        job, net = out.job, out.job.network
        if out.sentinel is not None:
            self._record_sentinel(plan, out, report)
        result = report.results[job.name]
        result.wall_s = out.finished - out.started
        result.artifact = out.artifact or result.artifact
        if out.summary is not None:
            if self.store is not None:
                env = {**out.env, "runtime": plan.runtime}
                if out.artifact is not None and out.artifact.extra.get("tvm_tuning"):
                    env["tvm_tuning"] = out.artifact.extra["tvm_tuning"]  # which records built it
                self.store.add_measurement(job.key, out.summary, device_kind=plan.device.kind,
                                           device_profile=plan.device.to_dict(), config=net.config, macs=net.macs,
                                           params=net.params, artifact=out.artifact, env=env)
            if result.status != "measured":  # a forced or further round replaces nothing stored
                result.status = "measured"
            result.rounds_ms.append(out.summary.median_ms)
            self._known[job.key] = self._known.get(job.key, 0) + 1
            result.details = out.summary.details
            report.measured.append(job.name)
            if out.device is not None:
                report.devices[out.device] = report.devices.get(out.device, 0) + 1
                report.timeline.append((out.device, job.name, out.started, out.finished))
        elif out.unfit is not None:
            reason, details = out.unfit
            if self.store is not None:
                self.store.add_unfit(job.key, reason, details, device_kind=plan.device.kind,
                                     device_profile=plan.device.to_dict(), config=net.config, macs=net.macs,
                                     params=net.params)
            result.status, result.reason, result.rounds_ms = "unfit", reason, []
            report.unfit[job.name] = reason
        else:
            result.status, result.reason = "failed", out.error  # rounds stored earlier still count
            report.failed[job.name] = out.error or "failed"
            if out.device is None:  # an executor with devices of its own has noted it
                bar.write(f"{job.name}: {out.error}")

    def _record_sentinel(self, plan: Plan, out: Outcome, report: Report) -> None:
        report.sentinel.setdefault(out.device or plan.device.name, []).append(out.sentinel.median_ms)
        if self.store is None:
            return
        sentinel = plan.sentinel
        self.store.add_measurement(plan.key(sentinel), out.sentinel, device_kind=plan.device.kind,
                                   device_profile=plan.device.to_dict(), config=sentinel.config, macs=sentinel.macs,
                                   params=sentinel.params, artifact=out.sentinel_artifact,
                                   env={**out.env, "runtime": plan.runtime})

    def close(self) -> None:
        self.executor.close()

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure(device: str | DeviceProfile, networks: Sequence[Network], runtime: str, store: Store | None = None,
            *, executor: Executor | None = None, artifacts_dir: str | Path | None = None, progress: bool = True,
            tuning: str | Path | TuningDatabase | None = "auto", **options) -> Report:
    """One call: open the device, measure `networks`, release it (see `Measurer.measure`)."""
    with Measurer(device, store, executor=executor, artifacts_dir=artifacts_dir, progress=progress,
                  tuning=tuning) as m:
        return m.measure(networks, runtime, **options)
