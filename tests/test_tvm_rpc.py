"""The tvm-rpc driver against a real TVM tracker and RPC server on loopback (rpc-local)."""

from __future__ import annotations

import math
from pathlib import Path

import psutil
import pytest

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices import driver_for, load_profile
from hwnas_deploy.devices.profile import parse_profile
from hwnas_deploy.errors import DeviceError
from hwnas_deploy.export import artifact_filename
from hwnas_deploy.profiling import profile
from hwnas_deploy.sim.ports import free_port
from hwnas_deploy.sim.rpc import RpcTwin
from hwnas_deploy.store import Store

SEED = 5


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("tvm-artifacts")


@pytest.fixture(scope="module")
def twin():
    with RpcTwin("test-board") as t:
        yield t


def rpc_profile(tracker: str, key: str = "test-board", **benchmark):
    data = load_profile("rpc-local").to_dict()
    data["connection"] = {"url": f"rpc://{tracker}/{key}", "session_timeout_s": 120}
    data["benchmark"] = {**data["benchmark"], **benchmark}
    return parse_profile(data, "test profile")


def _profile_five(twin, artifacts, tmp_path) -> list[dict]:
    with Store(str(tmp_path / "s.sqlite")) as store:  # five: with three, a run's geometric mean came out 0.81
        report = profile(rpc_profile(twin.address), "mcu-mbnet", 5, "tvm", store, seed=SEED, artifacts_dir=artifacts,
                         progress=False)
        assert len(report.measured) == 5 and not report.failed, report.failed
        rows = store.measurements(device="rpc-local")
    uploads = [p.name for p in Path(twin.tmp).rglob("hwnas-*")]
    assert uploads == [], f"the driver left {uploads} on the server"
    return rows


def test_five_subnetworks_through_rpc_are_stored_and_leave_nothing_on_the_server(twin, artifacts, tmp_path):
    """Upload, remote load and time_evaluator through the tracker: each network stored with the
    server's key and its ten repeats, nothing left behind. (The timing test below measures the same
    five: their TVM builds are in the conversion cache by then.)"""
    for row in _profile_five(twin, artifacts, tmp_path):
        assert row["n"] == 10 and row["details"]["key"] == "test-board"


@pytest.mark.timing
def test_five_subnetworks_through_rpc_match_local_tvm(twin, artifacts, tmp_path):
    prof = rpc_profile(twin.address)
    rows = _profile_five(twin, artifacts, tmp_path)
    local = driver_for(load_profile("local-cpu"))
    local.open()
    ratios = []
    for row in rows:
        art = Artifact.load(artifacts / artifact_filename(f"mcu-mbnet-{row['config_hash']}-b1", "tvm"))
        ratios.append(row["median_ms"] / local.measure(local.deploy(art, 1), prof.settings).median_ms)
    print("TVM RPC / local TVM latency ratios:", [round(r, 3) for r in ratios])
    assert 0.85 < math.exp(sum(map(math.log, ratios)) / len(ratios)) < 1.15, ratios


def test_a_server_that_comes_back_is_requested_again(twin, artifacts, tmp_path):
    restarts = []

    def restart(*_):  # after the first network: the second needs a new session from the tracker
        if not restarts:
            twin.stop_server()
            twin.start_server()
            twin.wait_registered()
            restarts.append(1)

    with Store(str(tmp_path / "r.sqlite")) as store:
        report = profile(rpc_profile(twin.address), "mcu-mbnet", 2, "tvm", store, seed=SEED, artifacts_dir=artifacts,
                         progress=False, on_measured=restart)
        assert (len(report.measured), report.failed, restarts) == (2, {}, [1])


def test_a_server_gone_fails_its_networks_clearly_and_keeps_what_is_stored(twin, artifacts, tmp_path):
    prof = rpc_profile(twin.address)
    with Store(str(tmp_path / "g.sqlite")) as store:
        try:
            report = profile(prof, "mcu-mbnet", 2, "tvm", store, seed=SEED, artifacts_dir=artifacts, progress=False,
                             on_measured=lambda *_: twin.stop_server())
            assert len(report.measured) == 1 and len(report.failed) == 1
            assert all("could not be renewed" in m and "has no server with key 'test-board'" in m
                       for m in report.failed.values()), report.failed
        finally:  # the module's other tests need the server back
            if twin.server is None:
                twin.start_server()
            twin.wait_registered()
        again = profile(prof, "mcu-mbnet", 2, "tvm", store, seed=SEED, artifacts_dir=artifacts, progress=False)
        assert (len(again.skipped), len(again.measured)) == (1, 1)
        assert len(store.measurements(device="rpc-local")) == 2


def test_no_tracker_and_an_unknown_key_are_clear_errors(twin):
    with pytest.raises(DeviceError, match=r"cannot reach the TVM RPC tracker 127\.0\.0\.1:\d+"):
        driver_for(rpc_profile(f"127.0.0.1:{free_port()}")).open()
    with pytest.raises(DeviceError,
                       match=r"has no server with key 'nope' \(servers: test-board \(1 servers, 1 free\)\)"):
        driver_for(rpc_profile(twin.address, "nope")).open()


def test_a_library_for_another_target_is_refused(twin, tmp_path):
    drv = driver_for(rpc_profile(twin.address))
    drv.open()
    art = Artifact(format="tvm", path=str(tmp_path / "x.so"), sha256="0" * 64, inputs=[], outputs=[],
                   target="aarch64-linux-gnu")
    try:
        with pytest.raises(DeviceError, match="compiled for aarch64-linux-gnu; rpc-local needs host"):
            drv.deploy(art, 1)
    finally:
        drv.close()


def test_the_twin_listens_on_loopback_only(twin):
    def listens(p: psutil.Process) -> list:
        try:
            return [c.laddr for c in p.net_connections(kind="inet") if c.status == "LISTEN"]
        except psutil.NoSuchProcess:  # a session's short-lived worker, gone since it was listed
            return []

    for pid in (twin.tracker.pid, twin.server.pid):
        proc = psutil.Process(pid)  # TVM's tracker listens from a worker process it starts
        listening = [addr for p in [proc, *proc.children(recursive=True)] for addr in listens(p)]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
