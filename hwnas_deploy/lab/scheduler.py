"""The lab's executor: a measurement run's jobs fanned out over the lab's devices of one profile.

The measurement loop (`hwnas_deploy.measurement`) stays the only writer: this executor gives back
one outcome per job and the loop records it, once. Exports run as Ray tasks on whichever host has
a free CPU (one per network, shared by its rounds), so the devices only deploy and time. A job
whose device reports an error is retried on another device of the profile (then on any), up to
`max_tries`; a device whose actor or host dies, or that cannot reconnect, leaves the run and its
job goes back to the queue. What was recorded stays recorded whatever happens, and a rerun
measures only what is missing.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterator

import ray

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.errors import DeviceError, ExportError, HwnasError
from hwnas_deploy.lab.cluster import connect, ensure_coordinator
from hwnas_deploy.lab.devices import lab_devices
from hwnas_deploy.measurement import Executor, Job, Outcome, Plan

MAX_TRIES = 3
#: exceptions that mean the actor (its process or its host) is gone
_LOST = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError)


def _export(plan: Plan, job: Job) -> tuple[Artifact, bytes]:
    artifact = plan.export(job)
    with open(artifact.path, "rb") as f:
        return artifact, f.read()


_export_task = ray.remote(num_cpus=1, max_retries=2)(_export)


class LabExecutor(Executor):
    """Measure on every device of the plan's profile in the lab at `address` (`hwnas lab up`)."""

    def __init__(self, address: str, max_tries: int = MAX_TRIES):
        self.address, self.max_tries = address, max_tries

    def describe(self) -> str:
        return f"lab {self.address}"

    def run(self, plan: Plan, jobs: list[Job], settled: Callable[[Job], bool],
            note: Callable[[str], None]) -> Iterator[Outcome]:
        connect(self.address)
        profile = plan.device.name
        alive = lab_devices(profile)
        if not alive:
            others = sorted({d.split("/")[1] for d in lab_devices()})
            raise DeviceError(f"lab {self.address}: no device of profile {profile!r} "
                              f"(the lab has: {', '.join(others) or 'none'})")
        coordinator = ensure_coordinator()
        client = f"{socket.gethostname()}:{os.getpid()}:{profile}"
        queue = deque(range(len(jobs)))
        tries = [0] * len(jobs)
        failed_on: list[set[str]] = [set() for _ in jobs]
        exports: dict[str, ray.ObjectRef] = {}
        inflight: dict[ray.ObjectRef, tuple[int, str]] = {}
        free = deque(alive)
        done_count = failed_count = 0

        def export_ref(job: Job) -> ray.ObjectRef:
            if job.name not in exports:
                exports[job.name] = _export_task.remote(plan, job)
            return exports[job.name]

        sentinel_job = plan.sentinel_job() if plan.sentinel_every_s > 0 else None
        sentinel = [export_ref(sentinel_job)] if sentinel_job is not None else None  # in a list: not resolved

        def give_up(i: int, why: str, device: str | None = None) -> Outcome:
            note(f"{jobs[i].name}: failed: {why}")
            return Outcome(jobs[i], error=why, device=device or "lab")

        try:
            while queue or inflight:
                for i in list(queue)[: 2 * len(alive) + 2]:  # exports ahead of the devices
                    if jobs[i].name not in exports:
                        export_ref(jobs[i])
                for dev in list(free):
                    pick = next((i for i in queue if dev not in failed_on[i]), None)
                    if pick is None:
                        pick = next(iter(queue), None) if all(failed_on[i] >= set(alive) for i in queue) else None
                    if pick is None:
                        continue
                    queue.remove(pick)
                    if settled(jobs[pick]):
                        continue
                    free.remove(dev)
                    ref = alive[dev].measure.remote(plan, jobs[pick], export_ref(jobs[pick]), sentinel)
                    inflight[ref] = (pick, dev)
                coordinator.report.remote(client, {"queued": len(queue), "running": len(inflight),
                                                   "done": done_count, "failed": failed_count,
                                                   "devices": len(alive)})
                if not inflight:
                    if queue and not alive:
                        for i in list(queue):
                            failed_count += 1
                            yield give_up(i, f"no device of profile {profile!r} is left in the lab")
                        queue.clear()
                    continue
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
                for ref in ready:
                    i, dev = inflight.pop(ref)
                    job = jobs[i]
                    try:
                        result = ray.get(ref)
                    except _LOST as exc:
                        alive.pop(dev, None)
                        note(f"{dev}: lost ({type(exc).__name__}); its job {job.name} goes back to the queue")
                        tries[i] += 1
                        if tries[i] >= self.max_tries:
                            failed_count += 1
                            yield give_up(i, f"tried {tries[i]} times; last: {dev} lost", dev)
                        else:
                            queue.appendleft(i)
                        continue
                    except ray.exceptions.RayTaskError as exc:  # the export failed: the network's fault
                        cause = exc.cause if isinstance(exc.cause, HwnasError) else ExportError(str(exc))
                        free.append(dev)
                        failed_count += 1
                        yield give_up(i, str(cause), dev)
                        continue
                    for text in result.get("notes", ()):
                        note(f"{dev}: {text}")
                    if "summary" in result or "unfit" in result:
                        free.append(dev)
                        done_count += 1
                        artifact = ray.get(exports[job.name])[0] if "summary" in result else None
                        reading = result.get("sentinel")
                        yield Outcome(job, summary=result.get("summary"), artifact=artifact,
                                      env=result.get("env", {}), device=dev,
                                      unfit=(result["unfit"], result["details"]) if "unfit" in result else None,
                                      started=result.get("started", 0.0), finished=result.get("finished", 0.0),
                                      sentinel=reading,
                                      sentinel_artifact=ray.get(sentinel[0])[0] if reading is not None else None)
                        continue
                    # "error": retry elsewhere; "down": the device could not reconnect
                    tries[i] += 1
                    failed_on[i].add(dev)
                    why = result.get("error") or result.get("down")
                    if "down" in result:
                        alive.pop(dev, None)
                        note(f"{dev}: down ({why}); it takes no more jobs")
                    else:
                        free.append(dev)
                        note(f"{job.name} on {dev}: {why}; retrying elsewhere")
                    if tries[i] >= self.max_tries:
                        failed_count += 1
                        yield give_up(i, f"tried {tries[i]} times; last: {why}", dev)
                    else:
                        queue.appendleft(i)
        finally:
            coordinator.report.remote(client, None)
