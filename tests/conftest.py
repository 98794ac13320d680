from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DYNAST_DIR = REPO.parent / "shared" / "data" / "dynast_ofa_mbv3"


@pytest.fixture
def store(tmp_path):
    from hwnas_deploy.store import Store

    with Store(str(tmp_path / "t.sqlite")) as s:
        yield s


def run_cli(*args: str, cwd: Path, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run `hwnas` as a user would, in its own process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas_deploy", *args], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hwnas {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
