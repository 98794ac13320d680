"""`hwnas doctor`: every piece outside Python's own dependencies that some command needs, whether
it is here, what it is needed for, and the exact command that installs it.

The pieces are external programs (compilers, QEMU, adb), the LiteRT converter's environment, the
optional extras (TVM, LiteRT, Ray, a PostgreSQL driver, nn-Meter) and the bundled files (firmware
sources, device profiles, recipes). Each check only looks (a file, a `--version`, an importable
module); nothing is installed or started.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hwnas_deploy.errors import ExportError

APT = "sudo apt-get install -y"
PIP = "pip install"


@dataclass
class Check:
    piece: str
    ok: bool
    found: str  # version or where; why not, when missing
    needed_for: str
    install: str


def _first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    return ((proc.stdout or proc.stderr).strip().splitlines() or [""])[0][:80]


def _program(name: str, needed_for: str, install: str, version_args: tuple[str, ...] = ("--version",)) -> Check:
    path = shutil.which(name)
    found = f"{_first_line([path, *version_args])} ({path})" if path else "not on PATH"
    return Check(name, path is not None, found, needed_for, install)


def _newlib() -> Check:
    """arm-none-eabi-gcc prints the bare name when it has no such library."""
    gcc = shutil.which("arm-none-eabi-gcc")
    lib = _first_line([gcc, "-print-file-name=libc_nano.a"]) if gcc else ""
    ok = bool(lib) and Path(lib).is_file()
    return Check("newlib (arm-none-eabi)", ok, lib if ok else "libc_nano.a not found",
                 "linking the MCU firmware", f"{APT} libnewlib-arm-none-eabi")


def _module(module: str, distribution: str, needed_for: str, extra: str) -> Check:
    if importlib.util.find_spec(module) is None:
        return Check(distribution, False, "not installed", needed_for, f"{PIP} 'hwnas-deploy[{extra}]'")
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "installed"
    return Check(distribution, True, version, needed_for, f"{PIP} 'hwnas-deploy[{extra}]'")


def _converter() -> Check:
    from hwnas_deploy.export.litert_env import converter_python, made_from, requirements_digest

    try:
        python = converter_python()
    except ExportError as exc:
        return Check("LiteRT converter environment", False, str(exc).split(";")[0],
                     "TFLite exports (tflite, tflite-int8) and int8 firmware blobs", "hwnas setup converter")
    stamp = made_from(python.parent.parent)
    stale = stamp is not None and stamp != requirements_digest()
    return Check("LiteRT converter environment", True,
                 f"{python}" + (" (made from older requirements: run `hwnas setup converter`)" if stale else ""),
                 "TFLite exports (tflite, tflite-int8) and int8 firmware blobs", "hwnas setup converter")


def _bundled() -> list[Check]:
    from hwnas_deploy.devices.profile import available_profiles
    from hwnas_deploy.mcu.firmware import FIRMWARE_DIR, build_root, firmware_version
    from hwnas_deploy.search.recipe import available_recipes

    reinstall = f"{PIP} --force-reinstall hwnas-deploy"
    makefile = FIRMWARE_DIR / "Makefile"
    profiles, recipes = available_profiles(), available_recipes()
    return [
        Check("firmware sources", makefile.is_file(),
              f"{firmware_version()} at {FIRMWARE_DIR}, built in {build_root()}" if makefile.is_file()
              else f"no {makefile}", "hwnas firmware build, MCU boards and their twin", reinstall),
        Check("device profiles", bool(profiles), f"{len(profiles)} (`hwnas devices`)",
              "every measurement", reinstall),
        Check("search recipes", bool(recipes), f"{len(recipes)} (`hwnas search --list`)", "hwnas search RECIPE",
              reinstall),
    ]


def checks() -> list[Check]:
    """Every piece, in the order a user meets them."""
    return [
        *_bundled(),
        _converter(),
        _program("make", "building the firmware and its host runtime", f"{APT} make"),
        _program("gcc", "the firmware's runtime built for this host (MCU output checks, blob exports)", f"{APT} gcc"),
        _program("arm-none-eabi-gcc", "building the Cortex-M firmware", f"{APT} gcc-arm-none-eabi"),
        _newlib(),
        _program("qemu-system-arm", "the Cortex-M7 twin (qemu-m7)", f"{APT} qemu-system-arm"),
        _program("adb", "Android phones and their twin (sim-android)", f"{APT} adb", ("version",)),
        _program("aarch64-linux-gnu-gcc", "TVM libraries for aarch64 boards (--target aarch64-linux-gnu)",
                 f"{APT} gcc-aarch64-linux-gnu"),
        _module("onnxruntime", "onnxruntime", "--runtime onnxruntime (the host's default)", "all"),
        _module("ai_edge_litert", "ai-edge-litert", "--runtime tflite / tflite-int8 on this host", "litert"),
        _module("tvm", "apache-tvm", "--runtime tvm, export --format tvm, TVM RPC boards", "tvm"),
        _module("ray", "ray", "a hardware lab (hwnas lab, --lab)", "lab"),
        _module("psycopg", "psycopg", "a lab's PostgreSQL store (--db postgresql+psycopg://...)", "lab"),
        _module("nn_meter", "nn-meter", "nn-Meter's predictors (--estimators nn-meter:NAME)", "nn-meter"),
    ]
