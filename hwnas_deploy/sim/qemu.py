"""QEMU twin of a Cortex-M7 board: `mps2-an500` running our firmware, its UART on a TCP socket.

pyserial reaches it as ``socket://127.0.0.1:PORT``, exactly as it reaches a USB serial port.
QEMU runs with ``-icount shift=7,sleep=off``: every instruction takes 2^7 ns of virtual time, so
the firmware's timer counts (CMSDK TIMER0 at the board's 25 MHz: 40 ns per tick) are
deterministic and convert to exact instruction counts as round(ticks * 40 / 128). `sleep=off`
keeps virtual time from following wall time while the firmware waits in WFI, which also lifts
host-to-board throughput (measured 16-40 KiB/s depending on the host).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hwnas_deploy.errors import DeviceError
from hwnas_deploy.mcu.firmware import build_firmware
from hwnas_deploy.mcu.link import ICOUNT_SHIFT
from hwnas_deploy.sim.owned import preexec
from hwnas_deploy.sim.ports import free_port


@dataclass
class QemuBoard:
    """One running QEMU Cortex-M7. Use as a context manager, or start()/stop()."""

    elf: Path | None = None
    port: int | None = None
    shift: int = ICOUNT_SHIFT
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # e.g. QEMU's -d/-D logging, as tools/profile_qemu.py uses
    owned: bool = False  # dies with the thread that started it (sim.owned)

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "qemu-system-arm", "-M", "mps2-an500", "-nographic", "-monitor", "none",
            "-kernel", str(self.elf), "-icount", f"shift={self.shift},sleep=off",
            "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=off,nodelay=on", *self.extra_args,
        ]

    def start(self, timeout: float = 20.0) -> QemuBoard:
        if shutil.which("qemu-system-arm") is None:
            raise DeviceError("the Cortex-M7 twin needs qemu-system-arm (run tools/setup.sh)")
        self.elf = Path(self.elf) if self.elf else build_firmware()
        self.port = self.port or free_port()
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec(self.owned))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DeviceError(f"QEMU exited at start-up: {self.process.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise DeviceError(f"QEMU did not open its serial port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> QemuBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
