"""Twins started in the background by `hwnas sim start`, remembered in a state folder so that
`hwnas sim stop` (another process) finds them. $HWNAS_SIM_DIR or ~/.cache/hwnas/sim."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from hwnas_deploy.devices import load_profile
from hwnas_deploy.errors import DeviceError


def state_dir() -> Path:
    d = Path(os.environ.get("HWNAS_SIM_DIR", Path.home() / ".cache" / "hwnas" / "sim"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(device: str, port: int | None = None) -> str:
    profile = load_profile(device)
    if profile.kind != "mcu-serial" or profile.connection.get("simulator") != "qemu-mps2-an500":
        raise DeviceError(f"device {profile.name!r} has no simulated twin to start (kind {profile.kind})")
    state = state_dir() / f"{profile.name}.json"
    if state.exists():
        info = json.loads(state.read_text())
        if _alive(info["pid"]):
            return info["url"]
    from hwnas_deploy.sim.qemu import QemuBoard

    board = QemuBoard(port=port).start()
    board.process.stderr.close()
    state.write_text(json.dumps({"device": profile.name, "pid": board.process.pid, "url": board.url}))
    return board.url


def stop(device: str) -> str:
    state = state_dir() / f"{device}.json"
    if not state.exists():
        raise DeviceError(f"no twin of {device!r} was started with `hwnas sim start`")
    info = json.loads(state.read_text())
    if _alive(info["pid"]):
        os.killpg(info["pid"], signal.SIGTERM)
    state.unlink()
    return f"stopped {device} (pid {info['pid']})"


def running() -> list[dict]:
    rows = []
    for f in sorted(state_dir().glob("*.json")):
        info = json.loads(f.read_text())
        if _alive(info["pid"]):
            rows.append(info)
        else:
            f.unlink()
    return rows
