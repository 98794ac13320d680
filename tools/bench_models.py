#!/usr/bin/env python
"""The tinyML reference networks (hwnas_deploy/models/zoo.py) on our Cortex-M7 firmware:
instructions per MAC, peak SRAM and flash, portable vs optimised kernels in the same run, next to
the published results of commercial engines on real Cortex-M7 boards for the same networks.

    .venv/bin/python tools/bench_models.py [--layers]

Each network is exported from torch to a full-integer int8 TFLite model (random weights,
BatchNorm calibrated on random inputs; 16 random calibration samples) and from there to a
firmware blob, checked bit-exact against LiteRT's reference kernels, uploaded to the firmware in
QEMU (mps2-an500, -icount shift=7: exact instruction counts) and run with per-layer counting
three ways: the portable (reference) kernels and the Cortex-M7 kernels on a blob with int8
weights (v1, what firmware before 0.11.0 reads), and the Cortex-M7 kernels on the blob the export
makes (v2: the convolutions that gain store their weights unpacked, at more flash); all three
must give the same output. The peers measured in the same run are the portable kernels and the
int8-weight blob. The published figures are cycles on real boards (ms x
clock / MACs, FACTS.md): a different unit on different hardware, shown for scale, never as a
same-run ratio; QEMU counts instructions, not cycles (no stalls, no cache misses, no dual issue).
Per operator kind, instructions per MAC of both kernel sets over the four networks; beside each
network's arena (hwnas_deploy.mcu.arena) the arena TFLite Micro's GreedyMemoryPlanner would plan
(greedy by size, over the same tensors and lifetimes), the lower bound any plan of that
operator order has (its largest set of tensors alive at once), and the plan if every depthwise
layer whose input dies there wrote its output over it (TinyEngine's in-place depthwise; computed,
the kernels do not do it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hwnas_deploy.mcu.blob import tflite_to_blob
from hwnas_deploy.mcu.link import McuLink, ticks_to_instructions
from hwnas_deploy.models import load_model
from hwnas_deploy.models.zoo import ZOO
from hwnas_deploy.sim.qemu import QemuBoard

#: FACTS.md: MLPerf Tiny closed results, cycles per MAC (ms x clock / MACs): X-CUBE-AI 9.0 on an
#: STM32H7A3 at 280 MHz (v1.2) and Plumerai on an STM32F746 at 216 MHz (v1.0)
PUBLISHED = {"ds-cnn": (1.19, 1.55), "mobilenet-v1-0.25": (0.89, 1.64), "resnet8": (0.91, 1.12),
             "fc-autoencoder": (1.30, 1.88)}
#: issue 23's targets, optimised instructions per MAC (no target set for the other two)
TARGETS = {"mobilenet-v1-0.25": 1.4, "resnet8": 1.2}
TASKS = {"ds-cnn": "keyword spotting", "mobilenet-v1-0.25": "visual wake words", "resnet8": "image classification",
         "fc-autoencoder": "anomaly detection"}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", action="store_true",
                    help="also print every layer's instructions/MAC of the optimised run, per network")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_mcu_kernels import layer_macs, link_input_bytes

    rows, layer_lines = [], []
    per_kind: dict[str, dict[str, list[float]]] = {}  # operator kind -> kernel set -> [instructions, MACs]
    with tempfile.TemporaryDirectory() as tmp, QemuBoard() as board:
        link = McuLink.open(board.url)
        link.hello()
        for name in ZOO:
            model = load_model(f"zoo:{name}")
            art = model.export("blob", Path(tmp) / name)
            # the same network with int8 weights: conversion and calibration are deterministic
            int8_blob = Path(tmp) / name / "int8-weights.hwnb"
            tflite_to_blob(model.export("tflite-int8", Path(tmp) / name).path, int8_blob, unpacked=False)
            counts, outputs = {}, {}
            for kset, which in (("portable", int8_blob), ("int8 weights", int8_blob), ("optimised", art.path)):
                data = Path(which).read_bytes()
                link.load(data)
                kernels = "portable" if kset == "portable" else "optimised"
                run = link.run(warmup=0, repeats=1, per_layer=True, kernels=kernels)
                counts[kset] = ticks_to_instructions(run.cycles[0], board.shift)
                for i, ((kind, kind_macs), cycles) in enumerate(zip(layer_macs(data), run.layer_cycles, strict=True)):
                    cell = per_kind.setdefault(kind, {}).setdefault(kset, [0.0, 0.0])
                    cell[0] += ticks_to_instructions(cycles, board.shift)
                    cell[1] += kind_macs
                    if kset == "optimised" and kind_macs:
                        layer_lines.append(f"| {name} | {i} | {kind} | {' x '.join(map(str, art.extra['op_shapes'][i][1:]))} "
                                           f"| {kind_macs} | {ticks_to_instructions(cycles, board.shift) / kind_macs:.2f} |")
                outputs[kset] = link.infer(link_input_bytes(data), kernels=kernels)
            if len(set(outputs.values())) != 1:
                raise SystemExit(f"{name}: the optimised kernels disagree with the portable ones")
            macs = sum(art.extra["op_macs"])
            assert macs == model.macs, (name, macs, model.macs)
            rows.append((name, macs, counts, art.extra["arena_bytes"], art.extra["arena_greedy_bytes"],
                         art.extra["arena_lower_bound"], art.extra["arena_in_place_bytes"], art.extra["blob_bytes"],
                         int8_blob.stat().st_size, art.extra["max_lsb_vs_litert_reference"],
                         art.extra["unpacked_layers"]))
            print(f"{name}: {counts['optimised'] / macs:.2f} instructions/MAC", file=sys.stderr, flush=True)
        link.close()

    print("\nMLPerf Tiny reference networks on QEMU mps2-an500 (-icount shift=7), int8, random weights\n")
    print("| task | network | MACs | portable instr/MAC | optimised, int8 weights | optimised (export) | "
          "speed-up over portable (same run) | target | peak SRAM (our plan) | TFLite Micro's greedy plan | "
          "largest live set | with in-place depthwise (computed) | flash (int8 weights) | "
          "flash (export; unpacked layers) | vs LiteRT ref | X-CUBE-AI 9.0, H7A3 (cycles/MAC, published) | "
          "Plumerai, F746 (published) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, macs, counts, arena, greedy, live, in_place, flash, flash8, lsb, unpacked in rows:
        xcube, plumerai = PUBLISHED[name]
        target = f"{TARGETS[name]:.1f}" if name in TARGETS else "-"
        print(f"| {TASKS[name]} | {name} | {macs / 1e6:.3f} M | {counts['portable'] / macs:.2f} | "
              f"{counts['int8 weights'] / macs:.2f} | {counts['optimised'] / macs:.2f} | "
              f"{counts['portable'] / counts['optimised']:.2f}x | {target} | "
              f"{arena / 1024:.1f} KiB | {greedy / 1024:.1f} KiB | {live / 1024:.1f} KiB | {in_place / 1024:.1f} KiB | "
              f"{flash8 / 1024:.1f} KiB | "
              f"{flash / 1024:.1f} KiB; {unpacked} | {lsb} LSB | {xcube:.2f} | {plumerai:.2f} |")
    total_macs = sum(r[1] for r in rows)
    for kset in ("portable", "int8 weights", "optimised"):
        print(f"all four, {kset}: {sum(r[2][kset] for r in rows) / total_macs:.2f} instructions/MAC")
    total = sum(r[2]["optimised"] for r in rows)
    print("\nPer operator kind, all four networks (instructions per MAC; element-wise operators: instructions)\n")
    print("| operator | MACs | portable | optimised, int8 weights | optimised (export) | speed-up over portable | "
          "share of optimised instructions |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, cells in sorted(per_kind.items(), key=lambda kv: -kv[1]["optimised"][0]):
        (p_instr, kind_macs), (i_instr, _), (o_instr, _) = (cells[k] for k in ("portable", "int8 weights",
                                                                              "optimised"))
        if kind_macs:
            figures = f"{kind_macs:.0f} | {p_instr / kind_macs:.2f} | {i_instr / kind_macs:.2f} | {o_instr / kind_macs:.2f}"
        else:
            figures = f"- | {p_instr:.0f} instr | {i_instr:.0f} instr | {o_instr:.0f} instr"
        print(f"| {kind} | {figures} | {p_instr / o_instr:.2f}x | {100 * o_instr / total:.1f} % |")
    if args.layers:
        print("\nEvery layer with MACs, optimised kernels on the exported blob\n")
        print("| network | layer | kind | output (H x W x C) | MACs | instructions/MAC |")
        print("|---|---:|---|---|---:|---:|")
        print("\n".join(layer_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
