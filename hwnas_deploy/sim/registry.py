"""Twins started in the background by `hwnas sim start`, remembered in a state folder so that
`hwnas sim stop` (another process) finds them. $HWNAS_SIM_DIR or ~/.cache/hwnas/sim."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from hwnas_deploy.devices import load_profile
from hwnas_deploy.errors import DeviceError
from hwnas_deploy.lifetime import alive, outside_run


def state_dir() -> Path:
    d = Path(os.environ.get("HWNAS_SIM_DIR", Path.home() / ".cache" / "hwnas" / "sim"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def start(device: str, port: int | None = None) -> str:
    """Start the device's twin in the background; returns how to reach it (a serial URL for
    Cortex-M boards, an adb serial for the Android twin, a tracker address for TVM RPC)."""
    from hwnas_deploy.sim.twins import simulator_of

    profile = load_profile(device)
    state = state_dir() / f"{profile.name}.json"
    if state.exists():
        info = json.loads(state.read_text())
        if alive(info["pid"]):
            return info["url"]
    if not profile.connection.get("simulator"):
        raise DeviceError(f"device {profile.name!r} has no simulated twin to start (kind {profile.kind})")
    with outside_run():  # it outlives `hwnas sim start`
        twin = simulator_of(profile)(profile, False, port=port, root=state_dir() / f"{profile.name}-root")
    twin.detach()
    state.write_text(json.dumps({"device": profile.name, "url": twin.address, **twin.record}))
    return twin.address


def stop(device: str) -> str:
    state = state_dir() / f"{device}.json"
    if not state.exists():
        raise DeviceError(f"no twin of {device!r} was started with `hwnas sim start`")
    info = json.loads(state.read_text())
    for key in ("server_pid", "pid"):
        if key in info and alive(info[key]):
            os.killpg(info[key], signal.SIGTERM)
    if info.get("tmp"):
        import shutil

        shutil.rmtree(info["tmp"], ignore_errors=True)
    state.unlink()
    return f"stopped {device} (pid {info['pid']})"


def running() -> list[dict]:
    rows = []
    for f in sorted(state_dir().glob("*.json")):
        info = json.loads(f.read_text())
        if alive(info["pid"]):
            rows.append(info)
        else:
            f.unlink()
    return rows
