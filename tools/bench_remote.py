#!/usr/bin/env python
"""Do the remote paths measure what the runtime measures? The same artifacts timed through the
Android twin (real `adb` client -> device-side adb -> benchmark_model on LiteRT) against LiteRT
in-process, and through TVM RPC (tracker + server on loopback) against TVM in-process.

    .venv/bin/python tools/bench_remote.py --n 8

Prints one row per sub-network (latency through each path and directly, their ratio, wall
seconds per measurement) and per path the geometric-mean ratio to the direct peer, the largest
deviation, and the overhead in wall time per measurement. The adb server is a private one
(own port and HOME), so the bench never touches a user's phones.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwnas_deploy.devices import driver_for, load_profile
from hwnas_deploy.export import export_subnet
from hwnas_deploy.runtimes import RUNTIMES
from hwnas_deploy.sim.ports import free_port
from hwnas_deploy.spaces import get_space


def _timed(driver, artifact, settings) -> tuple[float, float]:
    t0 = time.perf_counter()
    summary = driver.measure(driver.deploy(artifact, 1), settings)
    return summary.median_ms, time.perf_counter() - t0


def _path(name: str, remote_profile: str, runtime: str, configs, sp, tmp: Path) -> list[tuple]:
    prof = load_profile(remote_profile)
    remote, local = driver_for(prof), driver_for(load_profile("local-cpu"))
    remote.open()
    local.open()
    rows = []
    try:
        for cfg in configs:
            art = export_subnet(sp, cfg, RUNTIMES[runtime].format, tmp)
            via, via_s = _timed(remote, art, prof.settings)
            direct, direct_s = _timed(local, art, prof.settings)
            rows.append((name, sp.config_hash(cfg), via, direct, via_s, direct_s))
            print(f"  {name} {rows[-1][1]}: {via:.3f} vs {direct:.3f} ms ({via / direct:.3f})", file=sys.stderr)
    finally:
        remote.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mcu-mbnet")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--adb-runtime", default="tflite", choices=["tflite", "tflite-int8"])
    ap.add_argument("--paths", default="adb,rpc")
    args = ap.parse_args(argv)
    sp = get_space(args.space)
    configs = sp.sample_unique(args.n, args.seed)
    t_start = time.time()
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        if "adb" in args.paths:
            home = Path(tmp) / "adb-home"
            home.mkdir()
            os.environ.update(HOME=str(home), ANDROID_ADB_SERVER_PORT=str(free_port()))
            os.environ.pop("ANDROID_SERIAL", None)
            try:
                rows += _path(f"adb/{args.adb_runtime}", "sim-android", args.adb_runtime, configs, sp, Path(tmp))
            finally:
                subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
        if "rpc" in args.paths:
            rows += _path("rpc/tvm", "rpc-local", "tvm", configs, sp, Path(tmp))

    print(f"{args.n} {args.space} sub-networks (seed {args.seed}), 1 thread; {time.time() - t_start:.0f} s in all\n")
    print("| path | sub-network | through the path (ms) | in-process (ms) | ratio "
          "| wall s/measurement (path / in-process) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, h, via, direct, via_s, direct_s in rows:
        print(f"| {name} | {h} | {via:.3f} | {direct:.3f} | {via / direct:.3f} | {via_s:.1f} / {direct_s:.1f} |")
    print("\n| path | peer | geo-mean ratio | largest deviation | mean wall s/measurement (path / peer) |")
    print("|---|---|---:|---:|---:|")
    for name, peer in (("adb/tflite", "LiteRT in-process"), ("adb/tflite-int8", "LiteRT in-process"),
                       ("rpc/tvm", "TVM in-process")):
        sel = [r for r in rows if r[0] == name]
        if not sel:
            continue
        ratios = [r[2] / r[3] for r in sel]
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        worst = max(ratios, key=lambda r: abs(r - 1))
        print(f"| {name} | {peer} | {geo:.3f} | {worst:.3f} | {sum(r[4] for r in sel) / len(sel):.2f} / "
              f"{sum(r[5] for r in sel) / len(sel):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
