"""The `tvm-rpc` driver: TVM libraries timed on a remote through a TVM RPC tracker.

The same driver serves an aarch64 board, an Android phone running TVM's RPC app, or a server:
whatever registered with the tracker under `key`. Profile:

    connection:
      tracker: 10.0.0.5:9190     (else, with simulator: tvm-rpc-local, hwnas_deploy.sim gives the
                                  tracker `hwnas sim start` left running, or a private one on loopback)
      key: rk3588                the server key to request
      session_timeout_s: 600, priority: 1
    hardware:
      target: host | aarch64-linux-gnu   what libraries are compiled for (`hwnas export --target`)
    benchmark:
      number: 10                 runs averaged into one sample (time_evaluator's `number`)
      repeat: 20                 samples (else measurement.min_repeats)
      min_repeat_ms: 0           grow `number` until one sample lasts this long
      cooldown_interval_ms: 0

Uploads are named by the artifact's hash and removed on close. A session that drops (server
gone) is requested again once from the tracker (another server with the key, or the same one
back) and the library uploaded again; if none answers, that network fails with the reason.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices.base import Driver
from hwnas_deploy.errors import DeviceError
from hwnas_deploy.measure import MeasureSettings, Summary, summarize


@dataclass
class Deployed:
    artifact: Artifact
    name: str
    threads: int


def _split(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise DeviceError(f"tracker address {address!r} must be HOST:PORT")
    return host, int(port)


def tracker_keys(host: str, port: int, wait_s: float = 5.0) -> dict[str, dict]:
    """key -> {"total": servers registered, "free": n, "pending": requests waiting}. A tracker
    that refuses connections for `wait_s` is an OSError (TVM's own client retries for 60 s)."""
    from tvm import rpc

    deadline = time.monotonic() + wait_s
    while True:  # a restarting tracker gets a few seconds; an absent one fails fast
        try:
            socket.create_connection((host, port), timeout=5).close()
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    summary = rpc.connect_tracker(host, port).summary()
    keys = {k: {"total": 0, "free": v.get("free", 0), "pending": v.get("pending", 0)}
            for k, v in summary.get("queue_info", {}).items()}
    for server in summary.get("server_info", []):
        key = str(server.get("key", "")).partition(":")[2]  # "server:KEY"
        keys.setdefault(key, {"total": 0, "free": 0, "pending": 0})["total"] += 1
    return keys


class TvmRpcDriver(Driver):
    def open(self) -> dict[str, Any]:
        conn = self.profile.connection
        self.key = str(conn.get("key", self.profile.name))
        address = conn.get("tracker")
        if not address:
            raise DeviceError(f"device {self.profile.name!r}: connection needs 'tracker' (HOST:PORT) "
                              "(or simulator: tvm-rpc-local, started by hwnas_deploy.sim)")
        self.address = address
        self.target = str(self.profile.hardware.get("target", "host"))
        self.uploaded: set[str] = set()
        self._request()
        return {"tracker": self.address, "key": self.key, "target": self.target}

    def _request(self) -> None:
        from tvm import rpc

        host, port = _split(self.address)
        try:
            keys = tracker_keys(host, port)
        except (RuntimeError, OSError) as exc:
            raise DeviceError(f"{self.profile.name}: cannot reach the TVM RPC tracker {self.address}: {exc}") from None
        if not keys.get(self.key, {}).get("total"):  # busy servers are fine: the request queues
            have = ", ".join(f"{k} ({v['total']} servers, {v['free']} free)" for k, v in keys.items() if v["total"])
            raise DeviceError(f"{self.profile.name}: the tracker {self.address} has no server with key "
                              f"{self.key!r} (servers: {have or 'none'})")
        conn = self.profile.connection
        try:
            self.remote = rpc.connect_tracker(host, port).request(
                self.key, priority=int(conn.get("priority", 1)),
                session_timeout=float(conn.get("session_timeout_s", 600)), max_retry=2)
        except (RuntimeError, OSError) as exc:
            raise DeviceError(f"{self.profile.name}: requesting a {self.key!r} session from {self.address} "
                              f"failed: {exc}") from None
        self.dev = self.remote.cpu()
        self.uploaded = set()

    def deploy(self, artifact: Artifact, threads: int, weights: str = "real") -> Deployed:
        if artifact.format != "tvm":
            raise DeviceError(f"{self.profile.name} runs TVM libraries, not {artifact.format!r}")
        if (artifact.target or "host") != self.target:
            raise DeviceError(f"{artifact.path} is compiled for {artifact.target or 'host'}; {self.profile.name} "
                              f"needs {self.target} (hardware.target)")
        name = f"hwnas-{artifact.sha256[:16]}{Path(artifact.path).suffix}"
        return Deployed(artifact, name, threads)

    def _upload(self, handle: Deployed) -> None:
        if handle.name not in self.uploaded:
            self.remote.upload(handle.artifact.path, handle.name)
            self.uploaded.add(handle.name)

    def _time(self, handle: Deployed, settings: MeasureSettings) -> list[float]:
        import tvm
        from tvm import relax

        bench = self.profile.benchmark
        self._upload(handle)
        # the remote's thread pool, as TVM's own tuning sets it (affinity mode 0: default)
        self.remote.get_function("runtime.config_threadpool")(0, handle.threads)
        vm = relax.VirtualMachine(self.remote.load_module(handle.name), self.dev)
        x = np.random.default_rng(0).standard_normal(handle.artifact.inputs[0].shape).astype(np.float32)
        arg = tvm.runtime.tensor(x, self.dev)
        timer = vm.time_evaluator(
            "main", self.dev, number=int(bench.get("number", 10)),
            repeat=int(bench.get("repeat", settings.min_repeats)), min_repeat_ms=int(bench.get("min_repeat_ms", 0)),
            cooldown_interval_ms=int(bench.get("cooldown_interval_ms", 0)))
        if settings.warmup:
            vm.time_evaluator("main", self.dev, number=settings.warmup, repeat=1)(arg)
        return [t * 1e3 for t in timer(arg).results]

    def measure(self, handle: Deployed, settings: MeasureSettings) -> Summary:
        try:  # TVM's errors (RPCError, ...) are RuntimeErrors
            samples = self._time(handle, settings)
        except (RuntimeError, OSError) as first:
            try:  # the server went away: ask the tracker again, once
                self._request()
                samples = self._time(handle, settings)
            except (DeviceError, RuntimeError, OSError) as exc:
                raise DeviceError(f"{self.profile.name}: the RPC session was lost while timing {handle.name} "
                                  f"({str(first).splitlines()[-1][:200]}) and could not be renewed: "
                                  f"{str(exc).splitlines()[-1][:300]}") from None
        summary = summarize(samples, settings.outlier_fence, settings.target_ci)
        summary.details = {"tracker": self.address, "key": self.key, "target": self.target,
                           "number": int(self.profile.benchmark.get("number", 10)),
                           "sample_statistic": "mean of `number` runs (time_evaluator)"}
        return summary

    def close(self) -> None:
        remote = getattr(self, "remote", None)
        for name in list(getattr(self, "uploaded", ())):
            try:
                remote.remove(name)
            except Exception:  # noqa: BLE001 - a session already gone has nothing left to clean
                break
        self.remote = None
