#!/usr/bin/env python
"""Where a model's instructions go on the Cortex-M7 twin: per function and per translation block.

    .venv/bin/python tools/profile_qemu.py model.hwnb [--kernels portable] [--top 25]

Uploads a blob (`hwnas export --format blob`) to the firmware in QEMU started with
`-d in_asm,exec,nochain`, runs it once, and folds QEMU's log into instructions executed per
firmware function (symbols from the ELF) and per translation block (a straight run of code: its
start address, size and execution count, to read next to `arm-none-eabi-objdump -d`). Counts are
exact, as the timer's under `-icount`. The log is large (about 100 bytes per block executed, ~2 GB
for a 30 M-instruction network); it goes to a temporary folder and is deleted.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwnas_deploy.mcu.firmware import build_firmware
from hwnas_deploy.mcu.link import McuLink
from hwnas_deploy.sim.qemu import QemuBoard

TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def block_sizes(log: Path) -> dict[int, int]:
    """Instructions in each translated block, from the `IN:` listings (first translation wins)."""
    sizes: dict[int, int] = {}
    start, n = None, 0
    with log.open(errors="replace") as f:
        for line in f:
            if line.startswith("0x"):
                if start is None:
                    start, n = int(line[2:10], 16), 0
                n += 1
            elif start is not None:
                sizes.setdefault(start, n)
                start = None
    return sizes


def executions(log: Path, offset: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    with log.open(errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = TRACE.match(line)
            if m:
                counts[int(m.group(1), 16)] += 1
    return counts


def functions(elf: Path) -> list[tuple[int, str]]:
    out = subprocess.run(["arm-none-eabi-nm", "-n", str(elf)], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            syms.append((int(parts[0], 16) & ~1, parts[2]))
    return sorted(syms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("blob", type=Path)
    ap.add_argument("--kernels", choices=["optimised", "portable"], default="optimised")
    ap.add_argument("--top", type=int, default=25, help="rows per table")
    args = ap.parse_args(argv)
    blob = args.blob.read_bytes()
    elf = build_firmware()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "qemu.log"
        with QemuBoard(elf=elf, extra_args=("-d", "in_asm,exec,nochain", "-D", str(log))) as board:
            link = McuLink.open(board.url, timeout=60.0)  # logging every block slows the upload's replies
            link.hello()
            link.load(blob)
            time.sleep(0.5)  # the upload's last blocks reach the log
            offset = log.stat().st_size
            run = link.run(warmup=0, repeats=1, kernels=args.kernels)
            link.close()
        sizes, counts = block_sizes(log), executions(log, offset)
    syms = functions(elf)
    starts = [a for a, _ in syms]
    per_fn: collections.Counter = collections.Counter()
    per_block: collections.Counter = collections.Counter()
    for pc, n in counts.items():
        i = bisect.bisect_right(starts, pc) - 1
        name = syms[i][1] if i >= 0 else "?"
        per_fn[name] += n * sizes.get(pc, 0)
        per_block[(name, pc)] += n * sizes.get(pc, 0)
    total = sum(per_fn.values())
    print(f"{args.blob.name}, {args.kernels} kernels: {total} instructions in the run "
          f"(the board's timer: {run.cycles[0]} ticks)\n")
    print("| function | instructions | share |\n|---|---:|---:|")
    for name, n in per_fn.most_common(args.top):
        print(f"| {name} | {n} | {100 * n / total:.1f} % |")
    print("\n| function | block | size | executions | instructions |\n|---|---|---:|---:|---:|")
    for (name, pc), n in per_block.most_common(args.top):
        print(f"| {name} | 0x{pc:x} | {sizes.get(pc, 0)} | {counts[pc]} | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
