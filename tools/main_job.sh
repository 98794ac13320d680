#!/usr/bin/env bash
# The embedded default, end to end: sample MCU-sized sub-networks, export them (ONNX and
# full-integer int8 TFLite), measure them on the local server twin, store in SQLite, show.
# Resumable: run it again and stored measurements are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${HWNAS_DB:-runs/main/hwnas.sqlite}
mkdir -p "$(dirname "$DB")"
.venv/bin/hwnas devices
.venv/bin/hwnas profile --device local-cpu --space mcu-mbnet --samples 10 --runtime onnxruntime --db "$DB"
.venv/bin/hwnas profile --device local-cpu --space mcu-mbnet --samples 3 --runtime tflite-int8 --db "$DB"
.venv/bin/hwnas show --db "$DB"
