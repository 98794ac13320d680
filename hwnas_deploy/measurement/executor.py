"""Executors take a plan's jobs and give back outcomes; they never touch the store.

`InProcess` drives one device from this process (its driver opened on the first job and kept
until `close`); where the device's timing is not this host's CPU's (`DeviceProfile.pipeline`) it
exports the next networks in threads while the current one is deployed and measured, as many
ahead as conversions run side by side.
A lab's executor (`hwnas_deploy.lab.LabExecutor`) fans the same jobs out over
many devices; the loop in `measurement.loop` treats both alike.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future

from hwnas_deploy.devices import DoesNotFitError
from hwnas_deploy.errors import HwnasError
from hwnas_deploy.export.tflite import parallel_conversions
from hwnas_deploy.measurement.drift import SentinelWatch
from hwnas_deploy.measurement.plan import Job, Outcome, Plan
from hwnas_deploy.measurement.provenance import host_state
from hwnas_deploy.sim.twins import twinned_driver

#: the name of the threads that export ahead of the measurement
EXPORT_THREAD = "hwnas-export"


def exports_under_way() -> bool:
    """Whether an export ahead of a (stopped) run is still running in this process. Finalising
    the interpreter under one that is inside torch's C++ aborts the process (std::terminate):
    a command that ends with one under way leaves by os._exit once its clean-up is done (the CLI
    does)."""
    return any(t.name == EXPORT_THREAD and t.is_alive() for t in threading.enumerate())


def _in_thread(fn: Callable, *args) -> Future:
    """`fn(*args)` in a daemon thread: an interrupted run exits without waiting for an export it
    no longer needs (the run's clean-up ends the converter under it)."""
    future: Future = Future()

    def work() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 -- handed to whoever takes the result
                future.set_exception(exc)

    threading.Thread(target=work, name=EXPORT_THREAD, daemon=True).start()
    return future


class Executor(ABC):
    """Takes jobs, yields one `Outcome` per job it took (`settled(job)`: skip it, an earlier
    round already gave up on its network); `note` takes what went wrong where (a device lost, a
    retry), for the report and the user."""

    @abstractmethod
    def run(self, plan: Plan, jobs: list[Job], settled: Callable[[Job], bool],
            note: Callable[[str], None]) -> Iterator[Outcome]: ...

    #: told what is under way now ("measuring X, exporting Y"), for a progress bar
    stage: Callable[[str], None] = staticmethod(lambda text: None)

    def close(self) -> None:
        """Release what the executor holds (a driver, a twin)."""

    def describe(self) -> str:
        return type(self).__name__


class InProcess(Executor):
    """One device, driven from this process."""

    def __init__(self, pipeline: bool | None = None):
        self.driver = None
        self.device: str | None = None
        self.facts: dict = {}
        self.watch = SentinelWatch()
        self.pipeline = pipeline  # None: the device profile's

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

    def _ahead(self, plan: Plan, jobs: list[Job],
               settled: Callable[[Job], bool]) -> Iterator[tuple[Job, Future | None]]:
        """The jobs to take, each with its export already under way in a thread where the device
        pipelines (as many ahead as conversions run side by side: `parallel_conversions()`),
        else with none (exported when taken)."""
        if not (plan.device.pipeline if self.pipeline is None else self.pipeline):
            yield from ((job, None) for job in jobs if not settled(job))
            return
        queue, pending, ahead = deque(jobs), deque(), parallel_conversions()

        def fill(current: str | None) -> None:
            while queue and len(pending) < ahead:
                if queue[0].name in {current, *(j.name for j, _ in pending)}:
                    return  # its next round waits for this one's outcome (unfit, failed)
                job = queue.popleft()
                if not settled(job):
                    pending.append((job, _in_thread(plan.export, job)))

        fill(None)
        while pending:
            job, export = pending.popleft()
            fill(job.name)  # the next exports start before this job is measured
            if pending:
                self.stage(f"measuring {job.name}, exporting {', '.join(j.name for j, _ in pending)}")
            yield job, export
            if not pending:
                fill(None)

    def run(self, plan: Plan, jobs: list[Job], settled: Callable[[Job], bool],
            note: Callable[[str], None]) -> Iterator[Outcome]:
        for job, export in self._ahead(plan, jobs, settled):
            for attempt in (1, 2):
                out = self._take(plan, job, note, export if attempt == 1 else None)
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

    def _take(self, plan: Plan, job: Job, note: Callable[[str], None], export: Future | None = None) -> Outcome:
        driver = self._open(plan)  # a device that does not open ends the run, named
        out = Outcome(job)
        try:
            out.artifact = plan.export(job) if export is None else export.result()
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
