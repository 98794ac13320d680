"""Device profiles: one YAML file per device in `device_profiles/`.

    name: local-cpu
    kind: server                     # server | mcu-serial | android-adb | tvm-rpc
    runtimes: [onnxruntime, tvm]
    connection: {url: ..., ...}      # where the device is (see parse_connection), and link settings
    hardware: {core: ..., threads: 2}
    measurement: {threads: 1, batch: 1, warmup: 10, min_repeats: 20, ...,
                  sentinel_every_s: 5,   # drift readings (measurement.drift); the kind's default
                  pipeline: false}       # export the next network while one is measured (the kind's
                                         # default: on for MCU boards; never for a server)
    benchmark: {...}                 # kind-specific settings of the device-side timing
                                     # (android-adb: benchmark_model flags, cool-down; tvm-rpc:
                                     # time_evaluator number/repeat), see BENCHMARK_KEYS
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hwnas_deploy.allowed import BOOLEAN, Allowed, integer, number
from hwnas_deploy.errors import ConfigError, UnknownNameError
from hwnas_deploy.measure import MeasureSettings
from hwnas_deploy.resources import search_path
from hwnas_deploy.runtimes import RUNTIMES

KINDS = ("server", "mcu-serial", "android-adb", "tvm-rpc")
PROFILE_DIRS_ENV = "HWNAS_PROFILE_DIRS"
_TOP_KEYS = {"name", "kind", "description", "runtimes", "connection", "hardware", "measurement", "benchmark"}
BENCHMARK_KEYS: dict[str, set[str]] = {
    "server": {"op_profiling"},
    "mcu-serial": set(),
    "android-adb": {"binary", "cpu_mask", "use_xnnpack", "use_gpu", "op_profiling", "samples", "cooldown_s",
                    "thermal_zone", "max_temp_c", "thermal_wait_s", "min_secs", "reconnect_s"},
    "tvm-rpc": {"number", "repeat", "min_repeat_ms", "cooldown_interval_ms", "samples"},
}
#: seconds between a device's drift-sentinel readings (`measurement.drift`), by kind: MCU boards
#: count cycles or instructions, which do not drift
SENTINEL_EVERY_S: dict[str, float] = {"server": 5.0, "android-adb": 60.0, "tvm-rpc": 60.0, "mcu-serial": 0.0}
#: which device kinds export the next network while one is measured, unless a profile says
PIPELINE: dict[str, bool] = {"mcu-serial": True}


#: the typed fields of a profile's sections: (section, key) -> (check, what is allowed)
FIELDS: dict[tuple[str, str], Allowed] = {
    ("hardware", "sram_bytes"): integer(1), ("hardware", "flash_bytes"): integer(1),
    ("hardware", "clock_hz"): integer(1),
    ("connection", "timeout_s"): number(0), ("connection", "session_timeout_s"): number(0),
    ("connection", "port"): integer(0, 65535), ("connection", "adb_server_port"): integer(1, 65535),
    ("connection", "priority"): integer(0), ("connection", "icount_shift"): integer(0, 10),
    ("connection", "baudrate"): integer(1200, 12_000_000),
    ("benchmark", "samples"): integer(1), ("benchmark", "cooldown_s"): number(0, strict=False),
    ("benchmark", "thermal_zone"): integer(0), ("benchmark", "max_temp_c"): number(0),
    ("benchmark", "thermal_wait_s"): number(0, strict=False), ("benchmark", "min_secs"): number(0, strict=False),
    ("benchmark", "reconnect_s"): number(0, strict=False), ("benchmark", "number"): integer(1),
    ("benchmark", "repeat"): integer(1), ("benchmark", "min_repeat_ms"): number(0, strict=False),
    ("benchmark", "cooldown_interval_ms"): number(0, strict=False),
    ("benchmark", "use_xnnpack"): BOOLEAN, ("benchmark", "use_gpu"): BOOLEAN, ("benchmark", "op_profiling"): BOOLEAN,
}


def with_layer_timing(profile: DeviceProfile) -> DeviceProfile:
    """The profile with per-layer timing switched on (`hwnas profile --layers`): onnxruntime's
    profiler on this machine, benchmark_model's op profiling on phones; MCU boards always count
    per layer. A kind that cannot is an error naming it."""
    from dataclasses import replace

    if profile.kind == "mcu-serial":
        return profile
    if "op_profiling" not in BENCHMARK_KEYS[profile.kind]:
        raise ConfigError(f"--layers: {profile.name} ({profile.kind}) gives no per-layer times; "
                          "local CPUs, Android phones and MCU boards do")
    return replace(profile, benchmark={**profile.benchmark, "op_profiling": True})


def check_fields(data: dict, where: str) -> None:
    """ConfigError naming the file, the field, its value and what is allowed, for the first typed
    field (`FIELDS`) whose value is not allowed."""
    for (section, key), allowed in FIELDS.items():
        values = data.get(section)
        if isinstance(values, dict) and key in values:
            allowed.check(values[key], f"{where}: {section}.{key}")


@dataclass
class DeviceProfile:
    name: str
    kind: str
    runtimes: list[str]
    description: str = ""
    connection: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    batch: int = 1
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    benchmark: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    sentinel_every_s: float | None = None  # 0: no drift readings; None: the kind's (SENTINEL_EVERY_S)
    #: export the next network while one is measured: for devices whose timing is not this
    #: host's CPU's; None: the kind's (PIPELINE: on for MCU boards, whose measurements do not
    #: run on this host's CPU and whose exports are most of a measurement's time)
    pipeline: bool | None = None

    def __post_init__(self):
        if self.pipeline is None:
            self.pipeline = PIPELINE.get(self.kind, False)
        if self.sentinel_every_s is None:
            self.sentinel_every_s = SENTINEL_EVERY_S.get(self.kind, 0.0)

    def require_runtime(self, runtime: str) -> None:
        if runtime not in self.runtimes:
            raise ConfigError(f"device {self.name!r} does not offer runtime {runtime!r}; it offers {self.runtimes}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "runtimes": list(self.runtimes),
            "connection": self.connection,
            "hardware": self.hardware,
            "measurement": {"threads": self.threads, "batch": self.batch, **self.settings.__dict__,
                            "sentinel_every_s": self.sentinel_every_s, "pipeline": self.pipeline},
            **({"benchmark": self.benchmark} if self.benchmark else {}),
        }


def profile_dirs() -> list[tuple[Path, str]]:
    """Where profiles are looked up, first to last, and where each folder comes from:
    $HWNAS_PROFILE_DIRS (os.pathsep-separated), ./device_profiles, the user config folder's
    device_profiles/, the bundled ones (`hwnas_deploy.resources`)."""
    return search_path(PROFILE_DIRS_ENV, "device_profiles")


def available_profiles(with_origin: bool = False) -> dict[str, Path] | dict[str, tuple[Path, str]]:
    """name -> its YAML file (the first found; with `with_origin`, (file, where it comes from))."""
    found: dict[str, tuple[Path, str]] = {}
    for d, origin in profile_dirs():
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, (f, origin))
    return found if with_origin else {name: f for name, (f, _) in found.items()}


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A profile by name (looked up in profile_dirs()) or by the path of its YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        known = available_profiles()
        if str(name_or_path) not in known:
            raise UnknownNameError("device", str(name_or_path), known)
        path = known[str(name_or_path)]
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read device profile {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    return parse_profile(data, str(path))


URL_FORMS = {
    "mcu-serial": "a pyserial URL or port (/dev/ttyACM0, socket://HOST:PORT, rfc2217://HOST:PORT)",
    "android-adb": "adb:SERIAL (adb:R58M123, adb:127.0.0.1:5555; adb: alone is $ANDROID_SERIAL or the only phone)",
    "tvm-rpc": "rpc://TRACKER_HOST:PORT/KEY",
}


def parse_connection(kind: str, connection: Any, where: str) -> dict[str, Any]:
    """A profile's connection with its `url` spelled out into the keys its driver reads.

    One URL says where any device is: `sim:NAME` (a simulated twin, started on demand: NAME is
    qemu-mps2-an500, adbd or tvm-rpc-local), else per kind (`URL_FORMS`). mcu-serial keeps the
    pyserial URL as `url`; `adb:SERIAL` becomes `serial`; `rpc://HOST:PORT/KEY` becomes `tracker`
    and `key`; `sim:NAME` becomes `simulator`. A bare string is the URL alone."""
    conn = {"url": connection} if isinstance(connection, str) else dict(connection)
    url = conn.get("url")
    if url is None:
        return conn
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: connection.url={url!r} must be a non-empty string: sim:NAME or "
                          f"{URL_FORMS.get(kind, 'nothing (a server device has no address)')}")
    if url.startswith("sim:"):
        del conn["url"]
        conn["simulator"] = url[len("sim:"):]
        return conn
    if kind == "mcu-serial":
        return conn
    if kind == "android-adb" and url.startswith("adb:"):
        del conn["url"]
        if url[len("adb:"):]:
            conn["serial"] = url[len("adb:"):]
        return conn
    if kind == "tvm-rpc" and url.startswith("rpc://"):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname and port:
            del conn["url"]
            conn["tracker"] = f"{parts.hostname}:{port}"
            if parts.path.strip("/"):
                conn["key"] = parts.path.strip("/")
            return conn
    raise ConfigError(f"{where}: connection.url={url!r} is not an address of a {kind} device; it takes sim:NAME or "
                      f"{URL_FORMS.get(kind, 'nothing (a server device has no address)')}")


def parse_profile(data: Any, where: str) -> DeviceProfile:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a device profile must be a YAML mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("name", "kind", "runtimes"):
        if key not in data:
            raise ConfigError(f"{where}: missing field {key!r}")
    if data["kind"] not in KINDS:
        raise ConfigError(f"{where}: kind={data['kind']!r} is not one of {list(KINDS)}")
    runtimes = data["runtimes"]
    if not isinstance(runtimes, list) or not runtimes:
        raise ConfigError(f"{where}: runtimes must be a non-empty list, e.g. [onnxruntime]")
    for r in runtimes:
        if r not in RUNTIMES:
            raise ConfigError(f"{where}: runtimes: unknown runtime {r!r}; known: {sorted(RUNTIMES)}")
    for key in ("connection", "hardware", "measurement", "benchmark"):
        if not isinstance(data.get(key, {}), dict) and not (key == "connection" and isinstance(data[key], str)):
            raise ConfigError(f"{where}: {key} must be a mapping" + (" or a URL" if key == "connection" else ""))
    benchmark = dict(data.get("benchmark", {}))
    unknown = set(benchmark) - BENCHMARK_KEYS[data["kind"]]
    if unknown:
        allowed = sorted(BENCHMARK_KEYS[data["kind"]]) or "none"
        raise ConfigError(f"{where}: benchmark: unknown setting(s) {sorted(unknown)} for kind {data['kind']!r}; "
                          f"allowed: {allowed}")
    check_fields(data, where)
    measurement = dict(data.get("measurement", {}))
    threads, batch = measurement.pop("threads", 1), measurement.pop("batch", 1)
    for key, value in (("threads", threads), ("batch", batch)):
        integer(1).check(value, f"{where}: measurement.{key}")
    sentinel_every_s = measurement.pop("sentinel_every_s", SENTINEL_EVERY_S[data["kind"]])
    number(0, strict=False, text="seconds >= 0 (0: no drift sentinel)").check(
        sentinel_every_s, f"{where}: measurement.sentinel_every_s")
    pipeline = measurement.pop("pipeline", PIPELINE.get(data["kind"], False))
    BOOLEAN.check(pipeline, f"{where}: measurement.pipeline")
    if pipeline and data["kind"] == "server":
        raise ConfigError(f"{where}: measurement.pipeline is True; allowed: false for a server (an export "
                          "ahead would share the CPU this device times)")
    return DeviceProfile(
        name=str(data["name"]),
        kind=data["kind"],
        runtimes=list(runtimes),
        description=str(data.get("description", "")),
        connection=parse_connection(data["kind"], data.get("connection", {}), where),
        hardware=dict(data.get("hardware", {})),
        threads=threads,
        batch=batch,
        settings=MeasureSettings.from_mapping(measurement, f"{where}: measurement"),
        benchmark=benchmark,
        path=where,
        sentinel_every_s=float(sentinel_every_s),
        pipeline=pipeline,
    )
