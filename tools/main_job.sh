#!/usr/bin/env bash
# The embedded default, end to end: MCU-sized sub-networks (mcu-mbnet) exported to ONNX, int8
# TFLite and firmware blobs; measured on the local server twin and on the simulated Cortex-M7
# board (our firmware in QEMU, over a serial line); stored in SQLite; shown with a plot; then a
# search for the board (recipe search/mcu-mbnet-qemu-m7.yaml: measured latency against capacity
# under 320 KB SRAM / 1 MB flash) whose Pareto set and exported knee (firmware blob + C sources)
# land in runs/main/search/, and the knee deployed, checked and measured on the board.
# Resumable: run it again and stored measurements are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${HWNAS_DB:-runs/main/hwnas.sqlite}
mkdir -p "$(dirname "$DB")"
.venv/bin/hwnas devices
.venv/bin/hwnas profile --device local-cpu --space mcu-mbnet --samples 10 --runtime onnxruntime --db "$DB"
.venv/bin/hwnas profile --device local-cpu --space mcu-mbnet --samples 3 --runtime tflite-int8 --db "$DB"
# only sub-networks whose int8 footprint fits the board's 320 KB SRAM / 1 MB flash
.venv/bin/hwnas profile --device qemu-m7 --space mcu-mbnet --samples 3 --fit --runtime firmware --db "$DB"
.venv/bin/hwnas show --db "$DB" --plot "$(dirname "$DB")/latency_vs_macs.png"
.venv/bin/hwnas search mcu-mbnet-qemu-m7 --db "$DB" --out "$(dirname "$DB")/search"
.venv/bin/hwnas deploy --run "$(dirname "$DB")/search" --pick knee --device qemu-m7 --runtime firmware --db "$DB"
