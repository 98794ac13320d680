"""PyTorch -> ONNX (TorchScript exporter, opset 17: fast and honours the opset, see FACTS.md)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from hwnas_deploy.errors import ExportError, UnsupportedOpError

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "output"


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    import onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
            )
    except torch.onnx.errors.UnsupportedOperatorError as exc:
        match = re.search(r"operator '([^']+)'", str(exc))
        raise UnsupportedOpError("onnx", match.group(1) if match else "?", str(exc).splitlines()[0]) from None
    except Exception as exc:  # noqa: BLE001
        match = re.search(r"aten::\w+", str(exc))
        if match:
            raise UnsupportedOpError("onnx", match.group(0), str(exc).splitlines()[0]) from None
        raise ExportError(f"ONNX export failed: {exc}") from exc
    onnx.checker.check_model(str(path))
