"""Fan a profiling run's jobs out over the lab's devices of one profile; results into one store.

This process is the only writer: a job's measurement is stored when its result comes back, once.
Exports run as Ray tasks on whichever host has a free CPU (one per network, shared by its rounds),
so the devices only deploy and time. A job whose device reports an error is retried on another
device of the profile (then on any), up to `max_tries`; a device whose actor or host dies, or
that cannot reconnect, leaves the run and its job goes back to the queue. What was stored stays
stored whatever happens, and a rerun measures only what is missing.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable

import ray
from tqdm import tqdm

from hwnas_deploy.devices import DoesNotFitError
from hwnas_deploy.errors import DeviceError, ExportError, HwnasError
from hwnas_deploy.export.artifact import Artifact
from hwnas_deploy.lab.cluster import connect, ensure_coordinator
from hwnas_deploy.lab.devices import lab_devices
from hwnas_deploy.profiling import Job, Plan, ProfileReport
from hwnas_deploy.store import Store

MAX_TRIES = 3
#: exceptions that mean the actor (its process or its host) is gone
_LOST = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError)


def _export(plan: Plan, job: Job) -> tuple[Artifact, bytes]:
    artifact = plan.export(job)
    with open(artifact.path, "rb") as f:
        return artifact, f.read()


_export_task = ray.remote(num_cpus=1, max_retries=2)(_export)


def run_jobs(address: str, plan: Plan, jobs: list[Job], store: Store, report: ProfileReport, *,
             progress: bool = True, on_measured: Callable[[str, dict], None] | None = None,
             max_tries: int = MAX_TRIES, log: Callable[[str], None] | None = None) -> None:
    """Measure `jobs` on the lab at `address`; fills `report` as `profiling.profile` does, plus
    `report.devices` (jobs measured per device) and `report.lab_events` (what went wrong where)."""
    connect(address)
    profile = plan.device.name
    alive = lab_devices(profile)
    if not alive:
        others = sorted({d.split("/")[1] for d in lab_devices()})
        raise DeviceError(f"lab {address}: no device of profile {profile!r} "
                          f"(the lab has: {', '.join(others) or 'none'})")
    coordinator = ensure_coordinator()
    client = f"{socket.gethostname()}:{os.getpid()}:{profile}"
    report.devices = {d: 0 for d in alive}
    report.lab_events = []
    bar = tqdm(total=len(jobs), disable=not progress, unit="run", desc=f"lab {profile} x{len(alive)}")

    def note(text: str) -> None:
        report.lab_events.append(text)
        (log or bar.write)(text)

    queue = deque(range(len(jobs)))
    tries = [0] * len(jobs)
    failed_on: list[set[str]] = [set() for _ in jobs]
    exports: dict[str, ray.ObjectRef] = {}
    inflight: dict[ray.ObjectRef, tuple[int, str]] = {}
    free = deque(alive)

    def export_ref(job: Job) -> ray.ObjectRef:
        h = job.key.config_hash
        if h not in exports:
            exports[h] = _export_task.remote(plan, job)
        return exports[h]

    def settled(i: int) -> bool:  # an earlier round of this network did not fit or failed for good
        h = jobs[i].key.config_hash
        return h in report.unfit or h in report.failed

    def give_up(i: int, why: str) -> None:
        report.failed[jobs[i].key.config_hash] = why
        note(f"{jobs[i].key.config_hash}: failed: {why}")
        bar.update(1)

    def publish() -> None:
        coordinator.report.remote(client, {"queued": len(queue), "running": len(inflight),
                                           "done": len(report.measured), "failed": len(report.failed),
                                           "devices": len(alive)})

    try:
        while queue or inflight:
            for i in list(queue)[: 2 * len(alive) + 2]:  # exports ahead of the devices
                if not settled(i):
                    export_ref(jobs[i])
            for dev in list(free):
                pick = next((i for i in queue if dev not in failed_on[i]), None)
                if pick is None:
                    pick = next(iter(queue), None) if all(failed_on[i] >= set(alive) for i in queue) else None
                if pick is None:
                    continue
                queue.remove(pick)
                if settled(pick):
                    bar.update(1)
                    continue
                free.remove(dev)
                ref = alive[dev].measure.remote(plan, jobs[pick], export_ref(jobs[pick]))
                inflight[ref] = (pick, dev)
            publish()
            if not inflight:
                if queue and not alive:
                    for i in list(queue):
                        give_up(i, f"no device of profile {profile!r} is left in the lab")
                    queue.clear()
                continue
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
            for ref in done:
                i, dev = inflight.pop(ref)
                job = jobs[i]
                try:
                    result = ray.get(ref)
                except _LOST as exc:
                    alive.pop(dev, None)
                    note(f"{dev}: lost ({type(exc).__name__}); its job {job.key.config_hash} goes back to the queue")
                    tries[i] += 1
                    if tries[i] >= max_tries:
                        give_up(i, f"tried {tries[i]} times; last: {dev} lost")
                    else:
                        queue.appendleft(i)
                    continue
                except ray.exceptions.RayTaskError as exc:  # the export failed: the network's fault, not a device's
                    cause = exc.cause if isinstance(exc.cause, HwnasError) else ExportError(str(exc))
                    free.append(dev)
                    give_up(i, str(cause))
                    continue
                if "summary" in result:
                    artifact, _ = ray.get(exports[job.key.config_hash])
                    plan.record(store, job, result["summary"], artifact, {**result["env"], "runtime": plan.runtime})
                    report.measured.append(job.key.config_hash)
                    report.devices[dev] += 1
                    report.timeline.append((dev, job.key.config_hash, result["started"], result["finished"]))
                    if on_measured is not None:
                        on_measured(job.key.config_hash, result["summary"].to_dict())
                    bar.update(1)
                    free.append(dev)
                elif "unfit" in result:
                    plan.record_unfit(store, job, DoesNotFitError(result["unfit"], result["details"]))
                    report.unfit[job.key.config_hash] = result["unfit"]
                    bar.update(1)
                    free.append(dev)
                else:  # "error": retry elsewhere; "down": the device could not reconnect
                    tries[i] += 1
                    failed_on[i].add(dev)
                    why = result.get("error") or result.get("down")
                    if "down" in result:
                        alive.pop(dev, None)
                        note(f"{dev}: down ({why}); it takes no more jobs")
                    else:
                        free.append(dev)
                        note(f"{job.key.config_hash} on {dev}: {why}; retrying elsewhere")
                    if tries[i] >= max_tries:
                        give_up(i, f"tried {tries[i]} times; last: {why}")
                    else:
                        queue.appendleft(i)
            bar.set_postfix_str(f"{len(alive)} devices, {len(queue)} queued")
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        coordinator.report.remote(client, None)
