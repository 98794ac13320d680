#!/usr/bin/env python
"""The device loop's throughput on one Cortex-M7 twin: measurements per minute, the old path
against latency-only uploads with cold and with warm conversion caches, same networks, same run.

    .venv/bin/python tools/bench_throughput.py [--n 5] [--seed 5]

Every mode measures the same `mcu-mbnet` networks (drawn to fit qemu-m7) on one QEMU twin into
a fresh store, exporting into a fresh artifacts folder (so each mode pays its exports):
  real, no cache, litert-torch
                       what a measurement cost before: litert-torch's conversion, the whole blob
                       uploaded over the emulated UART (stop-and-wait)
  generated, cold, litert-torch, pipelined
                       `--weights generated`: the board makes the int8 weights up; an empty
                       conversion cache; litert-torch converts (`$HWNAS_TFLITE_DIRECT=0`), the
                       next networks exported while one is measured (the loop of commit 90ececb)
  generated, cold      the same, the float graph written directly (export/tflite_direct.py,
                       LiteRT's quantiser), not pipelined
  generated, warm      the same, with the conversions of the mode before in the cache
  ..., pipelined       the same two with the next network exported while one is measured
                       (a new empty cache for the cold one)
Prints, per mode, measurements per minute, seconds per measurement (export, upload, the rest),
bytes on the serial line, and the speed-up over the first mode; and the instruction counts of
generated against real weights for each network (the latency the two modes report). Last, the
same networks on the phone's twin (`sim-android`: fp32 TFLite pushed over adb, timed by
benchmark_model on this host, 5 warm-ups and 30 runs), with an empty conversion cache (litert-torch,
then the direct float graph) and with a warm one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hwnas_deploy.devices import load_profile
from hwnas_deploy.export.tflite import DIRECT_ENV_VAR
from hwnas_deploy.measurement import Measurer, SubNetwork
from hwnas_deploy.profiling import sample_fitting
from hwnas_deploy.spaces import get_space

ANDROID_TARGET = 20  # measurements per minute (issue 22)


def fitting_configs(n: int, seed: int) -> list[dict]:
    """`n` mcu-mbnet configs drawn to fit 85 % of qemu-m7's budgets: the space's footprint is an
    estimate, and a network the board refuses would time an export without a measurement."""
    sp, prof = get_space("mcu-mbnet"), load_profile("qemu-m7")
    margin = replace(prof, hardware={**prof.hardware, **{k: int(0.85 * prof.hardware[k])
                                                         for k in ("sram_bytes", "flash_bytes")}})
    return sample_fitting(sp, margin, n, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5, help="networks per mode")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    sp, prof = get_space("mcu-mbnet"), load_profile("qemu-m7")
    nets = [SubNetwork(sp, c) for c in fitting_configs(args.n, args.seed)]
    # (name, weights, conversion cache, pipelined, litert-torch converts)
    modes = [("real, no cache, litert-torch", "real", "off", False, True),
             ("generated, cold, litert-torch, pipelined", "generated", "cold", True, True),
             ("generated, cold", "generated", "cold", False, False),
             ("generated, warm", "generated", "warm", False, False),
             ("generated, cold, pipelined", "generated", "cold", True, False),
             ("generated, warm, pipelined", "generated", "warm", True, False)]
    rows, medians = [], {}
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-throughput-") as tmp:
        cache = Path(tmp) / "cache"
        # one twin for every mode: Measurer starts it with the first measurement and keeps it
        with Measurer(prof, None, progress=False) as m:
            for name, weights, cache_state, pipeline, litert in modes:
                if cache_state == "cold":  # an empty conversion cache, which the next warm mode reuses
                    cache = Path(tmp) / f"cache-{len(rows)}"
                os.environ["HWNAS_CACHE_DIR"] = "off" if cache_state == "off" else str(cache)
                os.environ[DIRECT_ENV_VAR] = "0" if litert else "1"
                m.executor.pipeline = pipeline
                m.artifacts_dir = Path(tmp) / f"artifacts-{len(rows)}"
                start = time.perf_counter()
                report = m.measure(nets, "firmware", weights=weights, force=True)
                seconds = time.perf_counter() - start
                if report.failed or report.unfit:
                    sys.exit(f"{name}: {report.failed or report.unfit}")
                results = [report.results[n.config_hash] for n in nets]
                export_s = sum(r.artifact.export_seconds for r in results)
                upload_s = sum(r.details["upload"]["seconds"] for r in results)
                sent = sum(r.details["upload"]["sent_bytes"] for r in results)
                medians[name] = [r.median_ms for r in results]
                rows.append((name, len(nets) / seconds * 60, seconds / len(nets), export_s / len(nets),
                             upload_s / len(nets), sent / len(nets) / 1024))
        # the phone's twin: the same networks as fp32 TFLite through adb (benchmark_model on this host)
        android = []
        with Measurer("sim-android", None, progress=False) as m:
            for cache_state in ("cold, litert-torch", "cold", "warm"):
                if cache_state.startswith("cold"):
                    cache = Path(tmp) / f"cache-android-{len(android)}"
                os.environ["HWNAS_CACHE_DIR"] = str(cache)
                os.environ[DIRECT_ENV_VAR] = "0" if "litert" in cache_state else "1"
                m.artifacts_dir = Path(tmp) / f"android-{len(android)}"
                start = time.perf_counter()
                report = m.measure(nets, "tflite", force=True)
                seconds = time.perf_counter() - start
                if report.failed:
                    sys.exit(f"sim-android: {report.failed}")
                export_s = sum(report.results[n.config_hash].artifact.export_seconds for n in nets)
                android.append((cache_state, len(nets) / seconds * 60, seconds / len(nets), export_s / len(nets)))
    base = rows[0][1]
    print(f"{args.n} mcu-mbnet networks on qemu-m7 (one QEMU twin), {os.cpu_count()} cores")
    print("| mode | meas/min | s/meas | export s | upload s | KiB sent | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, per_min, per_meas, exp, up, kib in rows:
        print(f"| {name} | {per_min:.1f} | {per_meas:.1f} | {exp:.1f} | {up:.2f} | {kib:.0f} | {per_min / base:.1f}x |")
    rates = {name: rate for name, rate, *_ in rows}
    direct, litert = rates["generated, cold, pipelined"], rates["generated, cold, litert-torch, pipelined"]
    print(f"\ncold, pipelined: the direct float graph {direct:.1f}/min against litert-torch's "
          f"{litert:.1f}/min: {direct / litert:.1f}x")
    print(f"\nthe same networks on sim-android (fp32 TFLite through the adb twin; target >= {ANDROID_TARGET}/min)")
    print("| conversion cache | meas/min | s/meas | export s |")
    print("|---|---|---|---|")
    for cache_state, per_min, per_meas, exp in android:
        print(f"| {cache_state} | {per_min:.1f} | {per_meas:.1f} | {exp:.1f} |")
    assert medians["generated, cold, pipelined"] == medians["generated, cold"], "pipelining changed a count"
    assert medians["generated, cold, litert-torch, pipelined"] == medians["generated, cold"], \
        "the direct float graph changed a count"
    diffs = [abs(g - r) / r for g, r in
             zip(medians["generated, cold"], medians["real, no cache, litert-torch"], strict=True)]
    print(f"latency, generated vs real weights: median |diff| {statistics.median(diffs):.3%}, "
          f"max {max(diffs):.3%} over {len(diffs)} networks")


if __name__ == "__main__":
    main()
