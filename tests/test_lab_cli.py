"""`hwnas lab up / status / down` and `hwnas profile --lab` as a user types them: a real `ray
start` head on loopback with two local-CPU workers. (Its own module: `lab down` runs `ray stop`,
which stops every Ray process on the machine, test_lab.py's cluster included.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from hwnas_deploy.sim.ports import free_port
from tests.conftest import run_cli


@pytest.fixture
def lab_tmp():
    """The lab's processes' TMPDIR, where `down` must leave none of its folders (short: Ray puts
    its sockets under it, and a socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_lab_up_profile_status_down_from_the_command_line(tmp_path, lab_tmp):
    address = f"127.0.0.1:{free_port()}"
    up = run_cli("lab", "up", "--device", "local-cpu*2", "--port", address.split(":")[1], "--host", "bench",
                 "--cpus", "1", cwd=tmp_path, timeout=300, env={"TMPDIR": str(lab_tmp)})
    try:
        assert up.returncode == 0, up.stderr
        assert f"lab {address}: host bench serves 2 devices" in up.stdout
        assert "bench/local-cpu/0" in up.stdout and "bench/local-cpu/1" in up.stdout
        st = json.loads(run_cli("lab", "status", "--address", address, "--json", cwd=tmp_path, check=True).stdout)
        assert [(d["device"], d["state"]) for d in st["devices"]] == [("bench/local-cpu/0", "free"),
                                                                      ("bench/local-cpu/1", "free")]
        assert [h["address"] for h in st["hosts"]] == ["127.0.0.1"]
        # every Ray server listens on loopback only (ss: iproute2, installed by tools/setup.sh)
        assert shutil.which("ss"), "ss is missing: run tools/setup.sh (apt package iproute2)"
        listeners = [line for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
                     .splitlines() if any(n in line for n in ('"gcs_server"', '"raylet"', '"ray::'))]
        hosts = {line.split()[3].rsplit(":", 1)[0] for line in listeners}
        assert listeners and hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, listeners
        args = ["profile", "--lab", address, "--device", "local-cpu", "--space", "nb201", "--samples", "4",
                "--runtime", "onnxruntime", "--db", "s.sqlite", "--quiet"]
        out = run_cli(*args, cwd=tmp_path, check=True).stdout
        assert out.startswith("measured 4, already stored 0, failed 0 of 4")
        per_device = dict(part.rsplit(" ", 1) for part in out.split("per device: ")[1].strip().split(", "))
        assert set(per_device) <= {"bench/local-cpu/0", "bench/local-cpu/1"}
        assert sum(map(int, per_device.values())) == 4
        assert list(lab_tmp.glob("hwnas-lab-*"))  # the devices that took jobs hold their folders
        again = run_cli(*args, cwd=tmp_path, check=True).stdout  # the store answers; nothing goes out
        assert again.startswith("measured 0, already stored 4")
        text = run_cli("lab", "status", "--address", address, cwd=tmp_path, check=True).stdout
        assert "2 devices on 1 Ray nodes (127.0.0.1)" in text and text.count(" free ") == 2
    finally:
        down = run_cli("lab", "down", "--address", address, cwd=tmp_path)
    assert down.returncode == 0 and "closed 2 devices" in down.stdout, down.stderr
    assert list(lab_tmp.glob("hwnas-lab-*")) == []
    gone = run_cli("lab", "status", "--address", address, cwd=tmp_path, timeout=120)
    assert gone.returncode == 2 and "is `hwnas lab up` running there?" in gone.stderr


def test_a_lab_on_the_network_needs_allow_remote(tmp_path):
    refused = run_cli("lab", "up", "--device", "local-cpu", "--node-ip", "10.1.2.3", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--node-ip 10.1.2.3 is not a loopback address" in refused.stderr and "--allow-remote" in refused.stderr
    join = run_cli("lab", "up", "--device", "local-cpu", "--address", "127.0.0.1:6380", cwd=tmp_path)
    assert join.returncode == 2 and "is a loopback lab, which is one host" in join.stderr
    unknown = run_cli("lab", "up", "--device", "no-such-board", cwd=tmp_path)
    assert unknown.returncode == 2 and "no-such-board" in unknown.stderr
