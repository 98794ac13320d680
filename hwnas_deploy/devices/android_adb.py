"""The `android-adb` driver: TFLite models timed by `benchmark_model` on a phone, over adb.

Profile `connection`:
    serial: R58M123ABC | 192.168.1.20:5555   (else $ANDROID_SERIAL, else the only device attached)
    simulator: adbd      (no serial: the twin `hwnas sim start` left running, else a private one)
    adb: adb             (the adb command), adb_server_port: 5037, timeout_s: 120
    workdir: /data/local/tmp/hwnas
Profile `benchmark` (how each sample is taken):
    binary: PATH         the benchmark_model to push (the Android build for a phone, e.g. TFLite's
                         android_aarch64_benchmark_model; the twin's is `hwnas-benchmark-model`);
                         $HWNAS_BENCHMARK_MODEL overrides it
    cpu_mask: f0         run under `taskset MASK` (the big cores)
    use_xnnpack: true, use_gpu: false, op_profiling: false, min_secs: 0
    samples: 3           benchmark_model invocations per network; each gives one sample (its median)
    cooldown_s: 5        pause between samples (thermal guard); with thermal_zone: N also wait until
                         /sys/class/thermal/thermal_zoneN/temp <= max_temp_c (at most thermal_wait_s)
    reconnect_s: 30      how long to wait for a device that disappeared mid-sample
`measurement.warmup` and `measurement.min_repeats` become --warmup_runs and --num_runs.

A device that disappears mid-sample is waited for (`reconnect_s`; TCP serials are reconnected),
the tool and model pushed again and the sample taken once more; if it does not come back, that
network fails with the reason and the run goes on (what is stored stays stored).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices.adb import Adb, AdbError
from hwnas_deploy.devices.base import Driver
from hwnas_deploy.devices.benchmark_model import BenchmarkOutputError, BenchmarkResult, parse
from hwnas_deploy.errors import DeviceError
from hwnas_deploy.lifetime import on_exit
from hwnas_deploy.measure import MeasureSettings, Summary, summarize

TWIN_BINARY = "hwnas-benchmark-model"
BINARY_ENV = "HWNAS_BENCHMARK_MODEL"


@dataclass
class Deployed:
    artifact: Artifact
    remote: str
    threads: int


def _flag(value: Any) -> str:
    return "true" if value else "false"


class AndroidAdbDriver(Driver):
    def open(self) -> dict[str, Any]:
        conn, bench = self.profile.connection, self.profile.benchmark
        env_serial = None if conn.get("twin") == "private" else os.environ.get("ANDROID_SERIAL")
        serial = conn.get("serial") or env_serial
        self.adb = Adb(serial or "", conn.get("adb", "adb"), conn.get("adb_server_port"),
                       float(conn.get("timeout_s", 120)))
        if not serial:
            attached = [s for s, i in self.adb.devices().items() if i["state"] == "device"]
            if len(attached) != 1:
                raise DeviceError(f"device {self.profile.name!r}: set connection.serial or $ANDROID_SERIAL "
                                  f"(adb sees {len(attached)} devices: {', '.join(attached) or 'none'})")
            self.adb.serial = attached[0]
        if conn.get("disconnect_on_close"):  # a twin of this run: no offline entry left, even if killed
            on_exit(self.adb.disconnect_command())
        facts = self.adb.ensure_ready()
        self.workdir = str(conn.get("workdir", "/data/local/tmp/hwnas"))
        self.binary = self._binary_path(bench.get("binary"))
        self.remote_binary = f"{self.workdir}/benchmark_model"
        self._prepare_device()
        props = self.adb.shell("getprop ro.product.model; getprop ro.build.version.release; getprop ro.product.cpu.abi")
        model, release, abi = (props.stdout.splitlines() + ["", "", ""])[:3] if props.returncode == 0 else ("", "", "")
        return {"serial": self.adb.serial, "model": model.strip() or facts.get("model"), "android": release.strip(),
                "abi": abi.strip(), "benchmark_binary": str(self.binary), "cpu_mask": bench.get("cpu_mask"),
                "use_gpu": bool(bench.get("use_gpu", False)), "use_xnnpack": bool(bench.get("use_xnnpack", True))}

    def _binary_path(self, configured: str | None) -> Path:
        name = os.environ.get(BINARY_ENV) or configured
        if not name:
            raise DeviceError(
                f"device {self.profile.name!r}: no benchmark_model to push: download TFLite's Android build "
                "(android_aarch64_benchmark_model, https://ai.google.dev/edge/litert/models/measurement) and set "
                f"benchmark.binary in {self.profile.path or 'the profile'} or ${BINARY_ENV}")
        if name == TWIN_BINARY:  # the host build beside this interpreter, also when its venv is not on PATH
            local = Path(sys.executable).parent / TWIN_BINARY
            if local.exists():
                return local
        found = shutil.which(name) or (name if Path(name).expanduser().is_file() else None)
        if not found:
            raise DeviceError(f"device {self.profile.name!r}: benchmark.binary {name!r} is not a file or a command")
        return Path(found).expanduser()

    def _prepare_device(self) -> None:
        self.pushed: set[str] = set()
        out = self.adb.shell(f"mkdir -p {shlex.quote(self.workdir)}")
        if out.returncode != 0:
            raise DeviceError(f"{self.profile.name}: cannot create {self.workdir}: {out.stderr.strip()}")
        self.adb.push(self.binary, self.remote_binary)
        out = self.adb.shell(f"chmod 755 {shlex.quote(self.remote_binary)}")
        if out.returncode != 0:
            raise DeviceError(f"{self.profile.name}: chmod of {self.remote_binary} failed: {out.stderr.strip()}")

    def deploy(self, artifact: Artifact, threads: int, weights: str = "real") -> Deployed:
        if artifact.format not in ("tflite", "tflite-int8"):
            raise DeviceError(f"{self.profile.name} runs TFLite models (benchmark_model), not {artifact.format!r}")
        self.adb.ensure_ready(wait_s=2)
        remote = f"{self.workdir}/{artifact.sha256[:16]}.tflite"
        if remote not in self.pushed:
            self.adb.push(artifact.path, remote)
            self.pushed.add(remote)
        return Deployed(artifact, remote, threads)

    def command(self, handle: Deployed, settings: MeasureSettings) -> str:
        bench = self.profile.benchmark
        args = [
            self.remote_binary, f"--graph={handle.remote}", f"--num_threads={handle.threads}",
            f"--warmup_runs={settings.warmup}", f"--num_runs={settings.min_repeats}",
            f"--min_secs={float(bench.get('min_secs', 0)):g}", "--warmup_min_secs=0",
            f"--use_xnnpack={_flag(bench.get('use_xnnpack', True))}", f"--use_gpu={_flag(bench.get('use_gpu', False))}",
        ]
        if bench.get("op_profiling"):
            args.append("--enable_op_profiling=true")
        mask = bench.get("cpu_mask")
        return shlex.join((["taskset", str(mask)] if mask else []) + args)

    def measure(self, handle: Deployed, settings: MeasureSettings) -> Summary:
        bench = self.profile.benchmark
        samples = int(bench.get("samples", 3))
        results, temps = [], []
        for i in range(samples):
            if i:
                temps.append(self._cool_down())
            results.append(self._sample(handle, settings, i, samples))
        if bench.get("use_gpu"):
            delegate = results[-1].gpu_delegate
            if delegate not in ("applied", "partial"):
                raise DeviceError(f"{self.profile.name}: the GPU delegate was not applied "
                                  f"({delegate or 'not in the log'}); a CPU timing is not stored as a GPU one")
        medians = [r.median_us / 1e3 for r in results]
        summary = summarize(medians, settings.outlier_fence, settings.target_ci)
        summary.details = {
            "sample_statistic": "median of one benchmark_model invocation",
            "runs_per_sample": [r.runs.count for r in results],
            "benchmark_model": [r.to_dict() for r in results],
            "command": self.command(handle, settings),
            "gpu_delegate": results[-1].gpu_delegate,
            **results[-1].layer_details(),
            **({"temperatures_c": temps} if any(t is not None for t in temps) else {}),
        }
        return summary

    def _sample(self, handle: Deployed, settings: MeasureSettings, i: int, n: int) -> BenchmarkResult:
        cmd = self.command(handle, settings)
        for attempt in range(2):
            out = self.adb.shell(cmd, timeout=float(self.profile.connection.get("timeout_s", 120)) + 60)
            try:
                return parse(out.stdout + "\n" + out.stderr)
            except BenchmarkOutputError as exc:
                try:
                    state = self.adb.state()
                except DeviceError:
                    state = None
                if state == "device":
                    raise DeviceError(f"{self.profile.name}: benchmark_model failed on {handle.remote} "
                                      f"(exit {out.returncode}): {exc}") from None
                if attempt:
                    raise DeviceError(f"{self.profile.name}: sample {i + 1}/{n} of {handle.remote}: the device was "
                                      "lost again after reconnecting") from None
                self._reconnect(handle, i, n)
        raise AssertionError("unreachable")

    def _reconnect(self, handle: Deployed, i: int, n: int) -> None:
        wait = float(self.profile.benchmark.get("reconnect_s", 30))
        deadline = time.monotonic() + wait
        last = ""
        while time.monotonic() < deadline:
            try:
                self.adb.ensure_ready(wait_s=1)
                break
            except AdbError as exc:  # not listed yet, or (TCP) its port refuses: not back yet
                last = str(exc)
                time.sleep(0.5)
        else:
            raise DeviceError(f"{self.profile.name}: the device disappeared during sample {i + 1}/{n} of "
                              f"{handle.remote} and did not come back within {wait:g} s ({last})")
        self._prepare_device()  # a phone that rebooted (or a fresh twin) may have lost both files
        self.adb.push(handle.artifact.path, handle.remote)
        self.pushed.add(handle.remote)

    def _cool_down(self) -> float | None:
        bench = self.profile.benchmark
        time.sleep(float(bench.get("cooldown_s", 0)))
        zone = bench.get("thermal_zone")
        if zone is None:
            return None
        limit = float(bench.get("max_temp_c", 45))
        deadline = time.monotonic() + float(bench.get("thermal_wait_s", 120))
        while True:
            out = self.adb.shell(f"cat /sys/class/thermal/thermal_zone{int(zone)}/temp")
            try:
                temp = float(out.stdout.strip()) / 1000.0
            except ValueError:
                return None  # no such zone on this device: the fixed cool-down is all there is
            if temp <= limit or time.monotonic() > deadline:
                return temp
            time.sleep(1.0)

    def close(self) -> None:
        adb = getattr(self, "adb", None)
        if adb is not None and self.profile.connection.get("disconnect_on_close"):
            try:
                adb.disconnect()
            except DeviceError:
                pass
