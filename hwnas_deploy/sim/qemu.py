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
from hwnas_deploy.sim.owned import preexec
from hwnas_deploy.sim.ports import free_port

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
QEMU_BOARD = "qemu-mps2-an500"
ICOUNT_SHIFT = 7
TIMER_NS = 40


def ticks_to_instructions(ticks: int, shift: int = ICOUNT_SHIFT) -> float:
    """Timer ticks (40 ns) to executed instructions (2^shift ns each). A count read at tick
    granularity is off by less than one tick at each end; once an instruction spans two ticks or
    more (shift >= 7), rounding recovers the exact number of instructions."""
    n = ticks * TIMER_NS / (1 << shift)
    return float(round(n)) if (1 << shift) >= 2 * TIMER_NS else n


def build_firmware(board: str = QEMU_BOARD, model_c: str | Path | None = None) -> Path:
    """make -C firmware BOARD=board [MODEL_C=...]; returns the ELF (rebuilt only when sources
    changed). With `model_c` (from `hwnas export --format c`) the model is built in."""
    if shutil.which("arm-none-eabi-gcc") is None:
        raise DeviceError("building the firmware needs arm-none-eabi-gcc (run tools/setup.sh)")
    if not (FIRMWARE_DIR / "boards" / board).is_dir():
        known = sorted(p.name for p in (FIRMWARE_DIR / "boards").iterdir() if (p / "board.mk").exists())
        raise DeviceError(f"unknown board {board!r}; known: {', '.join(known)}")
    cmd = ["make", "-s", "-C", str(FIRMWARE_DIR), f"BOARD={board}"]
    if model_c is not None:
        cmd.append(f"MODEL_C={Path(model_c).resolve()}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeviceError(f"firmware build for {board} failed:\n{proc.stderr.strip()[-3000:]}")
    return FIRMWARE_DIR / "build" / (board + ("-builtin" if model_c else "")) / "firmware.elf"


def flash_firmware(board: str) -> str:
    """Write the firmware to a board attached over ST-LINK (st-flash, else pyocd). QEMU boards
    are "flashed" by starting them with the ELF (`hwnas sim start`)."""
    if board == QEMU_BOARD:
        return "QEMU boards run the ELF directly: hwnas sim start qemu-m7"
    elf = build_firmware(board)
    binary = elf.with_suffix(".bin")
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    if shutil.which("st-flash"):
        cmd = ["st-flash", "--reset", "write", str(binary), "0x08000000"]
    elif shutil.which("pyocd"):
        cmd = ["pyocd", "flash", "--format", "elf", str(elf)]
    else:
        raise DeviceError("flashing needs st-flash (apt-get install stlink-tools) or pyocd (pip install pyocd)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeviceError(f"{cmd[0]} failed for {board}: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return f"flashed {board} with {cmd[0]}"


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
