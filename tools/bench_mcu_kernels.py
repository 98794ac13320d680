#!/usr/bin/env python
"""Instructions per MAC of the firmware's kernels on the QEMU Cortex-M7, by operator kind: int8
portable vs Cortex-M7-optimised side by side, and float32; the upload throughput of the UART.

    .venv/bin/python tools/bench_mcu_kernels.py --n 3 --n-fp32 1

Exports `mcu-mbnet` sub-networks that fit the qemu-m7 budget to int8 model blobs (and smaller
ones to float32 blobs), uploads each to the firmware in QEMU (-icount shift=7: exact instruction
counts), runs it with per-layer counting under each kernel set and attributes the instructions of
each layer to its operator kind (convolutions by kernel size: in mcu-mbnet the only 3x3 one is the
stem; pointwise = 1x1 convolutions; depthwise by kernel size; fully connected). Each int8 network
runs three ways: the portable kernels and the optimised ones on its blob with int8 weights (v1,
`fit_flash` of the export down to no unpacked layer: the same bytes an export with `unpacked=False`
writes), and the optimised kernels on the blob the export makes (v2: weights of the layers with
>= 16 output pixels stored unpacked); all three must give identical outputs. Prints
instructions/MAC per kind next to issue 23's targets (1x1 and 3x3 convolution <= 1.0, 3x3
depthwise <= 2.0, whole networks <= 1.5) as a ratio, the flash of both blobs, the upload
throughput next to FACTS.md's ~25 KiB/s, and the firmware's code size on every board (each must
still link).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hwnas_deploy.export import artifact_filename, export_subnet
from hwnas_deploy.mcu.blob import FLOAT32, HEADER, OPCODES, TENSOR, blob_ops, fit_flash, op_macs
from hwnas_deploy.mcu.link import McuLink, ticks_to_instructions
from hwnas_deploy.sim.qemu import QemuBoard
from hwnas_deploy.spaces import get_space

#: issue 23: instructions per MAC of the optimised int8 kernels
TARGETS = {"conv3x3": 1.0, "pointwise": 1.0, "depthwise 3x3": 2.0}
WHOLE_TARGET = 1.5
UPLOAD_REFERENCE_KIBS = 25.0


def layer_macs(blob: bytes) -> list[tuple[str, int]]:
    """(kind, MACs) of every op in a blob: convolutions by their kernel shape, the rest by name."""
    names = {code: name.lower().replace("_", " ") for name, code in OPCODES.items()}
    names.update({OPCODES["HARD_SWISH"]: "hard-swish", OPCODES["AVERAGE_POOL_2D"]: "average pool",
                  OPCODES["MAX_POOL_2D"]: "max pool"})
    out = []
    for opcode, w, o in blob_ops(blob):
        if opcode == OPCODES["CONV_2D"]:
            kind = "pointwise" if w[1] == w[2] == 1 else f"conv{w[1]}x{w[2]}"
        elif opcode == OPCODES["DEPTHWISE_CONV_2D"]:
            kind = f"depthwise {w[1]}x{w[2]}"
        else:
            kind = names[opcode]
        out.append((kind, op_macs(opcode, w, o)))
    return out


def measure(link: McuLink, board: QemuBoard, blobs: dict[str, bytes], per_kind: dict,
            totals: dict) -> tuple[list[str], int, float]:
    """Upload and run each kernel set's blob; add its per-operator counts to `per_kind`. Returns the
    line to print and the bytes uploaded and seconds it took."""
    outputs, line, loaded, sent, seconds = {}, [], None, 0, 0.0
    for kset, blob in blobs.items():
        if blob != loaded:
            t0 = time.perf_counter()
            link.load(blob)
            seconds += time.perf_counter() - t0
            sent, loaded = sent + len(blob), blob
        kinds = layer_macs(blob)
        macs_total = sum(m for _, m in kinds)
        run = link.run(warmup=0, repeats=1, per_layer=True, kernels="portable" if kset == "portable" else "optimised")
        layers = [ticks_to_instructions(c, board.shift) for c in run.layer_cycles]
        for (kind, macs), instr in zip(kinds, layers, strict=True):
            for name in {kind, "depthwise (all)" if kind.startswith("depthwise") else kind}:
                cell = per_kind.setdefault(name, {}).setdefault(kset, [0.0, 0.0])
                cell[0] += instr
                cell[1] += macs
        whole = ticks_to_instructions(run.cycles[0], board.shift)
        totals.setdefault(kset, [0.0, 0.0])
        totals[kset][0] += whole
        totals[kset][1] += macs_total
        line.append(f"{kset} {whole / macs_total:.2f} instructions/MAC")
        outputs[kset] = link.infer(link_input_bytes(blob), kernels="portable" if kset == "portable" else "optimised")
    if len(set(outputs.values())) != 1:
        raise SystemExit("the optimised kernels disagree with the portable ones")
    return [f"{macs_total / 1e6:.1f} M MACs"] + line, sent, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="int8 sub-networks")
    ap.add_argument("--n-fp32", type=int, default=1, help="float32 sub-networks (blobs 4x the size: slow to upload)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blobs", type=Path, help="keep exported blobs here and reuse them on the next run")
    args = ap.parse_args(argv)

    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.profiling import sample_fitting

    sp = get_space("mcu-mbnet")
    prof = load_profile("qemu-m7")
    jobs = [(cfg, "blob", ("portable", "int8 weights", "optimised"))
            for cfg in sample_fitting(sp, prof, args.n, args.seed)]
    # float32 blobs must fit the QEMU firmware's buffers (2.5 MB blob, 1.25 MB arena): a quarter
    # of those as the int8 estimate
    small = replace(prof, hardware={**prof.hardware, "sram_bytes": 300_000, "flash_bytes": 600_000})
    jobs += [(cfg, "blob-fp32", ("fp32",)) for cfg in sample_fitting(sp, small, args.n_fp32, args.seed + 1)]
    per_kind: dict[str, dict[str, list[float]]] = {}  # kind -> kernel set -> [instructions, MACs]
    totals: dict[str, list[float]] = {}
    upload_bytes, upload_s = 0, 0.0
    flash = [0, 0]  # int8 blobs: bytes with int8 weights, as exported
    with tempfile.TemporaryDirectory() as tmp, QemuBoard() as board:
        blob_dir = args.blobs or Path(tmp)
        blob_dir.mkdir(parents=True, exist_ok=True)
        link = McuLink.open(board.url)
        link.hello()
        for cfg, fmt, kernel_sets in jobs:
            path = blob_dir / artifact_filename(f"{sp.name}-{sp.config_hash(cfg)}", fmt)
            if not path.exists():
                path.write_bytes(Path(export_subnet(sp, cfg, fmt, tmp).path).read_bytes())
            blob = path.read_bytes()
            int8_weights = fit_flash(blob, 1)  # every weight back to int8: the v1 blob
            blobs = {k: int8_weights if k in ("portable", "int8 weights") else blob for k in kernel_sets}
            line, sent, seconds = measure(link, board, blobs, per_kind, totals)
            upload_bytes, upload_s = upload_bytes + sent, upload_s + seconds
            if fmt == "blob":
                flash[0], flash[1] = flash[0] + len(int8_weights), flash[1] + len(blob)
                line.append(f"flash {len(int8_weights) / 1024:.1f} KiB with int8 weights, {len(blob) / 1024:.1f} KiB "
                            "as exported")
            print(f"{sp.config_hash(cfg)} ({fmt}): " + ", ".join(line), file=sys.stderr, flush=True)
        link.close()

    print(f"\nmcu-mbnet on QEMU mps2-an500 (-icount shift=7): {args.n} int8 sub-networks fitting qemu-m7 "
          f"(seed {args.seed}), {args.n_fp32} float32 (seed {args.seed + 1})\n")
    print("| operator | int8 MACs | int8 portable | int8 optimised, int8 weights | int8 optimised (export) | "
          "speed-up | target | optimised / target | fp32 MACs | fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def per_mac(cells: dict, kset: str) -> str:
        instr, macs = cells.get(kset, (0.0, 0.0))
        if kset not in cells:
            return "-"
        return f"{instr / macs:.2f}" if macs else f"{instr:.0f} instr"

    for kind in sorted(per_kind):
        cells = per_kind[kind]
        target = TARGETS.get(kind)
        p_i, macs = cells.get("portable", (0.0, 0.0))
        o_i = cells.get("optimised", (0.0, 0.0))[0]
        speed = f"{p_i / o_i:.2f}x" if o_i else "-"
        tcell = f"{target:.1f} | {o_i / macs / target:.2f}x" if target and macs else "- | -"
        f_macs = cells.get("fp32", (0, 0))[1]
        print(f"| {kind} | {int(macs) or '-'} | {per_mac(cells, 'portable')} | {per_mac(cells, 'int8 weights')} | "
              f"{per_mac(cells, 'optimised')} | {speed} | {tcell} | {int(f_macs) or '-'} | {per_mac(cells, 'fp32')} |")
    print()
    for kset, (instr, macs) in totals.items():
        target = f" (target {WHOLE_TARGET}: {instr / macs / WHOLE_TARGET:.2f}x)" if kset == "optimised" else ""
        print(f"whole networks, {kset}: {instr / macs:.2f} instructions/MAC{target}")
    if "portable" in totals and "optimised" in totals:
        print(f"optimised int8 kernels: {totals['portable'][0] / totals['optimised'][0]:.2f}x fewer instructions "
              "than the portable ones")
    if flash[0]:
        print(f"flash of the int8 blobs: {flash[0] / 1024:.1f} KiB with int8 weights, {flash[1] / 1024:.1f} KiB as "
              f"exported ({flash[1] / flash[0]:.2f}x)")
    kibs = upload_bytes / 1024 / upload_s
    print(f"upload: {upload_bytes} bytes in {upload_s:.1f} s = {kibs:.1f} KiB/s "
          f"({kibs / UPLOAD_REFERENCE_KIBS:.2f}x the ~{UPLOAD_REFERENCE_KIBS:.0f} KiB/s reference)")
    print_code_sizes()
    return 0


def print_code_sizes() -> None:
    """The firmware's code size on every board (each build must link), and the int8 kernels' share."""
    import subprocess

    from hwnas_deploy.mcu.firmware import FIRMWARE_DIR, build_firmware

    def text_bytes(*paths: Path) -> int:
        out = subprocess.run(["arm-none-eabi-size", *map(str, paths)], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1:]
        return sum(int(line.split()[0]) for line in out)

    print("\n| board | firmware code (text) | data | portable int8 kernels | Cortex-M7 int8 kernels |")
    print("|---|---:|---:|---:|---:|")
    for board in sorted(p.name for p in (FIRMWARE_DIR / "boards").iterdir() if (p / "board.mk").exists()):
        elf = build_firmware(board)
        fields = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                                check=True).stdout.splitlines()[1].split()
        objs = elf.parent / "runtime"
        print(f"| {board} | {int(fields[0]) / 1024:.1f} KiB | {int(fields[1])} B | "
              f"{text_bytes(objs / 'kernels_s8.o') / 1024:.1f} KiB | "
              f"{text_bytes(objs / 'kernels_s8_opt.o', objs / 'kernels_s8_m7.o') / 1024:.1f} KiB |")


def link_input_bytes(blob: bytes) -> bytes:
    """A fixed pseudo-random input of the blob's input size and type."""
    h = HEADER.unpack_from(blob)
    record = TENSOR.unpack_from(blob, h[10] + TENSOR.size * h[8])
    n = record[0] * record[1] * record[2] * record[3]
    rng = np.random.default_rng(0)
    if record[4] == FLOAT32:
        return rng.standard_normal(n).astype(np.float32).tobytes()
    return rng.integers(-128, 128, n, dtype=np.int8).tobytes()


if __name__ == "__main__":
    sys.exit(main())
