from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hwnas_deploy.sim.ports import free_port

REPO = Path(__file__).resolve().parents[1]
DYNAST_DIR = REPO.parent / "shared" / "data" / "dynast_ofa_mbv3"


@pytest.fixture
def store(tmp_path):
    from hwnas_deploy.store import Store

    with Store(str(tmp_path / "t.sqlite")) as s:
        yield s


def small_cells(n: int, seed: int = 0) -> list[dict]:
    """`n` distinct NAS-Bench-201 cells with the fewest parameters (none a constant network):
    blobs of about 0.1 MB that reach a QEMU board over its serial line in seconds (an mcu-mbnet
    network's take 20-40 s), for tests of scheduling, protocol and failure handling."""
    from hwnas_deploy.spaces import get_space
    from hwnas_deploy.spaces.nb201 import used_edges

    sp = get_space("nb201")
    pool = [c for c in sp.sample_unique(200, seed) if any(used_edges(c["ops"]))]
    return sorted(pool, key=lambda c: (sp.params_count(c), sp.config_hash(c)))[:n]


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


@contextmanager
def private_adb_server(home: Path) -> Iterator[Path]:
    """A private adb server (port, HOME for its keys) so tests never touch a user's devices;
    processes started inside (Ray nodes included) inherit it."""
    assert shutil.which("adb"), "the adb client is installed by tools/setup.sh (apt package adb)"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("ANDROID_ADB_SERVER_PORT", str(free_port()))
        mp.setenv("HWNAS_SIM_DIR", str(home / "sim"))
        mp.delenv("ANDROID_SERIAL", raising=False)
        subprocess.run(["adb", "start-server"], capture_output=True, timeout=30, check=True)
        try:
            yield home
        finally:
            subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
