"""What a command starts ends with it (README, "Reliability"): `hwnas profile` on the QEMU and
adb twins and `hwnas search` measuring on QEMU, stopped by SIGTERM or killed by SIGKILL while
their twin runs, leave no process, no temporary file and no adb entry behind.

Every process of a run is found by a marker in its environment that the test gives the command
(`/proc/PID/environ`), not by its name; its temporary files by a TMPDIR of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hwnas_deploy.lifetime import processes_with
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
        try:
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        except FileNotFoundError:  # a folder removed while listed: still being cleaned up
            files = ["(being removed)"]
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


def test_a_run_scope_turns_sigterm_into_an_interrupt_and_cleans_up(tmp_path):
    """SIGTERM raises Terminated (a KeyboardInterrupt) where the command is, the exit status is
    143, the run folder is gone, a child started inside is terminated, and a run folder left by a
    killed run is removed when the next one starts. (In a process of its own: a test runner's
    worker may not run tests in its main thread, where signal handlers live.)"""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"hwnas-run-{dead.pid}-abc"  # a run killed with its watchdog
    (stale / "hwnas-export-x").mkdir(parents=True)
    script = """
import json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path
from hwnas_deploy.lifetime import RunScope, Terminated
scope, facts = RunScope(), {}
try:
    with scope:
        facts["stale_gone_at_start"] = not Path(sys.argv[1]).exists()
        facts["temp_in_run_folder"] = Path(tempfile.mkdtemp()).parent == scope.dir
        child = subprocess.Popen(["sleep", "60"])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
except Terminated:
    facts["terminated"] = True
facts["status"] = scope.exit_status(130)
facts["child"] = child.wait(5)
facts["tmpdir_restored"] = os.environ.get("TMPDIR")
print(json.dumps(facts))
"""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script, str(stale)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts == {"stale_gone_at_start": True, "temp_in_run_folder": True, "terminated": True, "status": 143,
                     "child": -signal.SIGTERM, "tmpdir_restored": str(tmp_path)}
    assert time.monotonic() - t0 < 25  # the sleep was interrupted, not waited out
    assert list(tmp_path.iterdir()) == []


def test_a_write_killed_before_its_rename_leaves_no_temporary_file(tmp_path):
    """A search checkpoint (or predictor, LUT) is written to a temporary file beside it, then
    renamed over it: killed in between, the watchdog removes the temporary file."""
    script = f"""
import os, signal
from hwnas_deploy import datafile
from hwnas_deploy.lifetime import RunScope
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)  # killed just before the rename
with RunScope():
    datafile.write({str(tmp_path / "checkpoint.json")!r}, {{"format": "x", "version": 1}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    deadline = time.monotonic() + 20
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []  # no checkpoint.json*.tmp, no run folder


def test_a_twin_that_dies_under_a_job_is_restarted_and_the_job_taken_again(tmp_path):
    """QEMU killed after the first network: the second network's job fails on the dead twin, a
    new twin is started and the job taken again; nothing is reported failed."""
    from hwnas_deploy.measurement import Measurer, SubNetwork
    from hwnas_deploy.store import Store
    from tests.conftest import small_cells

    nets = [SubNetwork("nb201", cfg) for cfg in small_cells(2)]
    killed: list[int] = []
    with Store(str(tmp_path / "s.sqlite")) as store, \
            Measurer("qemu-m7", store, artifacts_dir=tmp_path / "a", progress=False) as m:
        def kill_the_twin(net, summary):
            if not killed:
                killed.append(m.executor.driver.pids[0])
                os.killpg(killed[0], signal.SIGKILL)

        report = m.measure(nets, "firmware", on_measured=kill_the_twin)
        restarted = m.executor.driver.pids[0]
    assert killed and restarted != killed[0]
    assert len(report.measured) == 2 and not report.failed, report.failed
    assert any("the twin exited" in e and "starting a new one" in e for e in report.lab_events), report.lab_events
