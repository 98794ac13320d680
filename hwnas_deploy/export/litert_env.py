"""The LiteRT converter's own environment, kept apart from the main one.

litert-torch pins xdsl==0.28.0, which needs typing-extensions<4.13, while apache-tvm-ffi (TVM)
needs >=4.13: the two cannot share one environment. The converter runs in its own (same torch,
so `torch.export` programs cross unchanged) as a worker process (`export/litert_worker.py`, which
imports nothing of ours). Where it is, first found:

    $HWNAS_LITERT_PYTHON            an interpreter you name
    .venv-litert beside the active environment   (a checkout: tools/setup.sh makes it)
    <user cache>/litert-converter   (`hwnas setup converter` makes it, for an installed wheel)

Both makers install the same pinned requirements (tools/litert-converter-requirements.txt, in
the wheel too).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from hwnas_deploy.errors import ExportError
from hwnas_deploy.resources import bundled, user_cache_dir

CONVERTER_ENV_VAR = "HWNAS_LITERT_PYTHON"
REQUIREMENTS = "tools/litert-converter-requirements.txt"
STAMP = ".hwnas-stamp"  # the requirements' hash an environment was made from (tools/setup.sh writes it too)


def user_env_dir() -> Path:
    return user_cache_dir() / "litert-converter"


def candidates() -> list[Path]:
    """Interpreters looked for, first to last (module notes)."""
    explicit = os.environ.get(CONVERTER_ENV_VAR)
    if explicit:
        return [Path(explicit)]
    return [Path(sys.prefix).parent / ".venv-litert" / "bin" / "python", user_env_dir() / "bin" / "python"]


def converter_python() -> Path:
    """The converter environment's interpreter (module notes), or an error saying how to make one."""
    for candidate in candidates():
        if candidate.exists():
            return candidate
    tried = ", ".join(map(str, candidates()))
    raise ExportError(f"TFLite export needs the LiteRT converter environment, not found at {tried}; run "
                      f"`hwnas setup converter` (or tools/setup.sh in a checkout), or set {CONVERTER_ENV_VAR}")


def requirements_digest() -> str:
    return hashlib.sha256(bundled(REQUIREMENTS).read_bytes()).hexdigest()[:16]


def made_from(env_dir: Path) -> str | None:
    """The requirements digest an environment was made from (its stamp), None if unstamped."""
    stamp = env_dir / STAMP
    return stamp.read_text().strip() if stamp.exists() else None


def create_converter_env(dest: str | Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Make (or bring up to date) the converter environment at `dest` (default: the user cache)
    from the pinned requirements; returns its interpreter. Needs the package registry (pip)."""
    dest = Path(dest) if dest else user_env_dir()
    python = dest / "bin" / "python"
    if python.exists() and made_from(dest) == requirements_digest():
        log(f"the converter environment at {dest} is up to date")
        return python
    steps = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(dest)])
    steps += [[str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
              [str(python), "-m", "pip", "install", "-q", "-r", str(bundled(REQUIREMENTS))]]
    log(f"making the converter environment at {dest} (a few minutes the first time)")
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ExportError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    (dest / STAMP).write_text(requirements_digest() + "\n")
    return python
