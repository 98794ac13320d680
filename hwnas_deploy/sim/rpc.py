"""The TVM RPC twin: a tracker and one RPC server on this host, on loopback, as a lab runs them
for a board (`python -m tvm.exec.rpc_tracker`, `python -m tvm.exec.rpc_server --tracker --key`).

TVM's RPC server listens on 0.0.0.0 unless told otherwise and keeps every upload in a
/tmp/tmpXXXX folder it never removes; here both are bound to 127.0.0.1 and the server's
temporary folders live under the twin's own folder, removed when the twin stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwnas_deploy.devices.tvm_rpc import tracker_keys
from hwnas_deploy.errors import DeviceError
from hwnas_deploy.sim.owned import preexec
from hwnas_deploy.sim.ports import free_port


class RpcTwin:
    """Tracker + server processes. `tracker_port=0` picks a free port."""

    def __init__(self, key: str = "rpc-local", tracker_port: int = 0, host: str = "127.0.0.1", owned: bool = False):
        self.key, self.host, self.owned = key, host, owned
        self.tracker_port = tracker_port or free_port()
        self.tracker: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self.tmp: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.tracker_port}"

    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        env = dict(os.environ, TMPDIR=self.tmp)
        env.setdefault("TVM_NUM_THREADS", "1")  # the driver sets each session's pool size anyway
        with open(Path(self.tmp) / log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", *args], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec(self.owned))

    def start(self, timeout: float = 60.0) -> RpcTwin:
        self.tmp = tempfile.mkdtemp(prefix="hwnas-rpc-")
        p = str(self.tracker_port)
        self.tracker = self._spawn("tvm.exec.rpc_tracker", "--host", self.host, "--port", p, "--port-end",
                                   str(self.tracker_port + 1), "--silent", log="tracker.log")
        # the server retries a tracker it cannot reach only every 5 s: start it once the tracker answers
        self._wait(None, timeout, "the TVM RPC tracker did not answer")
        self.start_server()
        self.wait_registered(timeout)
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, name in ((self.tracker, "tracker"), (self.server, "server")):
                if proc is not None and proc.poll() is not None:
                    log = (Path(self.tmp) / f"{name}.log").read_text()[-2000:]
                    self.stop()
                    raise DeviceError(f"the TVM RPC {name} exited at start-up:\n{log}")
            try:
                keys = tracker_keys(self.host, self.tracker_port, wait_s=0)
                if ready is None or ready(keys):
                    return
            except (RuntimeError, OSError):  # not up yet
                pass
            time.sleep(0.2)
        self.stop()
        raise DeviceError(f"{what} ({self.address}) within {timeout:g} s")

    def wait_registered(self, timeout: float = 60.0) -> None:
        self._wait(lambda keys: keys.get(self.key, {}).get("free"), timeout,
                   "the TVM RPC server did not register with the tracker")

    def start_server(self) -> None:
        """(Re)start the RPC server process, registered under `key`."""
        port = free_port()
        self.server = self._spawn("tvm.exec.rpc_server", "--tracker", self.address, "--key", self.key,
                                  "--host", self.host, "--port", str(port), "--port-end", str(port + 1),
                                  log="server.log")

    def stop_server(self) -> None:
        _kill(self.server)
        self.server = None

    def stop(self) -> None:
        _kill(self.server)
        _kill(self.tracker)
        self.server = self.tracker = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> RpcTwin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait(10)
