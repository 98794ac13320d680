#!/usr/bin/env python
"""Instructions per MAC of the firmware's int8 kernels on the QEMU Cortex-M7, by operator kind,
and the upload throughput of the emulated UART.

    .venv/bin/python tools/bench_mcu_kernels.py --n 3

Exports `mcu-mbnet` sub-networks that fit the qemu-m7 budget to model blobs, uploads each to
the firmware in QEMU (-icount shift=3), runs it with per-layer counting and attributes the
instructions of each layer to its operator kind (stem = the first, dense 3x3 convolution;
pointwise = 1x1 convolutions; depthwise; fully connected). Prints instructions/MAC per kind
next to the target of issue 3 (3x3 conv <= 2, depthwise <= 3), as a ratio, and the upload
throughput next to FACTS.md's reference of ~25 KiB/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


from hwnas_deploy.devices.mcu_link import McuLink
from hwnas_deploy.export import export_subnet
from hwnas_deploy.export.blob import HEADER, OP, TENSOR
from hwnas_deploy.sim.qemu import QemuBoard, ticks_to_instructions
from hwnas_deploy.spaces import get_space

TARGETS = {"conv3x3 (stem)": 2.0, "depthwise": 3.0}
UPLOAD_REFERENCE_KIBS = 25.0


def layer_macs(blob: bytes) -> list[tuple[str, int]]:
    """(kind, MACs) of every op in a blob, from its tensor and op tables."""
    h = HEADER.unpack_from(blob)
    n_tensors, n_ops, tensors_off, ops_off = h[5], h[6], h[10], h[11]
    tensors = [TENSOR.unpack_from(blob, tensors_off + TENSOR.size * i) for i in range(n_tensors)]
    out = []
    for i in range(n_ops):
        op = OP.unpack_from(blob, ops_off + OP.size * i)
        opcode, inputs, output = op[0], op[3:7], op[2]
        o = tensors[output][:4]
        if opcode == 1:  # conv
            w = tensors[inputs[1]][:4]  # O, KH, KW, I
            kind = "pointwise" if w[1] == w[2] == 1 else f"conv{w[1]}x{w[2]} (stem)"
            out.append((kind, o[1] * o[2] * o[3] * w[1] * w[2] * w[3]))
        elif opcode == 2:
            w = tensors[inputs[1]][:4]
            out.append(("depthwise", o[1] * o[2] * o[3] * w[1] * w[2]))
        elif opcode == 5:
            w = tensors[inputs[1]][:4]
            out.append(("fully connected", w[2] * w[3]))
        else:
            out.append(({3: "add", 4: "mean", 6: "pad"}[opcode], 0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="sub-networks")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.profiling import sample_fitting

    sp = get_space("mcu-mbnet")
    configs = sample_fitting(sp, load_profile("qemu-m7"), args.n, args.seed)
    per_kind: dict[str, list[float]] = {}
    totals = []
    upload_bytes, upload_s = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp, QemuBoard() as board:
        link = McuLink.open(board.url)
        link.hello()
        for cfg in configs:
            art = export_subnet(sp, cfg, "blob", tmp)
            blob = Path(art.path).read_bytes()
            t0 = time.perf_counter()
            link.load(blob)
            upload_s += time.perf_counter() - t0
            upload_bytes += len(blob)
            run = link.run(warmup=0, repeats=1, per_layer=True)
            layers = [ticks_to_instructions(c, board.shift) for c in run.layer_cycles]
            kinds = layer_macs(blob)
            for (kind, macs), instr in zip(kinds, layers, strict=True):
                per_kind.setdefault(kind, [0.0, 0.0])
                per_kind[kind][0] += instr
                per_kind[kind][1] += macs
            macs_total = sum(m for _, m in kinds)
            totals.append((sp.config_hash(cfg), macs_total, ticks_to_instructions(run.cycles[0], board.shift)))
            print(f"{sp.config_hash(cfg)}: {macs_total / 1e6:.1f} M MACs, "
                  f"{totals[-1][2] / macs_total:.2f} instructions/MAC", file=sys.stderr, flush=True)
        link.close()

    print(f"\nmcu-mbnet, {args.n} sub-networks fitting qemu-m7 (seed {args.seed}), firmware portable int8 kernels, "
          "QEMU mps2-an500 -icount shift=3\n")
    print("| operator | instructions | MACs | instructions/MAC | target | ratio to target |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, (instr, macs) in sorted(per_kind.items()):
        if macs == 0:
            print(f"| {kind} | {instr:.0f} | - | - | - | - |")
            continue
        per_mac = instr / macs
        target = TARGETS.get(kind)
        cells = f"{target:.1f} | {per_mac / target:.1f}x" if target else "- | -"
        print(f"| {kind} | {instr:.0f} | {macs:.0f} | {per_mac:.2f} | {cells} |")
    all_instr = sum(t[2] for t in totals)
    all_macs = sum(t[1] for t in totals)
    print(f"\nwhole networks: {all_instr / all_macs:.2f} instructions/MAC")
    kibs = upload_bytes / 1024 / upload_s
    print(f"upload: {upload_bytes} bytes in {upload_s:.1f} s = {kibs:.1f} KiB/s "
          f"({kibs / UPLOAD_REFERENCE_KIBS:.2f}x the ~{UPLOAD_REFERENCE_KIBS:.0f} KiB/s reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
