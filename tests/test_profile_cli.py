"""`hwnas` end to end, in its own processes, as a user runs it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from hwnas_deploy.store import Store

from .conftest import run_cli

FAST = "--quiet"
NO_SENTINEL = ("--sentinel-every", "0")  # these count rows and exports: no drift readings (test_drift's)


def count(db, locked: int = 0) -> int:
    """Rows stored; `locked` while a writer holds the database (a short timeout: a poll that waits
    out sqlite's default 5 s can miss a whole run)."""
    con = sqlite3.connect(db, timeout=0.1)
    try:
        return con.execute("SELECT count(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError as exc:
        return locked if "locked" in str(exc) else 0
    finally:
        con.close()


def test_profile_onnxruntime_ofa_stores_and_resumes(tmp_path):
    db = tmp_path / "m.sqlite"
    args = ("profile", "--device", "local-cpu", "--space", "ofa-mbv3-w1.0", "--samples", "10",
            "--runtime", "onnxruntime", "--db", str(db), FAST)
    out = run_cli(*args, cwd=tmp_path, check=True)
    assert "measured 10, already stored 0, failed 0 of 10" in out.stdout
    with Store(str(db)) as s:
        rows = s.measurements(device="local-cpu", space="ofa-mbv3-w1.0", runtime="onnxruntime")
        assert len(rows) == 10 and len({r["config_hash"] for r in rows}) == 10
        assert all(r["median_ms"] > 0 and r["n"] >= 20 and r["threads"] == 1 for r in rows)
    again = run_cli(*args, cwd=tmp_path, check=True)
    assert "measured 0, already stored 10" in again.stdout
    png = tmp_path / "lat.png"
    shown = run_cli("show", "--db", str(db), "--plot", str(png), cwd=tmp_path, check=True)
    assert "local-cpu" in shown.stdout and "ofa-mbv3-w1.0" in shown.stdout and " 10 " in shown.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with Store(str(db)) as s:
        (group,) = s.overview()
    # the overview's tau is Kendall's between the stored MACs and latencies (what `show` prints)
    from scipy.stats import kendalltau

    with Store(str(db)) as s:
        rows = s.measurements(device="local-cpu")
    want = kendalltau([r["macs"] for r in rows], [r["median_ms"] for r in rows]).statistic
    assert group["subnets"] == 10 and group["tau_macs"] == pytest.approx(want, abs=1e-12)
    assert f"{want:.3f}" in shown.stdout


@pytest.mark.parametrize("runtime", ["tvm", "tflite", "tflite-int8"])
def test_profile_other_runtimes(tmp_path, runtime):
    db = tmp_path / "m.sqlite"
    from .conftest import small_cells

    configs = tmp_path / "small.jsonl"  # a small cell, converted once for the whole run (test_lifetime's too)
    configs.write_text(json.dumps(small_cells(1)[0]) + "\n")
    out = run_cli("profile", "--device", "local-cpu", "--space", "nb201", "--configs", str(configs),
                  "--runtime", runtime, "--db", str(db), FAST, *NO_SENTINEL, cwd=tmp_path, check=True)
    assert "measured 1, already stored 0, failed 0 of 1" in out.stdout
    with Store(str(db)) as s:
        (row,) = s.measurements(runtime=runtime)
        assert row["median_ms"] > 0 and row["n"] >= 20
    (sidecar,) = (tmp_path / "artifacts").glob("*.json")
    assert json.loads(sidecar.read_text())["format"] == runtime


@pytest.mark.parametrize(
    "args, message",
    [
        (("profile", "--device", "local-cpu", "--space", "nope", "--runtime", "onnxruntime"),
         "unknown search space 'nope'"),
        (("profile", "--device", "pixel99", "--space", "mcu-mbnet", "--runtime", "onnxruntime"),
         "unknown device 'pixel99'"),
        (("profile", "--device", "local-cpu", "--space", "mcu-mbnet", "--runtime", "tensorrt"),
         "unknown runtime 'tensorrt'"),
        (("profile", "--device", "local-cpu", "--space", "mcu-mbnet", "--runtime", "onnxruntime",
          "--db", "/nonexistent/dir/x.sqlite"), "folder /nonexistent/dir does not exist"),
        (("export", "--space", "mcu-mbnet", "--config", '{"ks": [3,', "--format", "onnx", "--out", "o"),
         "malformed JSON at line 1"),
        (("export", "--space", "mcu-mbnet", "--config",
          '{"ks": [3], "e": [3], "d": [2], "w": 0.35, "r": 64}', "--format", "onnx", "--out", "o"),
         "'ks' must be a list of 20"),
        (("export", "--space", "mcu-mbnet", "--config",
          json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": 0.3, "r": 64}), "--format", "onnx",
          "--out", "o"), r"w=0.3 is not allowed; choices: [0.35, 0.5, 0.75, 1.0]"),
    ],
)
def test_bad_input_is_a_clear_error_without_traceback(tmp_path, args, message):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_input_loses_nothing_stored(tmp_path):
    db = tmp_path / "m.sqlite"
    run_cli("profile", "--device", "local-cpu", "--space", "mcu-mbnet", "--samples", "2", "--runtime",
            "onnxruntime", "--db", str(db), FAST, *NO_SENTINEL, cwd=tmp_path, check=True)
    bad = run_cli("profile", "--device", "local-cpu", "--space", "mcu-mbnet", "--samples", "2", "--runtime",
                  "nope", "--db", str(db), FAST, cwd=tmp_path)
    assert bad.returncode == 2 and count(db) == 2


def test_export_cli_writes_verified_artifact(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"ks": [3] * 20, "e": [4] * 20, "d": [2] * 5, "w": 0.5, "r": 96}))
    out = run_cli("export", "--space", "mcu-mbnet", "--config", f"@{cfg}", "--format", "onnx",
                  "--out", str(tmp_path / "o"), cwd=tmp_path, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    (written,) = (tmp_path / "o").glob("*.onnx")
    assert rec["format"] == "onnx" and rec["path"] == str(written)
    # the file computes what the network computes, on an input the export never saw
    import numpy as np

    from hwnas_deploy.artifact import Artifact
    from hwnas_deploy.runtimes import load_runner
    from hwnas_deploy.spaces import get_space

    sp = get_space("mcu-mbnet")
    config = json.loads(cfg.read_text())
    x = sp.example_input(config, seed=9)
    want = sp.build(config)(x).detach().numpy()
    assert np.max(np.abs(load_runner(Artifact.load(written))(x.numpy()) - want)) <= 1e-4


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_run_keeps_measurements_and_resumes(tmp_path, sig):
    db = tmp_path / "m.sqlite"
    args = [sys.executable, "-m", "hwnas_deploy", "profile", "--device", "local-cpu", "--space", "ofa-mbv3-w1.0",
            "--samples", "6", "--runtime", "onnxruntime", "--db", str(db), FAST, *NO_SENTINEL]
    # Ctrl-C as in a terminal: a shell without job control starts background jobs with SIGINT
    # ignored, and the child would inherit that (Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while count(db) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    stored = count(db)
    assert 2 <= stored < 6, "the run should be stopped part-way"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in err
    resumed = run_cli(*args[3:], cwd=tmp_path, check=True)
    assert f"already stored {stored}" in resumed.stdout
    assert count(db) == 6
    with Store(str(db)) as s:
        assert len(s.measurements()) == 6
