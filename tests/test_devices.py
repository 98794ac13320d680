from __future__ import annotations

import pytest

from hwnas_deploy.devices import available_profiles, driver_for, load_profile
from hwnas_deploy.devices.profile import parse_profile
from hwnas_deploy.errors import ConfigError, DeviceError, UnknownNameError
from hwnas_deploy.export import export_subnet
from hwnas_deploy.measure import MeasureSettings
from hwnas_deploy.spaces import get_space

GOOD = {"name": "x", "kind": "server", "runtimes": ["onnxruntime"]}


def test_mcu_profile_without_url_or_simulator_is_a_clear_error():
    p = parse_profile({**GOOD, "kind": "mcu-serial", "runtimes": ["firmware"]}, "board.yaml")
    with pytest.raises(DeviceError, match="connection needs a serial 'url'"):
        driver_for(p).open()


@pytest.mark.parametrize(
    "kind, url, connection",
    [
        ("mcu-serial", "/dev/ttyACM0", {"url": "/dev/ttyACM0"}),
        ("mcu-serial", "socket://127.0.0.1:4321", {"url": "socket://127.0.0.1:4321"}),
        ("mcu-serial", "sim:qemu-mps2-an500", {"simulator": "qemu-mps2-an500"}),
        ("android-adb", "adb:R58M123", {"serial": "R58M123"}),
        ("android-adb", "adb:127.0.0.1:5555", {"serial": "127.0.0.1:5555"}),
        ("android-adb", "adb:", {}),
        ("android-adb", "sim:adbd", {"simulator": "adbd"}),
        ("tvm-rpc", "rpc://10.0.0.2:9190/rk3399", {"tracker": "10.0.0.2:9190", "key": "rk3399"}),
        ("tvm-rpc", "sim:tvm-rpc-local", {"simulator": "tvm-rpc-local"}),
    ],
)
def test_one_url_says_where_a_device_is(kind, url, connection):
    runtime = {"mcu-serial": "firmware", "android-adb": "tflite", "tvm-rpc": "tvm"}[kind]
    full = parse_profile({**GOOD, "kind": kind, "runtimes": [runtime], "connection": {"url": url, "timeout_s": 5}},
                         "p.yaml")
    assert full.connection == {**connection, "timeout_s": 5}
    assert parse_profile({**GOOD, "kind": kind, "runtimes": [runtime], "connection": url}, "p.yaml").connection \
        == connection  # the URL alone
    again = parse_profile({**full.to_dict(), "measurement": {}}, "again.yaml")
    assert again.connection == full.connection  # a spelled-out connection parses to itself (lab actors)


@pytest.mark.parametrize(
    "kind, url, message",
    [
        ("android-adb", "/dev/ttyACM0", r"connection.url='/dev/ttyACM0' is not an address of a android-adb device; "
                                        r"it takes sim:NAME or adb:SERIAL"),
        ("tvm-rpc", "rpc://tracker/key", r"it takes sim:NAME or rpc://TRACKER_HOST:PORT/KEY"),
        ("tvm-rpc", "rpc://tracker:x/key", r"rpc://TRACKER_HOST:PORT/KEY"),
        ("server", "socket://h:1", r"nothing \(a server device has no address\)"),
        ("mcu-serial", "", r"connection.url='' must be a non-empty string"),
    ],
)
def test_a_wrong_url_names_the_forms_the_kind_takes(kind, url, message):
    runtime = {"mcu-serial": "firmware", "android-adb": "tflite", "tvm-rpc": "tvm", "server": "onnxruntime"}[kind]
    with pytest.raises(ConfigError, match=r"^p\.yaml: .*" + message):
        parse_profile({**GOOD, "kind": kind, "runtimes": [runtime], "connection": {"url": url}}, "p.yaml")


def test_local_cpu_profile_ships_and_loads():
    assert "local-cpu" in available_profiles()
    p = load_profile("local-cpu")
    assert p.kind == "server" and p.threads == 1 and p.batch == 1
    assert set(p.runtimes) == {"onnxruntime", "tflite", "tflite-int8", "tvm"}
    assert p.settings.min_repeats >= 10


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"kind": "fpga"}, r"kind='fpga' is not one of"),
        ({"runtimes": ["tensorrt"]}, r"unknown runtime 'tensorrt'"),
        ({"runtimes": []}, r"runtimes must be a non-empty list"),
        ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"measurement": {"threads": 0}}, r"measurement.threads is 0; allowed: an integer >= 1"),
        ({"measurement": {"repeats": 5}}, r"unknown setting\(s\) \['repeats'\]"),
        ({"measurement": {"min_repeats": 1}}, r"measurement.min_repeats is 1; allowed: an integer >= 3"),
        ({"measurement": {"min_repeats": 2.5}}, r"measurement.min_repeats is 2.5; allowed: an integer >= 3"),
        ({"measurement": {"warmup": [10]}}, r"measurement.warmup is \[10\]; allowed: an integer >= 0"),
        ({"measurement": {"warmup": "10"}}, r"measurement.warmup is '10'; allowed: an integer >= 0"),
        ({"measurement": {"max_repeats": 5}}, r"measurement.max_repeats is 5; allowed: an integer >= min_repeats \(20\)"),
        ({"measurement": {"target_ci": -1}}, r"measurement.target_ci is -1; allowed: a number between 0 and 1"),
        ({"measurement": {"time_budget_s": 0}}, r"measurement.time_budget_s is 0; allowed: a number of seconds > 0"),
        ({"hardware": {"sram_bytes": "lots"}}, r"hardware.sram_bytes is 'lots'; allowed: an integer >= 1"),
        ({"connection": {"timeout_s": -1}}, r"connection.timeout_s is -1; allowed: a number > 0"),
        ({"connection": {"timeout_s": "soon"}}, r"connection.timeout_s is 'soon'; allowed: a number > 0"),
        ({"connection": {"port": 70000}}, r"connection.port is 70000; allowed: an integer >= 0 and <= 65535"),
        ({"measurement": {"threads": True}}, r"measurement.threads is True; allowed: an integer >= 1"),  # bool is no int
        ({"measurement": {"time_budget_s": float("inf")}}, r"measurement.time_budget_s is inf; allowed: a number"),
        ({"hardware": {"clock_hz": 2.16e8}}, r"hardware.clock_hz is 216000000.0; allowed: an integer >= 1"),
        ({"measurement": {"pipeline": True}}, r"measurement.pipeline is True; allowed: false for a server"),
        ({"measurement": {"pipeline": "yes"}}, r"measurement.pipeline is 'yes'; allowed: "),
    ],
)
def test_bad_profiles_name_file_field_value_and_what_is_allowed(patch, message):
    with pytest.raises(ConfigError, match=r"^dev\.yaml: (\w+: )?" + message):
        parse_profile({**GOOD, **patch}, "dev.yaml")


def test_profile_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML"):
        load_profile(bad)
    missing = tmp_path / "m.yaml"
    missing.write_text("name: m\nkind: server\n")
    with pytest.raises(ConfigError, match=r"m.yaml: missing field 'runtimes'"):
        load_profile(missing)
    with pytest.raises(UnknownNameError, match="unknown device 'pixel9'.*local-cpu"):
        load_profile("pixel9")


def test_profiles_found_in_user_folders(tmp_path, monkeypatch):
    (tmp_path / "lab-box.yaml").write_text("name: lab-box\nkind: server\nruntimes: [onnxruntime]\n")
    monkeypatch.setenv("HWNAS_PROFILE_DIRS", str(tmp_path))
    assert load_profile("lab-box").name == "lab-box"


def test_every_kind_has_its_driver():
    from hwnas_deploy.devices import AndroidAdbDriver, LocalDriver, McuSerialDriver, TvmRpcDriver
    from hwnas_deploy.devices.profile import KINDS

    expected = {"server": LocalDriver, "mcu-serial": McuSerialDriver, "android-adb": AndroidAdbDriver,
                "tvm-rpc": TvmRpcDriver}
    assert set(expected) == set(KINDS)
    for kind, cls in expected.items():
        assert type(driver_for(parse_profile({**GOOD, "kind": kind}, "b.yaml"))) is cls


def test_local_driver_measures_a_real_artifact(tmp_path):
    sp = get_space("mcu-mbnet")
    small = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": 0.35, "r": 64}
    big = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "w": 1.0, "r": 160}
    driver = driver_for(load_profile("local-cpu"))
    info = driver.open()
    assert info["onnxruntime"] and info["cores"] >= 1
    settings = MeasureSettings(warmup=3, min_repeats=10, max_repeats=60, time_budget_s=3)
    results = {}
    for name, cfg in (("small", small), ("big", big)):
        art = export_subnet(sp, cfg, "onnx", tmp_path)
        results[name] = driver.measure(driver.deploy(art, threads=1), settings)
    assert 0 < results["small"].median_ms
    # ~100x the MACs must take clearly longer on a real runtime
    assert sp.macs(big) > 50 * sp.macs(small)
    assert results["big"].median_ms > 5 * results["small"].median_ms


@pytest.mark.parametrize("timeout, error, message", [
    (-1, ConfigError, r"connection.timeout_s is -1; allowed: .*a number > 0"),
    ("soon", ConfigError, r"connection.timeout_s is 'soon'; allowed: .*a number > 0"),
    (1e-6, DeviceError, r"HELLO: no reply"),  # a valid number, too short for any board to answer
])
def test_a_failing_open_leaves_no_twin(timeout, error, message):
    """A qemu-m7 profile whose connection cannot work (set in Python, past the file's checks):
    the driver's error names the field and the value, and the QEMU twin started for it is gone
    with it (the driver closes what open() started)."""
    import psutil

    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.sim.twins import twinned_driver

    prof = load_profile("qemu-m7")
    prof.connection["timeout_s"] = timeout

    def qemus() -> set[int]:
        return {p.pid for p in psutil.Process().children(recursive=True) if "qemu" in p.name()}

    before = qemus()
    with pytest.raises(error, match=message):
        with twinned_driver(prof):
            pass
    assert qemus() == before
