"""The firmware's sources, built for a board (arm-none-eabi-gcc) and written to it.

One place knows where the sources are (`FIRMWARE_DIR`) and where they are built (`build_root`);
the host build of the same kernels is `mcu.host`'s, the QEMU board that runs the ELF is
`sim.qemu`'s.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from hwnas_deploy.errors import DeviceError
from hwnas_deploy.resources import bundled, in_checkout, user_cache_dir

FIRMWARE_DIR = bundled("firmware")
QEMU_BOARD = "qemu-mps2-an500"


def firmware_version() -> str:
    """The version the firmware reports (FW_VERSION in app/main.c), e.g. "0.7.0"."""
    found = re.search(r'#define FW_VERSION "hwnas-fw ([^"]+)"', (FIRMWARE_DIR / "app" / "main.c").read_text())
    return found.group(1) if found else "unknown"


@lru_cache(maxsize=1)
def build_root() -> Path:
    """Where builds go: firmware/build in a checkout (make rebuilds what changed); for an
    installed copy, whose sources are read-only, the user cache, one folder per firmware version
    and content of the sources (an upgrade builds afresh, two installs never share objects)."""
    if in_checkout():
        return FIRMWARE_DIR / "build"
    digest = hashlib.sha256()
    for path in sorted(p for p in FIRMWARE_DIR.rglob("*") if p.is_file() and "build" not in p.parts):
        digest.update(str(path.relative_to(FIRMWARE_DIR)).encode() + b"\0" + path.read_bytes())
    return user_cache_dir() / "firmware" / f"{firmware_version()}-{digest.hexdigest()[:12]}"


def make(*targets: str) -> subprocess.CompletedProcess:
    """`make -s -C firmware BUILD_ROOT=... TARGETS...` under an exclusive lock on the build folder:
    two processes building at once (two CLI runs, parallel test workers) would interleave one
    object file's writes."""
    build = build_root()
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), f"BUILD_ROOT={build}", *targets],
                              capture_output=True, text=True)


DEFAULT_BAUD = 921600  # the firmware's serial line unless built with another (the ST-LINK VCP's)


def build_firmware(board: str = QEMU_BOARD, model_c: str | Path | None = None, baud: int = DEFAULT_BAUD) -> Path:
    """make -C firmware BOARD=board [MODEL_C=...] [BAUD=...]; returns the ELF (rebuilt only when
    sources changed). With `model_c` (from `hwnas export --format c`) the model is built in;
    `baud` sets a real board's serial line (the host's profile says the same:
    `connection.baudrate`)."""
    if isinstance(baud, bool) or not isinstance(baud, int) or not 1200 <= baud <= 12_000_000:
        raise DeviceError(f"baud rate {baud!r}: allowed: an integer from 1200 to 12000000")
    if shutil.which("arm-none-eabi-gcc") is None:
        raise DeviceError("building the firmware needs arm-none-eabi-gcc (run tools/setup.sh)")
    if not (FIRMWARE_DIR / "boards" / board).is_dir():
        known = sorted(p.name for p in (FIRMWARE_DIR / "boards").iterdir() if (p / "board.mk").exists())
        raise DeviceError(f"unknown board {board!r}; known: {', '.join(known)}")
    targets = [f"BOARD={board}"]
    if model_c is not None:
        targets.append(f"MODEL_C={Path(model_c).resolve()}")
    if baud != DEFAULT_BAUD:
        targets.append(f"BAUD={baud}")
    proc = make(*targets)
    if proc.returncode != 0:
        raise DeviceError(f"firmware build for {board} failed:\n{proc.stderr.strip()[-3000:]}")
    suffix = ("-builtin" if model_c else "") + (f"-baud{baud}" if baud != DEFAULT_BAUD else "")
    return build_root() / (board + suffix) / "firmware.elf"


def flash_firmware(board: str, baud: int = DEFAULT_BAUD) -> str:
    """Write the firmware to a board attached over ST-LINK (st-flash, else pyocd). QEMU boards
    are "flashed" by starting them with the ELF (`hwnas sim start`)."""
    if board == QEMU_BOARD:
        return "QEMU boards run the ELF directly: hwnas sim start qemu-m7"
    elf = build_firmware(board, baud=baud)
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
