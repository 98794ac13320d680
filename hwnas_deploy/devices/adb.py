"""A thin client over the real `adb` command (Debian's `adb` package, or the SDK's platform-tools).

Why the command and not a Python adb client: the adb server it talks to is the one users
already run (USB phones, `adb connect` over TCP, their keys in ~/.android), and its behaviour is
what they know; adbutils would need that same server. What the command does not say plainly
is handled here:

* `adb connect` exits 0 when it fails: its output is read instead;
* `adb shell` can exit 0 with no output when the connection drops mid-command: callers check
  that the command printed what it should, and `state()` tells a lost device from a failed
  command;
* the adb server is `$ANDROID_ADB_SERVER_PORT` (or `server_port`), so labs and tests can run
  their own.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hwnas_deploy.errors import DeviceError
from hwnas_deploy.lifetime import detached_env

_TCP_SERIAL = re.compile(r"^[\w.\-\[\]:]+:\d+$")


class AdbError(DeviceError):
    pass


class DeviceUnavailableError(AdbError):
    """The device is not there (not found, offline, unauthorized); `state` says which."""

    def __init__(self, message: str, state: str | None):
        self.state = state
        super().__init__(message)


@dataclass
class ShellResult:
    returncode: int
    stdout: str
    stderr: str


class Adb:
    def __init__(self, serial: str, adb: str = "adb", server_port: int | None = None, timeout_s: float = 60.0):
        self.serial, self.timeout_s = serial, timeout_s
        self.adb = shutil.which(adb) or adb
        if not Path(self.adb).exists():
            raise AdbError(f"the adb command {adb!r} was not found (apt-get install adb, or set connection.adb)")
        # the adb server this may start is the host's (phones, other tools), not the command's
        self.env = detached_env()
        self.server_port = server_port
        if server_port is not None:
            self.env["ANDROID_ADB_SERVER_PORT"] = str(server_port)

    @property
    def is_tcp(self) -> bool:
        return bool(_TCP_SERIAL.match(self.serial))

    def _run(self, args: list[str], timeout: float | None = None, serial: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.adb, *(["-s", self.serial] if serial else []), *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout or self.timeout_s)
        except subprocess.TimeoutExpired:
            raise AdbError(f"`{shlex.join(cmd[1:])}` did not finish within {timeout or self.timeout_s:g} s") from None

    def devices(self) -> dict[str, dict[str, str]]:
        """serial -> {"state": ..., "model": ..., ...} from `adb devices -l`."""
        out = self._run(["devices", "-l"], serial=False)
        if out.returncode != 0:
            raise AdbError(f"`adb devices` failed: {(out.stderr or out.stdout).strip()}")
        found = {}
        for line in out.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                info = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
                found[parts[0]] = {"state": parts[1], **info}
        return found

    def state(self) -> str | None:
        """'device', 'offline', 'unauthorized', ... or None when the server does not know it."""
        return self.devices().get(self.serial, {}).get("state")

    def connect(self) -> None:
        out = self._run(["connect", self.serial], serial=False, timeout=20)
        text = (out.stdout + out.stderr).strip()
        if "failed to authenticate" in text:
            raise DeviceUnavailableError(self._unauthorized(), "unauthorized")
        if not re.search(r"\b(connected to|already connected)\b", text):
            raise DeviceUnavailableError(f"adb connect {self.serial}: {text or 'no answer'}", None)

    def _unauthorized(self) -> str:
        return (f"{self.serial} is unauthorized: accept the 'Allow USB debugging?' prompt on the device "
                "(this host's key is ~/.android/adbkey.pub), then run again")

    def disconnect(self) -> None:
        self._run(["disconnect", self.serial], serial=False, timeout=10)

    def disconnect_command(self) -> list[str]:
        """`disconnect()` as a command line, for a process that outlives this one."""
        port = ["-P", str(self.server_port)] if self.server_port is not None else []
        return [self.adb, *port, "disconnect", self.serial]

    def ensure_ready(self, wait_s: float = 10.0) -> dict[str, str]:
        """Make sure the device is there and authorised; connect TCP serials. Returns its
        `adb devices -l` facts. Errors say what the user can do."""
        deadline = time.monotonic() + wait_s
        tried_connect = False
        while True:
            info = self.devices().get(self.serial)
            state = info["state"] if info else None
            if state == "device":
                return info
            if state == "unauthorized":
                raise DeviceUnavailableError(self._unauthorized(), state)
            if self.is_tcp and (state is None or state == "offline") and not tried_connect:
                if state == "offline":
                    self.disconnect()
                self.connect()  # raises with adb's own words (refused, timed out, ...)
                tried_connect = True
            elif time.monotonic() > deadline:
                if state is None:
                    seen = ", ".join(f"{s} ({i['state']})" for s, i in self.devices().items()) or "none"
                    raise DeviceUnavailableError(f"device {self.serial} not found by adb (devices: {seen})", state)
                raise DeviceUnavailableError(f"device {self.serial} is {state}", state)
            else:
                time.sleep(0.2)

    def shell(self, command: str, timeout: float | None = None) -> ShellResult:
        out = self._run(["shell", command], timeout=timeout)
        return ShellResult(out.returncode, out.stdout, out.stderr)

    def push(self, local: str | Path, remote: str) -> None:
        out = self._run(["push", str(local), remote], timeout=max(self.timeout_s, 120))
        if out.returncode != 0:
            raise AdbError(f"adb push {local} {remote} failed: {(out.stderr or out.stdout).strip()}")
