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

from hwnas_deploy.measurement import Measurer, SubNetwork
from hwnas_deploy.sim.ports import free_port
from hwnas_deploy.spaces import get_space


def _path(name: str, remote_profile: str, runtime: str, configs, sp, tmp: Path) -> list[tuple]:
    """Each network through the remote path, then in-process, one after the other (the artifact is
    exported once, into `tmp`, and shared)."""
    rows = []
    with Measurer(remote_profile, artifacts_dir=tmp, progress=False) as remote, \
            Measurer("local-cpu", artifacts_dir=tmp, progress=False) as local:
        for cfg in configs:
            net = SubNetwork(sp, cfg)
            via = remote.measure([net], runtime, threads=1).results[net.config_hash]
            direct = local.measure([net], runtime, threads=1).results[net.config_hash]
            for r in (via, direct):
                if r.status != "measured":
                    raise SystemExit(f"{net.config_hash} ({r.key.device}): {r.reason}")
            rows.append((name, net.config_hash, via.median_ms, direct.median_ms, via.wall_s, direct.wall_s))
            print(f"  {name} {rows[-1][1]}: {via.median_ms:.3f} vs {direct.median_ms:.3f} ms "
                  f"({via.median_ms / direct.median_ms:.3f})", file=sys.stderr)
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
