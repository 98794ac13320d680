#!/usr/bin/env python
"""Lab throughput: measurements per minute with 1, 2 and 4 Cortex-M7 twins in a Ray lab on this
machine, against one board driven in-process (the peer, same networks, same run).

    .venv/bin/python tools/bench_lab.py --n 16 [--boards 1,2,4] [--artifacts runs/bench-lab]

The blobs are exported first (cached in --artifacts), so every configuration times the same
thing: upload over the emulated serial line, output check and timed inferences on the board.
For each board count a lab comes up (`hwnas_deploy.lab.up`, loopback), measures `--warmup`
other networks untimed (a lab's Ray workers start and import the toolchain on their first jobs;
a lab that stays up for hours pays that once), profiles the networks into a fresh store and goes
down; the in-process peer is warmed up the same way. Prints measurements per minute, the speed-up over one lab
board, its ratio to ideal linear scaling, and the lab's overhead against the in-process board.
Uploads carry generated weights (the default for measuring since firmware 0.6.0: tens of KB
instead of 0.6-1.1 MB at 20-30 KiB/s over the emulated UART), so a measurement is now mostly the
inferences (a few seconds of emulation) and the output check. `board-s/meas` is board-seconds
per measurement: flat under ideal scaling.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from hwnas_deploy.devices import load_profile
from hwnas_deploy.measurement import Job, Measurer, SubNetwork
from hwnas_deploy.profiling import profile, sample_fitting
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="networks per configuration")
    ap.add_argument("--boards", default="1,2,4")
    ap.add_argument("--artifacts", default="runs/bench-lab", help="blob cache (exports are not timed)")
    ap.add_argument("--port", type=int, default=6391)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="networks measured untimed first, in each configuration")
    args = ap.parse_args()

    from hwnas_deploy import lab

    sp, prof = get_space("mcu-mbnet"), load_profile("qemu-m7")
    drawn = sample_fitting(sp, prof, args.n + args.warmup, seed=args.seed)
    configs, warm = drawn[:args.n], drawn[args.n:]
    artifacts = Path(args.artifacts)
    plan = Measurer(prof, artifacts_dir=artifacts).plan("firmware")
    t0 = time.perf_counter()
    for cfg in drawn:  # export once, outside every timing
        net = SubNetwork(sp, cfg)
        plan.export(Job(plan.key(net), net))
    print(f"{len(configs)} blobs ready in {artifacts} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    def timed(run) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as tmp, Store(str(Path(tmp) / "warm.sqlite")) as store:
            if warm:
                run(store, warm)
        with tempfile.TemporaryDirectory() as tmp, Store(str(Path(tmp) / "bench.sqlite")) as store:
            start = time.perf_counter()
            report = run(store, configs)
            seconds = time.perf_counter() - start
        if report.failed:
            raise SystemExit(f"failed: {report.failed}")
        return seconds, len(report.measured)

    rows = []
    seconds, measured = timed(lambda store, cfgs: profile(prof, sp, 0, "firmware", store, configs=cfgs,
                                                          artifacts_dir=artifacts, progress=False))
    rows.append(("in-process, 1 board", 1, seconds, measured))
    print(f"  in-process: {measured} in {seconds:.1f} s", file=sys.stderr)
    for boards in [int(b) for b in args.boards.split(",")]:
        info = lab.up([f"qemu-m7*{boards}"], port=args.port, host="bench", num_cpus=1)
        try:
            seconds, measured = timed(lambda store, cfgs, a=info.address: profile(
                prof, sp, 0, "firmware", store, configs=cfgs, artifacts_dir=artifacts, progress=False, lab=a))
        finally:
            lab.down(info.address)
        rows.append((f"lab, {boards} board{'s' * (boards > 1)}", boards, seconds, measured))
        print(f"  lab x{boards}: {measured} in {seconds:.1f} s", file=sys.stderr)

    base = next(r for r in rows if r[0].startswith("lab"))
    base_rate = base[3] / base[2] * 60 / base[1]  # per board
    peer_rate = rows[0][3] / rows[0][2] * 60
    print(f"\n{len(configs)} mcu-mbnet networks (firmware int8 blobs) on QEMU mps2-an500 twins; "
          f"host: {os.cpu_count()} cores")
    print(f"{'configuration':<22} {'boards':>6} {'seconds':>8} {'meas/min':>9} {'speed-up':>9} {'vs ideal':>9} "
          f"{'board-s/meas':>13}")
    for name, boards, seconds, measured in rows:
        rate = measured / seconds * 60
        speedup = rate / base_rate
        ideal = speedup / boards
        print(f"{name:<22} {boards:>6} {seconds:>8.1f} {rate:>9.1f} {speedup:>9.2f} {ideal:>9.2f} "
              f"{seconds * boards / measured:>13.1f}")
    lab_one = base[3] / base[2] * 60
    print(f"lab overhead, 1 board vs in-process: {lab_one / peer_rate:.3f}x the in-process rate")


if __name__ == "__main__":
    main()
