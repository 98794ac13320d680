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


# Parallel runs (pytest-xdist, `-n auto` in pyproject.toml): a module's tests stay on one worker,
# so its module fixtures (exports, twins, a trained supernet) are built once; the Ray modules share
# one worker, since `ray stop` stops every Ray process on the machine. Modules are handed out in
# collection order (`--no-loadscope-reorder`), so the longest go first and the short ones fill in
# after. Tests marked `timing` compare wall-clock latencies: tools/test.sh runs them after the
# others, alone in one process (beside other tests, a 5 ms inference is preempted where a 0.2 ms
# one is not, and ratios between the two come out 2x off).
GROUPS = {"test_lab": "ray", "test_lab_cli": "ray"}
LONGEST_FIRST = ["test_lab", "test_lab_cli", "test_mcu", "test_recipes", "test_profile_cli", "test_models", "test_tvm_rpc",
                 "test_android", "test_lab_store", "test_packaging", "test_supernet", "test_differentiable",
                 "test_predictors", "test_blox", "test_search", "test_lifetime"]
#: modules that need a twin, train a supernet or export and measure many networks: left out of
#: the inner loop `pytest -m "not slow"`
SLOW = {"test_lab", "test_lab_cli", "test_mcu", "test_recipes", "test_profile_cli", "test_tvm_rpc", "test_android",
        "test_supernet", "test_differentiable", "test_predictors", "test_blox", "test_search", "test_lut",
        "test_blob", "test_export", "test_lifetime", "test_models", "test_lab_store", "test_packaging"}


def module_of(nodeid: str) -> str:
    return Path(nodeid.split("::", 1)[0]).stem


def pytest_xdist_make_scheduler(config, log):
    """Hand out whole modules (GROUPS: several modules as one). Our own scheduler rather than
    xdist's `--dist loadgroup`: xdist 3.8 groups by a suffix it writes to `item._nodeid`, which
    pytest 9.2 no longer reads, so every test went to whichever worker was free and each one
    built its module's fixtures again."""
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return GROUPS.get(module_of(nodeid), module_of(nodeid))

    return ModuleScheduling(config, log)


def pytest_configure(config):
    """One conversion cache for the whole run (xdist workers and the CLI processes inherit it),
    kept between runs in .pytest_cache, never the user's: a network that several modules export
    is converted once. A given $HWNAS_CACHE_DIR (or "off") is respected."""
    os.environ.setdefault("HWNAS_CACHE_DIR", str(REPO / ".pytest_cache" / "hwnas-conversions"))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one compute thread per worker (and per process it starts): the workers already fill the
        # cores, and OpenMP threads beside them only spin against each other
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = "1"
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(module_of(item.nodeid), len(rank)))  # stable: a module's order stays
    for item in items:
        if module_of(item.nodeid) in SLOW:
            item.add_marker(pytest.mark.slow)


def round_noise(report, hashes) -> float:
    """The host's own noise in a measurement `report` taken in rounds: the median, over the
    networks `hashes`, of the range of a network's round medians relative to their median."""
    import numpy as np

    return float(np.median([np.ptp(r.rounds_ms) / r.median_ms for h in hashes for r in [report.results[h]]]))


@pytest.fixture
def store(tmp_path):
    from hwnas_deploy.store import Store

    with Store(str(tmp_path / "t.sqlite")) as s:
        yield s


def small_cells(n: int, seed: int = 0) -> list[dict]:
    """`n` distinct NAS-Bench-201 cells with the fewest parameters (none a constant network):
    small blobs that export fast and reach a QEMU board in about a second, for tests of
    scheduling, protocol and failure handling."""
    from hwnas_deploy.spaces import get_space
    from hwnas_deploy.spaces.nb201 import used_edges

    sp = get_space("nb201")
    pool = [c for c in sp.sample_unique(200, seed) if any(used_edges(c["ops"]))]
    return sorted(pool, key=lambda c: (sp.params_count(c), sp.config_hash(c)))[:n]


def run_cli(*args: str, cwd: Path, timeout: float = 600, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `hwnas` as a user would, in its own process (`env`: variables to add)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
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
