#!/usr/bin/env python
"""Blob uploads over the serial line: windowed (protocol 4, several requests in flight) against
stop-and-wait (one request, one reply), on one Cortex-M7 twin, same blobs, same run.

    .venv/bin/python tools/bench_upload.py [--n 3] [--rounds 2]

`--n` `mcu-mbnet` networks drawn to fit qemu-m7 (seed 5, bench_throughput's draw) are exported as
int8 blobs; each is uploaded with its real weights (every byte sent) and latency-only (weights
generated on the board), `--rounds` times in each mode, the two modes alternating; before each
upload a LOAD_BEGIN for another blob makes the board drop the one it holds, so every upload
sends its bytes. Prints per kind of upload the KiB on the wire, seconds, KiB/s and the ratio of
windowed to stop-and-wait throughput (the geometric mean over the uploads), and the retries seen.
"""

from __future__ import annotations

import argparse
import math
import struct
import tempfile
import time
from pathlib import Path

from bench_throughput import fitting_configs

from hwnas_deploy.export import export_subnet
from hwnas_deploy.mcu.link import LOAD_BEGIN, McuLink
from hwnas_deploy.mcu.weights import WEIGHT_SEED, made_blob, made_ranges
from hwnas_deploy.sim.qemu import QemuBoard
from hwnas_deploy.spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3, help="networks")
    ap.add_argument("--rounds", type=int, default=2, help="uploads per network, kind and mode")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    sp = get_space("mcu-mbnet")
    configs = fitting_configs(args.n, args.seed)
    times: dict[tuple[str, bool], list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-upload-") as tmp, QemuBoard() as board:
        link = McuLink.open(board.url)
        info = link.hello()
        for i, cfg in enumerate(configs):
            blob = Path(export_subnet(sp, cfg, "blob", Path(tmp) / str(i)).path).read_bytes()
            ranges = made_ranges(blob)
            kinds = {"real weights": (blob, ()),
                     "latency-only": (made_blob(blob, ranges, WEIGHT_SEED), ranges)}
            for _ in range(args.rounds):
                for kind, (data, made) in kinds.items():
                    for windowed in (True, False):
                        link.request(LOAD_BEGIN, struct.pack("<II", 16, 0))  # the board drops what it holds
                        start = time.perf_counter()
                        load = link.load(data, made=made, seed=WEIGHT_SEED, windowed=windowed)
                        seconds = time.perf_counter() - start
                        assert not load.already_held and load.n_ops > 0
                        times.setdefault((kind, windowed), []).append((seconds, load.sent_bytes))
        link.close()
    print(f"{args.n} mcu-mbnet networks x {args.rounds} rounds on qemu-m7 ({info.firmware}, protocol "
          f"{info.protocol}, receive buffer {info.rx_buffer} B); retries {link.stats['retries']}, "
          f"most requests in flight {link.stats['most_in_flight']}")
    print("| upload | mode | KiB sent (mean) | s (mean) | KiB/s | windowed / stop-and-wait |")
    print("|---|---|---|---|---|---|")
    for kind in ("real weights", "latency-only"):
        rates = {}
        for windowed in (False, True):
            runs = times[(kind, windowed)]
            rates[windowed] = [b / 1024 / s for s, b in runs]
            mean_s = sum(s for s, _ in runs) / len(runs)
            mean_kib = sum(b for _, b in runs) / len(runs) / 1024
            ratio = ""
            if windowed:
                logs = [math.log(w / s) for w, s in zip(rates[True], rates[False], strict=True)]
                ratio = f"{math.exp(sum(logs) / len(logs)):.2f}x"
            mode = "windowed" if windowed else "stop-and-wait"
            print(f"| {kind} | {mode} | {mean_kib:.0f} | {mean_s:.2f} | {mean_kib / mean_s:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
