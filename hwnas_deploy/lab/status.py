"""What a lab is doing: its devices (busy / free / down), each client's queue, the failures."""

from __future__ import annotations

from typing import Any

import ray

from hwnas_deploy.lab.cluster import connect, ensure_coordinator
from hwnas_deploy.lab.devices import lab_devices


def status(address: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """{"devices": [one row per device], "queue": {client: counts}, "hosts": [alive Ray nodes]}."""
    connect(address)
    rows = []
    coordinator = ensure_coordinator()
    live = lab_devices()
    for device_id in sorted(set(ray.get(coordinator.announced.remote(), timeout=timeout_s)) - set(live)):
        rows.append(_down(device_id, "its actor or host is gone"))
    for device_id, actor in live.items():
        try:
            rows.append(ray.get(actor.state.remote(), timeout=timeout_s))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            rows.append(_down(device_id, type(exc).__name__))
    rows.sort(key=lambda r: r["device"])
    queue = ray.get(coordinator.queue.remote(), timeout=timeout_s)
    hosts = [{"address": n["NodeManagerAddress"], "alive": n["Alive"]} for n in ray.nodes()]
    return {"devices": rows, "queue": queue, "hosts": hosts}


def _down(device_id: str, why: str) -> dict[str, Any]:
    host, profile = device_id.split("/")[:2]
    return {"device": device_id, "host": host, "profile": profile, "state": "down", "job": None, "done": None,
            "failed": None, "last_error": why, "pids": []}
