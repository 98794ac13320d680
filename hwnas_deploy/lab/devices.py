"""Lab devices: what a host announces (`DeviceSpec`), and the Ray actor that owns one device.

Each physical device is a Ray custom resource of one unit named after the host, the profile and
an index (`hwnas-device:bench-3/qemu-m7/0`). Its actor is created holding that unit, so Ray
places it on the host the device is plugged into and never starts a second owner. The actor
runs its measurements in a concurrency group of one: no two jobs on one device at once, while
`state()` still answers from a second group during a long measurement.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices import DeviceProfile, DoesNotFitError, load_profile
from hwnas_deploy.errors import ConfigError, ExportError, HwnasError
from hwnas_deploy.measurement.drift import SentinelWatch
from hwnas_deploy.measurement.provenance import host_state
from hwnas_deploy.sim.twins import ADDRESS_KEYS, twinned_driver

NAMESPACE = "hwnas-lab"
RESOURCE_PREFIX = "hwnas-device:"
ACTOR_PREFIX = "device:"


@dataclass(frozen=True)
class DeviceSpec:
    """One device a host serves: a profile, and where this unit of it is attached (a serial port,
    an adb serial, a tracker address; none for a simulated twin, which each actor starts itself)."""

    profile: DeviceProfile
    where: str | None = None

    @classmethod
    def parse(cls, text: str) -> list[DeviceSpec]:
        """`PROFILE`, `PROFILE@WHERE` or `PROFILE*N` (N units of a twin or of the local CPU)."""
        head, _, count_text = text.partition("*")
        name, _, where = head.partition("@")
        try:
            count = int(count_text) if count_text else 1
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"device {text!r}: the count after '*' must be a whole number >= 1")
        if where and count > 1:
            raise ConfigError(f"device {text!r}: one attached device per '@'; list each port on its own")
        prof = load_profile(name.strip())
        example = f"{prof.name}@{_EXAMPLE_WHERE.get(prof.kind, 'ADDRESS')}"
        twin = bool(prof.connection.get("simulator"))
        if where and prof.kind not in ADDRESS_KEYS:
            raise ConfigError(f"device {text!r}: a {prof.kind} device takes no '@' address "
                              f"(kinds with one: {', '.join(ADDRESS_KEYS)})")
        if not where and prof.kind != "server" and not twin and not prof.connection.get(ADDRESS_KEYS[prof.kind]):
            raise ConfigError(f"device {text!r}: say where it is attached, e.g. {example}")
        if count > 1 and prof.kind != "server" and not twin:
            raise ConfigError(f"device {text!r}: '*N' makes N twins (or N local-CPU workers); list each real "
                              f"device with its own address, e.g. {example}")
        return [cls(prof, where or None) for _ in range(count)]

    def profile_to_drive(self) -> DeviceProfile:
        """The profile with this unit's address, or with a twin of its own."""
        conn = dict(self.profile.connection)
        if self.where:
            conn[ADDRESS_KEYS[self.profile.kind]] = self.where
        elif conn.get("simulator"):
            conn["twin"] = "private"
        return replace(self.profile, connection=conn)


_EXAMPLE_WHERE = {"mcu-serial": "/dev/ttyACM0", "android-adb": "R58M123ABC", "tvm-rpc": "10.0.0.5:9190"}


def device_ids(specs: list[DeviceSpec], host: str) -> list[str]:
    """`host/profile/index`, indices counted per profile on the host."""
    counts: dict[str, int] = {}
    ids = []
    for spec in specs:
        i = counts.get(spec.profile.name, 0)
        counts[spec.profile.name] = i + 1
        ids.append(f"{host}/{spec.profile.name}/{i}")
    return ids


def resource_name(device_id: str) -> str:
    return RESOURCE_PREFIX + device_id


def resources_for(specs: list[DeviceSpec], host: str) -> dict[str, float]:
    """The custom resources a host announces for its devices: one unit each."""
    return {resource_name(d): 1.0 for d in device_ids(specs, host)}


@ray.remote(num_cpus=0, max_restarts=0, concurrency_groups={"device": 1, "control": 2})
class LabDevice:
    """Owns one device: its driver, its connection and (for a twin) its simulator process."""

    def __init__(self, device_id: str, profile: DeviceProfile):
        self.device_id, self.profile = device_id, profile
        self.host = device_id.split("/", 1)[0]
        self.driver = None
        self.facts: dict[str, Any] = {}
        self.broken = False
        self.job: str | None = None
        self.done = self.failed = 0
        self.last_error: str | None = None
        self.workdir: tempfile.TemporaryDirectory | None = None  # the blobs it is sent; until close()
        self.watch = SentinelWatch()  # this device's drift readings (a reopened device starts anew)

    @ray.method(concurrency_group="device")
    def open(self) -> dict[str, Any]:
        """Connect (start the twin); raises the driver's error if the device is not there."""
        if self.driver is not None:
            self.driver.close()
        self.driver = twinned_driver(self.profile)
        self.watch = SentinelWatch()
        try:
            self.facts = self.driver.open()
        except BaseException:
            self.driver.close()
            self.driver = None
            raise
        self.broken = False
        return self.facts

    @ray.method(concurrency_group="device")
    def measure(self, plan, job, exported: tuple[Artifact, bytes], sentinel: list | None = None) -> dict[str, Any]:
        """Deploy and time one job. The outcome is a value, never an exception, so that the
        scheduler can tell a device problem (retry elsewhere) from a network that does not fit.
        `sentinel`: [the export of the plan's sentinel] (in a list: its export failing is not the
        job's), measured first when this device's last reading is due (`measurement.drift`)."""
        self.job = job.key.config_hash
        started = time.time()
        reading = notes = None
        try:
            if self.driver is None or self.broken:
                try:
                    self.open()
                except HwnasError as exc:
                    self.last_error = f"reconnect failed: {exc}"
                    return {"down": self.last_error}
            if sentinel:
                notes = []
                reading, _ = self.watch.check(plan, self.driver, lambda: self._receive(ray_get(sentinel[0])),
                                              notes.append)
                started = time.time()
            host = host_state()
            summary = plan.run(self.driver, self._receive(exported))
            stamp = self.watch.stamp(plan)
            if stamp is not None:
                summary.details["drift"] = stamp
        except DoesNotFitError as exc:
            return {"unfit": exc.reason, "details": exc.details, "sentinel": reading, "notes": notes or []}
        except HwnasError as exc:
            self.broken, self.failed, self.last_error = True, self.failed + 1, str(exc)
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a driver bug must not kill the actor that owns the device
            self.broken, self.failed = True, self.failed + 1
            self.last_error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            return {"error": self.last_error}
        finally:
            self.job = None
        self.done += 1
        return {"summary": summary, "env": {"device": self.facts, "lab": {"device": self.device_id},
                                            "host": {"start": host, "end": host_state()}},
                "device": self.device_id, "started": started, "finished": time.time(), "sentinel": reading,
                "notes": notes or []}

    def _receive(self, exported: tuple[Artifact, bytes]) -> Artifact:
        """An artifact sent to this device, written into its folder."""
        artifact, data = exported
        if self.workdir is None:
            self.workdir = tempfile.TemporaryDirectory(prefix="hwnas-lab-")
        path = Path(self.workdir.name) / Path(artifact.path).name
        path.write_bytes(data)
        return replace(artifact, path=str(path))

    @ray.method(concurrency_group="device")
    def close(self) -> None:
        """Release the device (stop its twin) and its folder; waits for a measurement in progress."""
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    @ray.method(concurrency_group="control")
    def state(self) -> dict[str, Any]:
        return {"device": self.device_id, "host": self.host, "profile": self.profile.name, "kind": self.profile.kind,
                "state": "busy" if self.job else ("reconnecting" if self.broken else "free"), "job": self.job,
                "done": self.done, "failed": self.failed, "last_error": self.last_error,
                "pids": self._pids()}

    def _pids(self) -> list[int]:
        """This actor's process and its twin's (tests and `lab down` use them)."""
        import os

        return [os.getpid(), *getattr(self.driver, "pids", [])]


def ray_get(ref):
    """An object's value; a failed task (an export) as ExportError."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise ExportError(str(exc.cause if exc.cause is not None else exc)) from None


def actor_name(device_id: str) -> str:
    return ACTOR_PREFIX + device_id


def start_devices(specs: list[DeviceSpec], host: str, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Create (detached) and open an actor per device of `host`, whose resources the host's Ray
    node announced; returns each device's facts. A device that does not open is named in the error
    and no actor of this call is left behind."""
    from hwnas_deploy.errors import DeviceError

    actors = []
    for spec, device_id in zip(specs, device_ids(specs, host), strict=True):
        actors.append(LabDevice.options(name=actor_name(device_id), namespace=NAMESPACE, lifetime="detached",
                                        resources={resource_name(device_id): 1}).remote(
            device_id, spec.profile_to_drive()))
    refs = [a.open.remote() for a in actors]
    facts = []
    try:
        for device_id, ref in zip(device_ids(specs, host), refs, strict=True):
            try:
                facts.append({"device": device_id, **ray.get(ref, timeout=timeout_s)})
            except ray.exceptions.GetTimeoutError:
                raise DeviceError(f"lab device {device_id}: did not open within {timeout_s:g} s "
                                  "(is its resource announced by this host's Ray node?)") from None
            except ray.exceptions.RayTaskError as exc:
                raise DeviceError(f"lab device {device_id}: {exc.cause if exc.cause else exc}") from None
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    from hwnas_deploy.lab.cluster import ensure_coordinator

    ray.get(ensure_coordinator().register.remote(device_ids(specs, host)))
    return facts


def lab_devices(profile: str | None = None) -> dict[str, Any]:
    """{device id: actor handle} of the lab's devices (of one profile)."""
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else entry
        ns = entry.get("namespace") if isinstance(entry, dict) else NAMESPACE
        if ns != NAMESPACE or not name.startswith(ACTOR_PREFIX):
            continue
        device_id = name[len(ACTOR_PREFIX):]
        if profile is None or device_id.split("/")[1] == profile:
            try:
                out[device_id] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # died between the listing and now
                continue
    return dict(sorted(out.items()))
