"""What is plugged into this host: debug probes on USB serial ports, phones adb already sees."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from hwnas_deploy.lifetime import detached_env

#: USB vendor ids of the debug probes MCU boards carry, and what they are
PROBES = {0x0483: "ST-LINK (STM32 Nucleo / Discovery)", 0x1366: "SEGGER J-Link", 0x0D28: "Arm DAPLink / CMSIS-DAP"}


def serial_probes() -> list[str]:
    """USB serial ports behind a known debug probe: `PORT (probe, serial number)`."""
    from serial.tools import list_ports

    found = []
    for port in list_ports.comports():
        if port.vid in PROBES:
            found.append(f"{port.device} ({PROBES[port.vid]}, serial {port.serial_number or '?'}): "
                         f"--device PROFILE@{port.device}")
    return found


def adb_phones() -> list[str]:
    """Phones the running adb server sees (an adb server is not started for this)."""
    port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", 5037))
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return []
    adb = shutil.which("adb")
    if not adb:
        return []
    try:
        out = subprocess.run([adb, "devices", "-l"], capture_output=True, text=True, timeout=10,
                             env=detached_env()).stdout  # the adb server it may start is the host's
    except (OSError, subprocess.TimeoutExpired):
        return []
    phones = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1] == "device":
            model = next((p.split(":", 1)[1] for p in parts if p.startswith("model:")), "?")
            phones.append(f"{parts[0]} (adb, {model}): --device pixel4-a76@{parts[0]} or your phone's profile")
    return phones


def attached() -> list[str]:
    return serial_probes() + adb_phones()
