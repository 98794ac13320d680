"""What a command starts ends with it (README, "Reliability"): `hwnas profile` on the QEMU and
adb twins and `hwnas search` measuring on QEMU, stopped by SIGTERM or killed by SIGKILL while
their twin runs, leave no process, no temporary file and no adb entry behind.

Every process of a run is found by a marker in its environment that the test gives the command
(`/proc/PID/environ`), not by its name; its temporary files by a TMPDIR of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hwnas_deploy.lifetime import RunScope, Terminated, processes_with
from tests.conftest import private_adb_server

MARK = "HWNAS_FAULT_MARK"


@pytest.fixture(scope="module")
def adb_home(tmp_path_factory):
    with private_adb_server(tmp_path_factory.mktemp("adb-home")) as home:
        yield home


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def launch(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    mark, tmp = uuid.uuid4().hex, tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, **{MARK: mark}, TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "hwnas_deploy", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, mark, tmp


def wait_for_twin(proc: subprocess.Popen, mark: str, twin: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(twin in cmdline(p) for p in processes_with(f"{MARK}={mark}")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (rc {proc.returncode}) before its twin ran:\n"
                                 + proc.communicate()[1][-3000:])
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no {twin} process of the run within {timeout} s")


def assert_nothing_left(mark: str, tmp: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = processes_with(f"{MARK}={mark}")
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        if not left and not files:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: processes {[cmdline(p)[:120] for p in left]}, files {files[:10]}")
        time.sleep(0.1)


CASES = {
    "profile-qemu": (["profile", "--device", "qemu-m7", "--space", "mcu-mbnet", "--samples", "3", "--runtime",
                      "firmware", "--db", "x.sqlite", "--quiet"], "qemu-system-arm"),
    "profile-android": (["profile", "--device", "sim-android", "--space", "mcu-mbnet", "--samples", "3", "--runtime",
                         "tflite", "--db", "x.sqlite", "--quiet"], "hwnas_deploy.sim.adbd"),
    "search-qemu": (["search", "--space", "mcu-mbnet", "--objective", "macs", "--objective",
                     "latency=measure:qemu-m7/firmware", "--pop", "4", "--generations", "2", "--db", "x.sqlite",
                     "--out", "run", "--quiet"], "qemu-system-arm"),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_stopped_or_killed_command_leaves_nothing(case, sig, adb_home, tmp_path):
    args, twin = CASES[case]
    proc, mark, tmp = launch(args, tmp_path)
    try:
        wait_for_twin(proc, mark, twin)
        time.sleep(1.0)  # into the work: exports and uploads under way, temporary files open
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert "interrupted" in err, err[-3000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    assert_nothing_left(mark, tmp)
    if case == "profile-android":  # the twin's `adb connect` entry is gone too (no offline device listed)
        listed = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=30).stdout
        assert "127.0.0.1:" not in listed, listed
    if case.startswith("profile") and sig == signal.SIGTERM:
        # what was measured before the signal is stored: the same command resumes
        assert "run the same command again to resume" in err, err[-3000:]


def test_a_run_scope_turns_sigterm_into_an_interrupt_and_cleans_up(tmp_path, monkeypatch):
    """In-process: SIGTERM raises Terminated (a KeyboardInterrupt) where the command is, the exit
    status is 143, the run folder is gone, a child started inside is terminated, and a run folder
    left by a killed run is removed when the next one starts."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"hwnas-run-{dead.pid}-abc"  # a run killed with its watchdog: swept at the next start
    (stale / "hwnas-export-x").mkdir(parents=True)
    scope = RunScope()
    child = None
    with pytest.raises(Terminated):
        with scope:
            assert not stale.exists()
            run_dir = Path(tempfile.mkdtemp())
            assert run_dir.parent == scope.dir
            child = subprocess.Popen(["sleep", "60"])
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert scope.exit_status(130) == 143
    assert child.wait(5) == -signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert os.environ.get("TMPDIR") == str(tmp_path)
