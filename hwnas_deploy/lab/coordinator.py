"""The lab's notice board on the head: the devices ever announced (so that one whose actor or
host died still shows, as down) and each client's queue (queued / running / done / failed), so
that `hwnas lab status` shows what every running `profile --lab` or `search --lab` waits for."""

from __future__ import annotations

import time
from typing import Any

import ray


@ray.remote(num_cpus=0, max_restarts=-1, resources={"node:__internal_head__": 0.001})
class Coordinator:
    def __init__(self):
        self.clients: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, float] = {}

    def register(self, device_ids: list[str]) -> None:
        for d in device_ids:
            self.devices[d] = time.time()

    def forget(self, device_ids: list[str]) -> None:
        for d in device_ids:
            self.devices.pop(d, None)

    def announced(self) -> list[str]:
        return sorted(self.devices)

    def report(self, client: str, counts: dict[str, Any] | None) -> None:
        """A client's counts (None: it finished)."""
        if counts is None:
            self.clients.pop(client, None)
        else:
            self.clients[client] = {**counts, "updated": time.time()}

    def queue(self) -> dict[str, dict[str, Any]]:
        return dict(self.clients)
