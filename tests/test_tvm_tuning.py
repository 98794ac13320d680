"""`hwnas tune`: meta-schedule tuning of a network's workloads into the tuning database, its reuse
by later builds in other processes, the TVM version check, resuming a killed run, tuning through
the TVM RPC twin, and tuned measurements kept apart in the store. Budgets are tiny (2 trials per
workload): these tests check the path, `tools/bench_tvm_tuning.py` the speed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwnas_deploy.export.tvm_tuning import Tuning, TuningDatabase, TuningError
from hwnas_deploy.measurement import Measurer, ModuleNetwork
from hwnas_deploy.runtimes import load_runner
from hwnas_deploy.store import Store
from hwnas_deploy.tuning import tune_networks
from tests.conftest import run_cli


def _tiny(width: int = 8, size: int = 16):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 1)).eval()
    return model, torch.randn(1, 3, size, size)


def tiny_network(width: int = 8, size: int = 16) -> ModuleNetwork:
    return ModuleNetwork("test:tvm-tuning", {"width": width, "size": size}, lambda: _tiny(width, size))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A database with the tiny network's workloads tuned on this CPU (2 trials each)."""
    path = tmp_path_factory.mktemp("tuning") / "db"
    run = tune_networks("local-cpu", [tiny_network()], trials=2, tuning_db=path, progress=False)
    return path, run


def test_tuning_stores_a_record_per_workload_and_a_second_run_has_nothing_left(tuned):
    path, run = tuned
    report = run.report
    assert report.workloads >= 2 and report.tuned == report.workloads and report.already == 0
    assert report.trials >= report.workloads  # at least one measured candidate each
    assert all(w["best_us"] is not None and w["best_us"] > 0 for w in report.per_workload)
    assert run.networks[0].tuned == run.networks[0].workloads
    db = TuningDatabase(path)
    spec = Tuning(db, 1).target()
    assert spec["num-cores"] == 1 and db.records(spec) >= report.workloads
    again = tune_networks("local-cpu", [tiny_network()], trials=2, tuning_db=path, progress=False).report
    assert (again.tuned, again.already, again.trials) == (0, report.workloads, 0)


def test_a_second_process_builds_from_the_database_and_the_library_is_right(tuned, tmp_path):
    """`hwnas export --format tvm` in its own process takes every workload from the records, and
    the library computes what torch does."""
    path, run = tuned
    model, x = _tiny()
    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (x,), str(onnx_path), input_names=["input"], dynamo=False)
    out = tmp_path / "out"
    proc = run_cli("export", "--model", str(onnx_path), "--format", "tvm", "--out", str(out), "--tuning-db",
                   str(path), cwd=tmp_path, env={"HWNAS_CACHE_DIR": "off"}, check=True)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    workloads = run.networks[0].workloads
    assert line["tuned_workloads"] == f"{workloads}/{workloads}" and line["tuning_db"] == str(path)
    from hwnas_deploy.artifact import Artifact

    art = Artifact.load(Path(line["path"]))
    assert art.extra["tvm_tuning"]["id"] == TuningDatabase(path).id
    got = load_runner(art, threads=1)(x.numpy())
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)
    # untuned when asked: the same file name, no tuning record
    proc = run_cli("export", "--model", str(onnx_path), "--format", "tvm", "--out", str(out), "--tuning-db", "none",
                   cwd=tmp_path, env={"HWNAS_CACHE_DIR": "off"}, check=True)
    assert "tuned_workloads" not in json.loads(proc.stdout.strip().splitlines()[-1])


def test_records_of_another_tvm_version_are_refused_by_name(tuned, tmp_path):
    import shutil

    stale = tmp_path / "stale"
    shutil.copytree(tuned[0], stale)
    meta = json.loads((stale / "meta.json").read_text())
    meta["tvm"] = "0.19.0"
    (stale / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TuningError, match=r"TVM 0\.19\.0's and this is TVM 0\.27"):
        TuningDatabase(stale)
    proc = run_cli("export", "--space", "mcu-mbnet", "--config", "{}", "--format", "tvm", "--out", str(tmp_path),
                   "--tuning-db", str(stale), cwd=tmp_path)
    assert proc.returncode == 2 and "0.19.0" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(TuningError, match="no meta.json"):
        TuningDatabase(tmp_path / "nothing-here")


def test_profile_stores_tuned_latencies_apart_and_says_how_much_was_tuned(tuned, tmp_path):
    path, run = tuned
    net = tiny_network()
    with Store(str(tmp_path / "s.sqlite")) as store:
        with Measurer("local-cpu", store, artifacts_dir=tmp_path / "a", progress=False, tuning="none") as m:
            plain = m.measure([net], "tvm", sentinel_every_s=0).results[net.config_hash]
        with Measurer("local-cpu", store, artifacts_dir=tmp_path / "a", progress=False, tuning=path) as m:
            tuned_result = m.measure([net], "tvm", sentinel_every_s=0).results[net.config_hash]
            again = m.measure([net], "tvm", sentinel_every_s=0).results[net.config_hash]
        ident = TuningDatabase(path).id
        assert plain.key.runtime == "tvm" and tuned_result.key.runtime == f"tvm@{ident}"
        assert again.status == "stored"  # the tuned key is found again, not confused with the untuned one
        used = tuned_result.artifact.extra["tvm_tuning"]
        assert used["tuned_workloads"] == used["workloads"] == run.networks[0].workloads
        rows = {r["runtime"]: r for r in store.measurements(device="local-cpu")}
        assert set(rows) == {"tvm", f"tvm@{ident}"}
        assert rows[f"tvm@{ident}"]["env"]["tvm_tuning"]["id"] == ident
        assert "tvm_tuning" not in rows["tvm"]["env"]
        from hwnas_deploy.measurement.provenance import provenance_row

        assert provenance_row(rows[f"tvm@{ident}"])["tvm_tuned"].startswith(f"{used['workloads']}/")
        assert provenance_row(rows[f"tvm@{ident}"])["version"].startswith("apache-tvm ")
    # a thread count the database has no records for builds untuned, under the plain key
    with Measurer("local-cpu", None, artifacts_dir=tmp_path / "a", progress=False, tuning=path) as m:
        assert m.plan("tvm", threads=2).tuning is None


def test_a_killed_tuning_run_keeps_its_finished_workloads_and_resumes(tmp_path):
    """SIGKILL once the first workloads are done: the next run tunes only what is left."""
    db = tmp_path / "db"
    script = (f"from tests.test_tvm_tuning import tiny_network; from hwnas_deploy.tuning import tune_networks; "
              f"tune_networks('local-cpu', [tiny_network(16, 24)], trials=3, tuning_db={str(db)!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    try:
        finished = db.glob("*/finished.json")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = [json.loads(p.read_text()) for p in db.glob("*/finished.json")]
            if done and len(done[0]) >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the tuning run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = sum(len(json.loads(p.read_text())) for p in db.glob("*/finished.json"))
    assert finished >= 1
    report = tune_networks("local-cpu", [tiny_network(16, 24)], trials=3, tuning_db=db, progress=False).report
    assert report.already >= finished and report.already + report.tuned == report.workloads
    assert report.tuned >= 1


def test_tuning_through_the_rpc_twin_times_candidates_on_the_server(tmp_path):
    """rpc-local: the twin's tracker and server are started for the run and stopped after it."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run = tune_networks("rpc-local", [tiny_network(4, 8)], trials=2, tuning_db=tmp_path / "db", progress=False)
    assert run.report.tuned == run.report.workloads >= 2
    assert all(w["best_us"] is not None for w in run.report.per_workload)
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [p for p in left if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_devices_that_run_no_tvm_are_refused_by_name(tmp_path):
    proc = run_cli("tune", "--device", "qemu-m7", "--space", "mcu-mbnet", "--samples", "1", "--tuning-db",
                   str(tmp_path / "db"), cwd=tmp_path)
    assert proc.returncode == 2 and "qemu-m7" in proc.stderr and "server or tvm-rpc" in proc.stderr
