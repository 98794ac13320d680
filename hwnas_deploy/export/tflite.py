"""PyTorch -> TFLite, float32 and full-integer int8, through litert-torch in its own environment.

The model crosses the process boundary as a `torch.export` program (.pt2, weights included), so
any nn.Module the main process can export converts, not only sub-networks of a known space.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas_deploy.errors import ExportError, UnsupportedOpError

CONVERTER_ENV_VAR = "HWNAS_LITERT_PYTHON"
CONVERT_TIMEOUT_S = 900


def converter_python() -> Path:
    """Interpreter of the converter environment: $HWNAS_LITERT_PYTHON, else a `.venv-litert`
    beside the active virtual environment."""
    explicit = os.environ.get(CONVERTER_ENV_VAR)
    candidate = Path(explicit) if explicit else Path(sys.prefix).parent / ".venv-litert" / "bin" / "python"
    if not candidate.exists():
        raise ExportError(
            f"TFLite export needs the LiteRT converter environment, not found at {candidate}; "
            f"run tools/setup.sh (it creates .venv-litert) or set {CONVERTER_ENV_VAR}"
        )
    return candidate


def to_tflite(model: nn.Module, example: torch.Tensor, path: Path, calibration: np.ndarray | None = None) -> None:
    """Write `path`. With `calibration` (N x C x H x W samples), quantise to full-integer int8."""
    fmt = "tflite-int8" if calibration is not None else "tflite"
    try:
        program = torch.export.export(model, (example,))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{fmt}: torch.export could not trace the model: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="hwnas-tflite-") as tmp:
        pt2 = Path(tmp) / "model.pt2"
        torch.export.save(program, pt2)
        cmd = [str(converter_python()), "-m", "hwnas_deploy.export.litert_worker", str(pt2), str(path)]
        if calibration is not None:
            calib = Path(tmp) / "calib.npy"
            np.save(calib, np.asarray(calibration, dtype=np.float32))
            cmd += ["--int8", str(calib)]
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ExportError(f"{fmt}: converter did not finish within {CONVERT_TIMEOUT_S} s") from None
    result = _last_json_line(proc.stdout)
    if result is None:
        raise ExportError(f"{fmt}: converter crashed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    if not result["ok"]:
        if result.get("op"):
            raise UnsupportedOpError(fmt, result["op"], result["error"].splitlines()[0])
        raise ExportError(f"{fmt}: conversion failed: {result['error']}")


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
