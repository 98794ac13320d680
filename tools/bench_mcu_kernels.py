#!/usr/bin/env python
"""Instructions per MAC of the firmware's int8 kernels on the QEMU Cortex-M7, by operator kind,
and the upload throughput of the emulated UART.

    .venv/bin/python tools/bench_mcu_kernels.py --n 3

Exports `mcu-mbnet` sub-networks that fit the qemu-m7 budget to model blobs, uploads each to
the firmware in QEMU (-icount shift=7), runs it with per-layer counting and attributes the
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

import numpy as np

from hwnas_deploy.devices.mcu_link import McuLink
from hwnas_deploy.export import export_subnet
from hwnas_deploy.export.blob import HEADER, OP, TENSOR
from hwnas_deploy.sim.qemu import QemuBoard, ticks_to_instructions
from hwnas_deploy.spaces import get_space

TARGETS = {"conv3x3 (stem)": 2.0, "depthwise (all)": 3.0}
UPLOAD_REFERENCE_KIBS = 25.0
KERNEL_SETS = ("portable", "optimised")


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
            out.append((f"depthwise {w[1]}x{w[2]}", o[1] * o[2] * o[3] * w[1] * w[2]))
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
    ap.add_argument("--blobs", type=Path, help="keep exported blobs here and reuse them on the next run")
    args = ap.parse_args(argv)

    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.profiling import sample_fitting

    sp = get_space("mcu-mbnet")
    configs = sample_fitting(sp, load_profile("qemu-m7"), args.n, args.seed)
    # kind -> kernel set -> [instructions, MACs]
    per_kind: dict[str, dict[str, list[float]]] = {}
    totals = {k: [0.0, 0.0] for k in KERNEL_SETS}
    upload_bytes, upload_s = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp, QemuBoard() as board:
        blob_dir = args.blobs or Path(tmp)
        blob_dir.mkdir(parents=True, exist_ok=True)
        link = McuLink.open(board.url)
        link.hello()
        for cfg in configs:
            path = blob_dir / f"{sp.config_hash(cfg)}.hwnb"
            if not path.exists():
                path.write_bytes(Path(export_subnet(sp, cfg, "blob", tmp).path).read_bytes())
            blob = path.read_bytes()
            t0 = time.perf_counter()
            link.load(blob)
            upload_s += time.perf_counter() - t0
            upload_bytes += len(blob)
            kinds = layer_macs(blob)
            macs_total = sum(m for _, m in kinds)
            outputs = {}
            line = [f"{sp.config_hash(cfg)}: {macs_total / 1e6:.1f} M MACs"]
            for kset in KERNEL_SETS:
                run = link.run(warmup=0, repeats=1, per_layer=True, kernels=kset)
                layers = [ticks_to_instructions(c, board.shift) for c in run.layer_cycles]
                for (kind, macs), instr in zip(kinds, layers, strict=True):
                    for name in {kind, "depthwise (all)" if kind.startswith("depthwise") else kind}:
                        cell = per_kind.setdefault(name, {}).setdefault(kset, [0.0, 0.0])
                        cell[0] += instr
                        cell[1] += macs
                whole = ticks_to_instructions(run.cycles[0], board.shift)
                totals[kset][0] += whole
                totals[kset][1] += macs_total
                line.append(f"{kset} {whole / macs_total:.2f} instructions/MAC")
                outputs[kset] = link.infer(link_input_bytes(blob), kernels=kset)
            if outputs["portable"] != outputs["optimised"]:
                raise SystemExit(f"{sp.config_hash(cfg)}: optimised kernels disagree with the portable ones")
            print(", ".join(line) + ", outputs identical", file=sys.stderr, flush=True)
        link.close()

    print(f"\nmcu-mbnet, {args.n} sub-networks fitting qemu-m7 (seed {args.seed}), firmware int8 kernels, "
          "QEMU mps2-an500 -icount shift=7\n")
    print("| operator | MACs | portable instr/MAC | optimised instr/MAC | speed-up | target | optimised / target |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in sorted(per_kind):
        cells = per_kind[kind]
        (pi, macs), (oi, _) = cells["portable"], cells["optimised"]
        target = TARGETS.get(kind)
        tcell = f"{target:.1f} | {oi / macs / target:.2f}x" if target and macs else "- | -"
        if macs == 0:
            print(f"| {kind} | - | {pi:.0f} instr | {oi:.0f} instr | {pi / oi:.2f}x | - | - |")
        else:
            print(f"| {kind} | {macs:.0f} | {pi / macs:.2f} | {oi / macs:.2f} | {pi / oi:.2f}x | {tcell} |")
    p_all, o_all = totals["portable"], totals["optimised"]
    print(f"\nwhole networks: portable {p_all[0] / p_all[1]:.2f}, optimised {o_all[0] / o_all[1]:.2f} "
          f"instructions/MAC ({p_all[0] / o_all[0]:.2f}x fewer instructions)")
    kibs = upload_bytes / 1024 / upload_s
    print(f"upload: {upload_bytes} bytes in {upload_s:.1f} s = {kibs:.1f} KiB/s "
          f"({kibs / UPLOAD_REFERENCE_KIBS:.2f}x the ~{UPLOAD_REFERENCE_KIBS:.0f} KiB/s reference)")
    return 0


def link_input_bytes(blob: bytes) -> bytes:
    """A fixed pseudo-random int8 input of the blob's input size."""
    h = HEADER.unpack_from(blob)
    dims = TENSOR.unpack_from(blob, h[10] + TENSOR.size * h[8])[:4]
    n = dims[0] * dims[1] * dims[2] * dims[3]
    return np.random.default_rng(0).integers(-128, 128, n, dtype=np.int8).tobytes()


if __name__ == "__main__":
    sys.exit(main())
