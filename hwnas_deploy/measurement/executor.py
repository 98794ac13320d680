"""Executors take a plan's jobs and give back outcomes; they never touch the store.

`InProcess` drives one device from this process (its driver opened on the first job and kept
until `close`). A lab's executor (`hwnas_deploy.lab.LabExecutor`) fans the same jobs out over
many devices; the loop in `measurement.loop` treats both alike.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from hwnas_deploy.devices import DoesNotFitError
from hwnas_deploy.errors import HwnasError
from hwnas_deploy.measurement.drift import SentinelWatch
from hwnas_deploy.measurement.plan import Job, Outcome, Plan
from hwnas_deploy.measurement.provenance import host_state
from hwnas_deploy.sim.twins import twinned_driver


class Executor(ABC):
    """Takes jobs, yields one `Outcome` per job it took (`settled(job)`: skip it, an earlier
    round already gave up on its network); `note` takes what went wrong where (a device lost, a
    retry), for the report and the user."""

    @abstractmethod
    def run(self, plan: Plan, jobs: list[Job], settled: Callable[[Job], bool],
            note: Callable[[str], None]) -> Iterator[Outcome]: ...

    def close(self) -> None:
        """Release what the executor holds (a driver, a twin)."""

    def describe(self) -> str:
        return type(self).__name__


class InProcess(Executor):
    """One device, driven from this process."""

    def __init__(self):
        self.driver = None
        self.device: str | None = None
        self.facts: dict = {}
        self.watch = SentinelWatch()

    def _open(self, plan: Plan):
        if self.driver is not None and self.device != plan.device.name:
            self.close()
        if self.driver is None:
            driver = twinned_driver(plan.device)
            try:
                self.facts = driver.open()
            except BaseException:
                driver.close()  # a twin started before the failure must not outlive it
                raise
            self.driver, self.device = driver, plan.device.name
            self.watch = SentinelWatch()  # a device (re)opened drifts on its own
        return self.driver

    def run(self, plan: Plan, jobs: list[Job], settled: Callable[[Job], bool],
            note: Callable[[str], None]) -> Iterator[Outcome]:
        for job in jobs:
            if settled(job):
                continue
            for attempt in (1, 2):
                out = self._take(plan, job, note)
                if out.error is None or out.artifact is None:  # measured, unfit, or its export failed
                    break
                twin_exited = getattr(self.driver, "twin_exited", None)
                if twin_exited is None or not twin_exited():
                    break  # a device's own error (it reconnects itself where it can)
                # the twin of this run died under the job: start a new one and try the job once more
                self.close()
                out.error += " (the device's twin had exited; a new one was started for the next network)"
                if attempt == 1:
                    note(f"{job.name}: the twin exited ({out.error.splitlines()[0]}); starting a new one, trying "
                         "again")
            yield out

    def _take(self, plan: Plan, job: Job, note: Callable[[str], None]) -> Outcome:
        driver = self._open(plan)  # a device that does not open ends the run, named
        out = Outcome(job)
        try:
            out.artifact = plan.export(job)
            out.sentinel, out.sentinel_artifact = self.watch.check(
                plan, driver, lambda: plan.export(plan.sentinel_job()), note)
            out.started, host = time.time(), host_state()
            out.summary = plan.run(driver, out.artifact)
            stamp = self.watch.stamp(plan)
            if stamp is not None:
                out.summary.details["drift"] = stamp
            out.env = {"device": self.facts, "host": {"start": host, "end": host_state()}}
        except DoesNotFitError as exc:
            out.unfit = (exc.reason, exc.details)
        except HwnasError as exc:
            out.error = str(exc)
        out.finished = time.time()
        out.started = out.started or out.finished
        return out

    def close(self) -> None:
        if self.driver is not None:
            driver, self.driver = self.driver, None
            driver.close()

    def describe(self) -> str:
        return "this process"
