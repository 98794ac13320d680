"""The lab on a local Ray cluster of two "hosts" (two Ray nodes on this machine, as Ray's own
cluster tests do): host-a has a Cortex-M7 twin and the local CPU, host-b a second Cortex-M7
twin and the adb twin. Real drivers, real QEMU boards, a real adb client; one store."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict

import pytest
import ray  # the lab extra: tools/setup.sh installs it, so a broken install fails here

from hwnas_deploy.devices import load_profile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.lab import DeviceSpec, connect, lab_devices, resources_for, start_devices, status
from hwnas_deploy.lab.cluster import check_exposure
from hwnas_deploy.measurement.drift import sentinel_for
from hwnas_deploy.profiling import profile
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store
from tests.conftest import private_adb_server, run_cli, small_cells

HOST_A = ["qemu-m7", "local-cpu"]
HOST_B = ["qemu-m7", "sim-android"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with private_adb_server(tmp_path_factory.mktemp("home")):  # the Ray nodes inherit it
        yield from _cluster()


def _cluster():
    from ray.cluster_utils import Cluster

    specs_a = [s for d in HOST_A for s in DeviceSpec.parse(d)]
    specs_b = [s for d in HOST_B for s in DeviceSpec.parse(d)]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "resources": resources_for(specs_a, "host-a")})
    node_b = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources=resources_for(specs_b, "host-b"))
    address = "127.0.0.1:" + cluster.address.rsplit(":", 1)[1]
    connect(address)
    pids: list[int] = []
    try:
        start_devices(specs_a, "host-a")
        start_devices(specs_b, "host-b")
        for actor in lab_devices().values():
            pids += ray.get(actor.state.remote())["pids"]
        yield {"address": address, "cluster": cluster, "node_b": node_b, "pids": pids}
    finally:
        for actor in lab_devices().values():
            try:
                ray.get(actor.close.remote(), timeout=30)
            except ray.exceptions.RayError:
                pass
        ray.shutdown()
        cluster.shutdown()
        for pid in pids:  # twins whose host was killed under them
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def boards_batch(tmp_path_factory):
    """Six small networks (what is tested is the scheduling, not the networks: small blobs upload
    in seconds), and one artifacts folder for the tests that measure them (the second test's blobs
    come from the first's exports)."""
    sp, prof = get_space("nb201"), load_profile("qemu-m7")
    return sp, prof, small_cells(6), tmp_path_factory.mktemp("artifacts")  # the cells other modules convert too


def _no_overlap(timeline):
    per_device = defaultdict(list)
    for device, _, start, end in timeline:
        per_device[device].append((start, end))
    for spans in per_device.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)), spans
    return per_device


def test_the_lab_lists_each_device_once_with_its_host(lab):
    st = status(lab["address"])
    assert sorted(d["device"] for d in st["devices"]) == [
        "host-a/local-cpu/0", "host-a/qemu-m7/0", "host-b/qemu-m7/0", "host-b/sim-android/0"]
    assert all(d["state"] == "free" for d in st["devices"])
    assert all(h["address"] == "127.0.0.1" for h in st["hosts"])  # announced on loopback only


def test_a_batch_over_two_boards_is_measured_once_each_and_one_job_per_board_at_a_time(lab, boards_batch, tmp_path):
    sp, prof, configs, artifacts = boards_batch
    with Store(str(tmp_path / "lab.sqlite")) as store:
        report = profile(prof, sp, 0, "firmware", store, configs=configs, lab=lab["address"], progress=False,
                         artifacts_dir=artifacts)
        rows = store.measurements(device="qemu-m7")
        unfit = store.unfit_count()
    assert not report.failed, report.failed
    # every job has exactly one outcome: a stored measurement, or a stored "does not fit" (the
    # board's own arena check is stricter than the space's estimate)
    assert sorted(report.measured + list(report.unfit)) == sorted(sp.config_hash(c) for c in configs)
    assert len(rows) == len(report.measured) >= 4 and len({r["config_hash"] for r in rows}) == len(rows)
    assert unfit == len(report.unfit)
    per_device = _no_overlap(report.timeline)
    assert set(per_device) == {"host-a/qemu-m7/0", "host-b/qemu-m7/0"}  # both boards took jobs
    assert {r["env"]["lab"]["device"] for r in rows} == set(per_device)
    # the same firmware counts the same instructions whichever board ran it
    assert all(r["details"]["count_unit"] == "instructions" for r in rows)
    again = profile(prof, sp, 0, "firmware", Store(str(tmp_path / "lab.sqlite")), configs=configs,
                    lab=lab["address"], progress=False, artifacts_dir=artifacts)
    assert again.measured == [] and len(again.skipped) == 6


def test_local_cpu_and_the_adb_twin_each_measure_their_profile(lab, tmp_path):
    sp = get_space("mcu-mbnet")
    with Store(str(tmp_path / "lab.sqlite")) as store:
        cpu = profile("local-cpu", sp, 3, "onnxruntime", store, seed=3, lab=lab["address"], progress=False)
        # seed 3: test_android's first two networks (their conversions are shared through the cache)
        phone = profile("sim-android", sp, 2, "tflite", store, seed=3, lab=lab["address"], progress=False)
        rows = store.measurements()
        readings = store.measurements(latest_only=False, sentinels=True, config_hash=sentinel_for(sp).config_hash)
    # local-cpu reads its drift sentinel on the lab's device before its first job (and every 5 s);
    # the twin of a phone does not (its profile says so)
    readings = readings[::-1]
    assert cpu.sentinel == {"host-a/local-cpu/0": [r["median_ms"] for r in readings]} and phone.sentinel == {}
    assert [r["details"]["n"] for r in readings] == list(range(len(readings))) and readings
    assert {r["env"]["lab"]["device"] for r in readings} == {"host-a/local-cpu/0"}
    for r in rows:
        drift = r["details"].get("drift")
        if r["device"] == "local-cpu":
            taken = readings[drift["n"]]
            assert (drift["ms"], drift["run"]) == (taken["median_ms"], taken["details"]["run"])
        else:
            assert drift is None
    assert len(cpu.measured) == 3 and cpu.devices == {"host-a/local-cpu/0": 3}
    assert len(phone.measured) == 2 and phone.devices == {"host-b/sim-android/0": 2}
    assert sorted(r["device"] for r in rows) == ["local-cpu"] * 3 + ["sim-android"] * 2
    # what each device measured is what the caller got back, and what its store holds
    got = {(r["device"], r["config_hash"]): r["median_ms"] for r in rows}
    assert got == {(m.key.device, h): m.median_ms for report in (cpu, phone) for h, m in report.results.items()}


def test_a_users_own_model_is_measured_on_the_lab(lab, tmp_path):
    """`hwnas profile --model FILE --lab`: the model travels to the lab's worker as its content
    (the worker's host needs no copy of the file), is measured there, and is stored under its
    content hash in the caller's store."""
    from hwnas_deploy.models import load_model
    from hwnas_deploy.profiling import profile_networks

    model = load_model("zoo:fc-autoencoder")
    with Store(str(tmp_path / "lab.sqlite")) as store:
        report = profile_networks("local-cpu", [model], "onnxruntime", store, lab=lab["address"], progress=False)
        (row,) = store.measurements(space="model")
    assert report.measured == [model.config_hash] and report.devices == {"host-a/local-cpu/0": 1}
    assert row["config_hash"] == model.config_hash and row["macs"] == 264192 and row["median_ms"] > 0
    assert row["env"]["lab"]["device"] == "host-a/local-cpu/0"


def test_search_with_lab_measures_its_validations_on_the_lab(lab, tmp_path):
    """`hwnas search --lab`: a concurrent search's validations go to the lab's local-CPU worker,
    into the caller's store, exactly the budget."""
    out = run_cli("search", "--space", "mcu-mbnet", "--tactic", "concurrent", "--objective",
                  "latency=measure:local-cpu/onnxruntime", "--objective", "sram", "--budget", "6", "--pop", "4",
                  "--generations", "2", "--estimator", "ridge", "--lab", lab["address"], "--db", "s.sqlite",
                  "--out", "run", "--quiet", cwd=tmp_path, check=True, timeout=900).stdout
    assert out.startswith("6 networks validated")
    with Store(str(tmp_path / "s.sqlite")) as store:
        rows = store.measurements(device="local-cpu")
    assert len(rows) == 6 and {r["env"]["lab"]["device"] for r in rows} == {"host-a/local-cpu/0"}


def test_a_profile_no_lab_device_serves_is_refused_by_name(lab, tmp_path):
    with Store(str(tmp_path / "x.sqlite")) as store, pytest.raises(Exception, match="no device of profile 'rpc-local'"):
        profile("rpc-local", "mcu-mbnet", 2, "tvm", store, lab=lab["address"], progress=False)


def test_loopback_unless_allowed():
    check_exposure("127.0.0.1", None, False)
    check_exposure("127.0.0.1", "localhost:6380", False)
    with pytest.raises(ConfigError, match="--node-ip 10.1.2.3 is not a loopback address.*--allow-remote"):
        check_exposure("10.1.2.3", None, False)
    with pytest.raises(ConfigError, match="--address 192.0.2.7:6380 is not a loopback"):
        check_exposure("127.0.0.1", "192.0.2.7:6380", False)
    check_exposure("10.1.2.3", "192.0.2.7:6380", True)


def test_device_specs_are_checked():
    assert [s.profile.name for s in DeviceSpec.parse("qemu-m7*3")] == ["qemu-m7"] * 3
    spec = DeviceSpec.parse("stm32f746-disco@/dev/ttyACM1")[0]
    assert spec.profile_to_drive().connection["url"] == "/dev/ttyACM1"
    assert DeviceSpec.parse("qemu-m7")[0].profile_to_drive().connection["twin"] == "private"
    with pytest.raises(ConfigError, match="say where it is attached, e.g. pixel4-a76@R58M123ABC"):
        DeviceSpec.parse("pixel4-a76")
    with pytest.raises(ConfigError, match="list each real device with its own address"):
        DeviceSpec.parse("stm32f746-disco*2")
    with pytest.raises(ConfigError, match="the count after"):
        DeviceSpec.parse("qemu-m7*0")
    with pytest.raises(ConfigError, match="a server device takes no '@' address"):
        DeviceSpec.parse("local-cpu@x")


def test_a_board_and_then_its_host_die_mid_batch_and_the_jobs_finish_elsewhere(lab, boards_batch, tmp_path):
    """host-b's board is killed under a measurement (its actor reconnects a fresh twin, the job is
    retried), then host-b itself dies: its jobs go to host-a's board; nothing stored is lost and
    nothing is stored twice. Runs last: host-b does not come back."""
    sp, prof, configs, artifacts = boards_batch
    b_board = lab_devices("qemu-m7")["host-b/qemu-m7/0"]
    events, b_pids = [], set()
    remover = threading.Thread(target=lab["cluster"].remove_node, args=(lab["node_b"],))

    def on_measured(config_hash, summary):
        events.append(config_hash)
        if len(events) == 1:  # kill host-b's QEMU while it measures (or between two jobs)
            board_pid = ray.get(b_board.state.remote())["pids"][-1]
            os.kill(board_pid, signal.SIGKILL)
            b_pids.add(board_pid)
        if len(events) == 3:
            b_pids.update(ray.get(b_board.state.remote())["pids"])  # the actor and its new twin
            remover.start()

    with Store(str(tmp_path / "lab.sqlite")) as store:
        report = profile(prof, sp, 0, "firmware", store, configs=configs, lab=lab["address"], progress=False,
                         on_measured=on_measured, artifacts_dir=artifacts)
        rows = store.measurements(device="qemu-m7")
    remover.join()
    assert not report.failed, report.failed
    assert sorted(report.measured + list(report.unfit)) == sorted(sp.config_hash(c) for c in configs)
    assert len(rows) == len(report.measured) >= 4 and len({r["config_hash"] for r in rows}) == len(rows)
    assert any("host-b/qemu-m7/0" in e for e in report.lab_events), report.lab_events
    _no_overlap(report.timeline)
    assert report.devices["host-a/qemu-m7/0"] >= 2
    st = status(lab["address"])
    assert {d["device"]: d["state"] for d in st["devices"]}["host-b/qemu-m7/0"] == "down"
    # the twin host-b's actor restarted after the kill died with its host (sim.owned), not orphaned
    # (its own twins by pid: other test processes may run boards of their own meanwhile)
    assert len(b_pids) >= 2  # the killed QEMU, the actor (and its new twin, once it started one)
    deadline = time.monotonic() + 10
    while _alive(b_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(b_pids)


def _alive(pids: set[int]) -> set[int]:
    import psutil

    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive
