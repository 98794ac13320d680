"""Simulated twins behind the addresses drivers connect to.

A profile whose `connection` names a `simulator` and no address is resolved here, in one place:
to the twin `hwnas sim start` left running for it (unless `twin: private`), or to a twin started
for this one use (QEMU board, adb daemon, TVM RPC tracker + server). The driver then sees only an
address (a serial URL, an adb serial, a tracker), exactly as for a real device, and never imports
a twin. `twinned_driver(profile)` is the driver with its twin's lifetime attached: the twin starts
on `open()` and stops on `close()`, also when opening fails.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hwnas_deploy.devices import DeviceProfile, Driver, driver_for
from hwnas_deploy.errors import DeviceError

#: the connection key holding a device's address, per device kind
ADDRESS_KEYS = {"mcu-serial": "url", "android-adb": "serial", "tvm-rpc": "tracker"}


@dataclass
class Twin:
    """A started twin: where to reach it, what to add to the connection, how to stop it, and
    what `hwnas sim start` records to stop it from another process (`record`: its process group
    `pid`, and for some a `server_pid` and a `tmp` folder)."""

    address: str
    stop: Callable[[], None]
    connection: dict[str, Any] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    #: closes the pipes to this process, for a twin left running in the background
    detach: Callable[[], None] = lambda: None
    #: whether its processes still run (a twin can die under a job: QEMU killed, out of memory)
    alive: Callable[[], bool] = lambda: True


def _qemu(profile: DeviceProfile, owned: bool, port: int | None = None, root: Path | None = None) -> Twin:
    from hwnas_deploy.sim.qemu import QemuBoard

    board = QemuBoard(port=port, owned=owned).start()
    return Twin(board.url, board.stop, {"icount_shift": board.shift}, [board.process.pid],
                {"pid": board.process.pid}, board.process.stderr.close,
                lambda: board.process is not None and board.process.poll() is None)


def _adbd(profile: DeviceProfile, owned: bool, port: int | None = None, root: Path | None = None) -> Twin:
    """With `root` (a background twin's storage, kept across restarts) on `port` (else the
    profile's `connection.port`); without, a temporary root on a free port, removed on stop."""
    from hwnas_deploy.sim.adbd import AdbTwin

    tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="hwnas-adbd-")
    if root is None:
        port = 0
    elif port is None:
        port = int(profile.connection.get("port", 0))
    try:
        twin = AdbTwin(root if root is not None else tmp.name, port, owned=owned).start()
    except OSError as exc:
        if tmp is not None:
            tmp.cleanup()
        raise DeviceError(f"{profile.name}: {exc}") from None

    def stop() -> None:
        twin.stop()
        if tmp is not None:
            tmp.cleanup()

    def detach() -> None:
        twin.process.stdout.close()
        twin.process.stderr.close()

    # the driver ran `adb connect` to reach it: it disconnects on close (no offline entry left)
    return Twin(twin.serial, stop, {"disconnect_on_close": True}, [twin.process.pid], {"pid": twin.process.pid},
                detach, lambda: twin.process is not None and twin.process.poll() is None)


def _rpc(profile: DeviceProfile, owned: bool, port: int | None = None, root: Path | None = None) -> Twin:
    from hwnas_deploy.sim.rpc import RpcTwin

    twin = RpcTwin(str(profile.connection.get("key", profile.name)), port or 0, owned=owned).start()
    # the server dies with its tracker connection gone only on its next request: record both
    return Twin(twin.address, twin.stop, {}, [twin.tracker.pid, twin.server.pid],
                {"pid": twin.tracker.pid, "server_pid": twin.server.pid, "tmp": twin.tmp},
                alive=lambda: all(p is not None and p.poll() is None for p in (twin.tracker, twin.server)))


#: simulator name (a profile's `connection.url: sim:NAME`) -> the device kind it is a twin of,
#: and how to start one: starter(profile, owned, port=None, root=None) -> Twin
SIMULATORS: dict[str, tuple[str, Callable[..., Twin]]] = {
    "qemu-mps2-an500": ("mcu-serial", _qemu),
    "adbd": ("android-adb", _adbd),
    "tvm-rpc-local": ("tvm-rpc", _rpc),
}


def simulator_of(profile: DeviceProfile) -> Callable[..., Twin]:
    """The starter of the profile's twin, or a clear error when it names none of its kind."""
    simulator = profile.connection.get("simulator")
    if simulator not in SIMULATORS or SIMULATORS[simulator][0] != profile.kind:
        allowed = ", ".join(f"sim:{name} ({kind})" for name, (kind, _) in SIMULATORS.items())
        what = f"connection.url sim:{simulator}" if simulator else "no simulated twin"
        raise DeviceError(f"device {profile.name!r} ({profile.kind}) has {what}; twins: {allowed}")
    return SIMULATORS[simulator][1]


def is_private(profile: DeviceProfile) -> bool:
    """`connection.twin: private`: a twin of its own even when `hwnas sim start` left one running
    (each lab device has one: two actors must not share one board)."""
    return profile.connection.get("twin") == "private"


def given_address(profile: DeviceProfile) -> str | None:
    """The address the profile (or, for adb, $ANDROID_SERIAL) already gives."""
    conn = profile.connection
    address = conn.get(ADDRESS_KEYS.get(profile.kind, ""))
    if not address and profile.kind == "android-adb" and not is_private(profile):
        address = os.environ.get("ANDROID_SERIAL")
    return address or None


def resolve(profile: DeviceProfile) -> tuple[DeviceProfile, Twin | None]:
    """The profile with an address to connect to, and the twin started for it (None when the
    device is real, or its twin was started by `hwnas sim start`)."""
    if not profile.connection.get("simulator") or given_address(profile):
        return profile, None
    starter = simulator_of(profile)
    key = ADDRESS_KEYS[profile.kind]
    if not is_private(profile):
        from hwnas_deploy.sim.registry import running

        address = next((r["url"] for r in running() if r["device"] == profile.name), None)
        if address:
            return replace(profile, connection={**profile.connection, key: address}), None
    twin = starter(profile, True)  # for this use only: it dies with this process, even when killed
    return replace(profile, connection={**profile.connection, **twin.connection, key: twin.address}), twin


class TwinnedDriver(Driver):
    """A device's driver with the twin its address needs (if any) started on open, stopped on close."""

    def __init__(self, profile: DeviceProfile):
        super().__init__(profile)
        self.driver: Driver | None = None
        self.twin: Twin | None = None

    def open(self) -> dict[str, Any]:
        self.close()
        resolved, self.twin = resolve(self.profile)
        try:
            self.driver = driver_for(resolved)
            return self.driver.open()
        except BaseException:
            self.close()  # a twin started before the failure must not outlive it
            raise

    def deploy(self, artifact, threads: int, weights: str = "real"):
        return self.driver.deploy(artifact, threads, weights)

    def measure(self, handle, settings):
        return self.driver.measure(handle, settings)

    def __getattr__(self, name: str):  # the kind's own calls (infer, output checks, ...)
        driver = self.__dict__.get("driver")
        if driver is None:
            raise AttributeError(name)
        return getattr(driver, name)

    @property
    def pids(self) -> list[int]:
        return list(self.twin.pids) if self.twin else []

    def twin_exited(self, grace_s: float = 2.0) -> bool:
        """Whether the twin this driver started has died (a device failure it cannot recover from
        by itself: closing and opening again starts a new one). Asked after a job failed: a twin
        killed under it closes its socket a moment before its process is gone, so a live one is
        watched for up to `grace_s`."""
        if self.twin is None:
            return False
        deadline = time.monotonic() + grace_s
        while self.twin.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        driver, twin = self.driver, self.twin
        self.driver = self.twin = None
        try:
            if driver is not None:
                driver.close()
        finally:
            if twin is not None:
                twin.stop()


def twinned_driver(profile: DeviceProfile) -> Driver:
    """The driver for `profile`, starting (and stopping) a twin where its connection needs one."""
    return TwinnedDriver(profile) if profile.connection.get("simulator") else driver_for(profile)
