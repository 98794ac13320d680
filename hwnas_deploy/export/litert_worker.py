"""Runs inside the LiteRT converter environment (``.venv-litert``), never in the main one.

Why a separate environment: litert-torch 0.10 pins xdsl 0.28, which needs typing-extensions<4.13,
while apache-tvm-ffi needs >=4.13. pip cannot install both into one environment, and forcing the
override would leave one of them running outside its declared range. Both environments install
the same torch==2.13.0, so the ExportedProgram the main process saves loads here unchanged.

Usage: python -P litert_worker.py PROGRAM.pt2|FLOAT.tflite OUT.tflite [--int8 CALIB.npy]
(a .tflite is a float model already: only quantised)
Prints one JSON line: {"ok": true} or {"ok": false, "error": ..., "op": ...}.
With ``--serve`` it stays up and converts one request per stdin line ({"program", "out", "calib"}),
answering each with a line ``RESULT_TAG + JSON`` (the converter's imports, 5-7 s, are paid once
per process instead of once per model); it exits when stdin closes.
This module imports only the standard library, numpy, torch and the converter.
"""

from __future__ import annotations

import argparse
import json
import re
import sys


def convert(program: str, out: str, calib: str | None) -> None:
    import numpy as np

    if program.endswith(".tflite"):  # already a float model (export/tflite_direct.py): quantise it
        float_path = program
    else:
        import litert_torch
        import torch

        ep = torch.export.load(program)
        module = ep.module()
        example = tuple(torch.zeros(a.shape, dtype=a.dtype) for a in ep.example_inputs[0])
        float_path = out if calib is None else out + ".fp32.tflite"
        litert_torch.convert(module, example).export(float_path)
    if calib is None:
        if float_path != out:
            import shutil

            shutil.copyfile(float_path, out)
        return

    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=float_path).get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    samples = np.load(calib)
    q = quantizer.Quantizer(float_path, recipe.static_wi8_ai8())
    result = q.quantize(q.calibrate({key: [{input_name: s[None]} for s in samples]}))
    result.export_model(out, overwrite=True)
    if float_path != program:
        import os

        os.unlink(float_path)


RESULT_TAG = "HWNAS-LITERT-RESULT "


def _run(program: str, out: str, calib: str | None) -> dict:
    try:
        convert(program, out, calib)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as data
        text = str(exc)
        match = re.search(r"target=torch\.ops\.([\w.]+)", text) or re.search(r"aten[.:]+\w+", text)
        op = match.group(1) if match and match.groups() else (match.group(0) if match else None)
        return {"ok": False, "error": f"{type(exc).__name__}: {text[:2000]}", "op": op}
    return {"ok": True}


def serve() -> int:
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            result = _run(request["program"], request["out"], request.get("calib"))
            print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--serve"]:
        return serve()
    ap = argparse.ArgumentParser()
    ap.add_argument("program")
    ap.add_argument("out")
    ap.add_argument("--int8", metavar="CALIB_NPY")
    args = ap.parse_args(argv)
    result = _run(args.program, args.out, args.int8)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
