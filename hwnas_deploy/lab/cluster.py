"""Bring a lab host up or down, and connect to a lab: Ray's `ray start` / `ray stop` with the
devices as custom resources, loopback unless the admin says otherwise."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from hwnas_deploy.errors import ConfigError, DeviceError
from hwnas_deploy.lab.devices import NAMESPACE, DeviceSpec, lab_devices, resources_for, start_devices
from hwnas_deploy.lifetime import detached_env

DEFAULT_PORT = 6380
LOOPBACK = "127.0.0.1"


@dataclass
class LabInfo:
    address: str
    host: str
    devices: list[dict[str, Any]] = field(default_factory=list)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def check_exposure(node_ip: str, address: str | None, allow_remote: bool) -> None:
    """A lab listens on loopback unless its admin passes `allow_remote` (`--allow-remote`)."""
    for what, value in (("--node-ip", node_ip), ("--address", address)):
        if value and not is_loopback(value) and not allow_remote:
            raise ConfigError(
                f"lab: {what} {value} is not a loopback address; a lab reachable from the network runs "
                "measurement jobs for whoever reaches it, so say --allow-remote (and firewall it: README, "
                "'Hardware lab')")


def connect(address: str) -> None:
    """Join the lab at `address` (HOST:PORT of its head) as a client; idempotent."""
    if ray.is_initialized():
        return
    host, _, port = address.rpartition(":")
    try:  # Ray's own connect retries for minutes; a lab that is not there says so at once
        socket.create_connection((host.strip("[]") or LOOPBACK, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise DeviceError(f"lab {address}: cannot connect ({exc}); is `hwnas lab up` running there?") from None
    loopback = is_loopback(address)
    if loopback:
        # Ray swaps a loopback bootstrap address for this host's network address
        # (services.resolve_ip_for_localhost) unless multi-host clusters are off in this process:
        # a lab on loopback listens only there, so the swapped address would not answer.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                 _node_ip_address=LOOPBACK if loopback else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DeviceError(f"lab {address}: cannot connect ({exc}); is `hwnas lab up` running there?") from None


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise ConfigError("lab: the `ray` command is missing; install the lab extra: pip install 'hwnas-deploy[lab]'")
    return found


def up(devices: Sequence[str], *, address: str | None = None, host: str | None = None, port: int = DEFAULT_PORT,
       node_ip: str = LOOPBACK, allow_remote: bool = False, num_cpus: int | None = None,
       open_timeout_s: float = 300.0) -> LabInfo:
    """Start this host's part of a lab: the head (no `address`) or a worker joining `address`,
    announcing `devices` (`PROFILE`, `PROFILE@WHERE`, `PROFILE*N`) and opening an actor per device."""
    specs = [s for text in devices for s in DeviceSpec.parse(text)]
    check_exposure(node_ip, address, allow_remote)
    if address and is_loopback(address):
        raise ConfigError(f"lab: --address {address} is a loopback lab, which is one host: add these devices to its "
                          "`lab up`, or start the head on a network address (--node-ip, --allow-remote) to join it")
    host = host or socket.gethostname()
    cmd = [_ray_cli(), "start", f"--node-ip-address={node_ip}", "--disable-usage-stats",
           f"--resources={json.dumps(resources_for(specs, host))}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if address:
        cmd.append(f"--address={address}")
    else:
        cmd += ["--head", f"--port={port}", "--include-dashboard=false"]
        address = f"{node_ip}:{port}"
    env = detached_env()  # the lab outlives `hwnas lab up`
    if is_loopback(node_ip):
        # Without this, `ray start` swaps 127.0.0.1 for the host's network address and its GCS and
        # raylet listen on every interface; with it, all of Ray's servers listen on 127.0.0.1 only
        # (seen with `ss -ltnp`; tests/test_lab_cli.py checks it). It also forbids joining hosts,
        # which a loopback lab has none of.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise DeviceError(f"lab: `ray start` failed (exit {proc.returncode}):\n{tail}")
    connect(address)
    ensure_coordinator()
    try:
        facts = start_devices(specs, host, timeout_s=open_timeout_s)
    except BaseException:
        ray.shutdown()
        subprocess.run([_ray_cli(), "stop"], capture_output=True)
        raise
    return LabInfo(address, host, facts)


def down(address: str, host: str | None = None) -> list[str]:
    """Close this host's devices (stopping their twins), then stop Ray on this host. With
    `host=None` every device of the lab is closed (run it on the head last)."""
    connect(address)
    closed = []
    for device_id, actor in lab_devices().items():
        if host is not None and device_id.split("/", 1)[0] != host:
            continue
        try:
            ray.get(actor.close.remote(), timeout=60)
        except ray.exceptions.RayError:
            pass
        ray.kill(actor)
        closed.append(device_id)
    ray.get(ensure_coordinator().forget.remote(closed))
    ray.shutdown()
    subprocess.run([_ray_cli(), "stop"], capture_output=True)
    return closed


def ensure_coordinator():
    from hwnas_deploy.lab.coordinator import Coordinator

    return Coordinator.options(name="coordinator", namespace=NAMESPACE, lifetime="detached",
                               get_if_exists=True).remote()
