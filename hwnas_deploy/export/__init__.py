"""Export a sub-network (or any nn.Module) to a deployable artifact, checked against torch.

    art = export_subnet(get_space("mcu-mbnet"), cfg, "tflite-int8", "out/")

Every artifact is run once on the host runtime of its format with the same random input as
torch, and the export fails if the outputs differ by more than the format's tolerance.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas_deploy.artifact import Artifact, TensorSpec, exporter_digest, sha256_file
from hwnas_deploy.errors import ExportError, UnknownNameError, UnsupportedOpError
from hwnas_deploy.export.lock import EXPORT_LOCK
from hwnas_deploy.export.onnx import to_onnx
from hwnas_deploy.export.tflite import to_tflite
from hwnas_deploy.export.tvm import TARGETS, to_tvm
from hwnas_deploy.mcu.blob import tflite_to_blob
from hwnas_deploy.mcu.c_source import blob_to_c


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's output must be to torch's on the same input."""

    max_abs: float | None = None
    min_cosine: float | None = None


#: float32 formats: 1e-4 max abs. Full-integer int8 quantises every activation to 256 levels, so
#: on random-weight sub-networks its error is large in absolute terms (max |err| 10-20 % of the
#: output range); it is checked by cosine similarity instead: 0.86-0.98 measured on random
#: sub-networks of mcu-mbnet and ofa-mbv3, but only 0.77-0.87 on the deepest, narrowest ones
#: (mcu-mbnet d=4 everywhere, e=6, w=0.35, r=64: 20 blocks of noise that calibration on more
#: samples does not reduce), which a search maximising parameters under an SRAM budget picks.
#: A wrong scale, layout or operator gives ~0.
FLOAT = Tolerance(max_abs=1e-4)
INT8 = Tolerance(min_cosine=0.6)
#: The blob must also agree with LiteRT's reference int8 kernels on the same int8 input within
#: this many quantisation steps: none (bit-exact since firmware 0.5.1; tests/test_blob.py checks
#: other inputs than the export's own).
BLOB_MAX_LSB = 0

CALIBRATION_SAMPLES = 16


@dataclass
class Written:
    """What an exporter wrote besides the file: what to run to check it (a host build of a cross
    library, the blob that C sources embed), and the facts of its tensors."""

    check_path: Path | None = None
    check_format: str | None = None
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exporter:
    """One format: its file suffix, its tolerance against torch, and the function writing it,
    `write(model, example, path, tmp, target, calibration, verify) -> Written`."""

    suffix: str
    tolerance: Tolerance
    write: Callable[..., Written]
    calibrated: bool = False  # full-integer: quantised on calibration samples
    cross: bool = False  # takes a cross-compilation target
    tuned: bool = False  # builds from a tuning database (`write(..., tuning=)`)


def _onnx(model, example, path, tmp, target, calibration, verify) -> Written:
    to_onnx(model, example, path)
    return Written()


def _tflite(model, example, path, tmp, target, calibration, verify) -> Written:
    to_tflite(model, example, path, calibration)
    inputs, outputs = _tflite_io(path)
    return Written(inputs=inputs, outputs=outputs)


def blob_written(info, lsb: int | None) -> Written:
    quantized = info.dtype == "int8"
    extra = {"arena_bytes": info.arena_bytes, "weight_bytes": info.weight_bytes, "blob_bytes": info.size,
             "ops": info.op_names, "op_shapes": [list(d) for d in info.op_shapes], "op_macs": info.op_macs,
             "op_live_bytes": info.op_live_bytes, "arena_greedy_bytes": info.arena_greedy_bytes,
             "arena_lower_bound": info.arena_lower_bound, "arena_in_place_bytes": info.arena_in_place_bytes,
             "unpacked_layers": info.unpacked_layers,
             "unpacked_extra_bytes": info.unpacked_extra_bytes}
    if lsb is not None:
        extra["max_lsb_vs_litert_reference"] = lsb
    return Written(
        inputs=[TensorSpec("input_nhwc", info.input_shape, info.dtype, info.input_quant if quantized else None)],
        outputs=[TensorSpec("output", info.output_shape, info.dtype, info.output_quant if quantized else None)],
        extra=extra)


def _blob_fp32(model, example, path, tmp, target, calibration, verify) -> Written:
    fp32_path = tmp / "model.tflite"
    to_tflite(model, example, fp32_path, None)
    return blob_written(tflite_to_blob(fp32_path, path), None)


def _blob_int8(model, example, blob_path, tmp, calibration, verify):
    int8_path = tmp / "model.int8.tflite"
    to_tflite(model, example, int8_path, calibration)
    info = tflite_to_blob(int8_path, blob_path)
    lsb = None
    if verify:
        lsb = compare_blob_with_litert(blob_path, int8_path)
        if lsb > BLOB_MAX_LSB:
            raise ExportError(f"blob: differs from LiteRT's reference int8 kernels by {lsb} steps")
    return blob_written(info, lsb), info


def _blob(model, example, path, tmp, target, calibration, verify) -> Written:
    return _blob_int8(model, example, path, tmp, calibration, verify)[0]


def _c(model, example, path, tmp, target, calibration, verify) -> Written:
    blob_path = tmp / "model.hwnb"
    written, info = _blob_int8(model, example, blob_path, tmp, calibration, verify)
    blob_to_c(blob_path, info, path.parent)
    written.check_path, written.check_format = blob_path, "blob"  # the C sources run on the board
    return written


def _tvm(model, example, path, tmp, target, calibration, verify, tuning=None) -> Written:
    onnx_path = tmp / "model.onnx"
    try:
        to_onnx(model, example, onnx_path)
    except UnsupportedOpError as exc:  # TVM imports through ONNX: report it as TVM's gap
        raise UnsupportedOpError("tvm", exc.op, f"TVM imports models through ONNX: {exc}") from None
    used = to_tvm(onnx_path, tuple(example.shape), path, target, tuning)
    extra = {"tvm_tuning": used} if used else {}
    if not verify or target == "host":
        return Written(extra=extra)
    # a cross-compiled library cannot run here: check the host build of the same Relax module
    twin = tmp / "host-twin.so"
    to_tvm(onnx_path, tuple(example.shape), twin, "host")
    return Written(check_path=twin, check_format="tvm", extra=extra)


EXPORTERS: dict[str, Exporter] = {
    "onnx": Exporter(".onnx", FLOAT, _onnx),
    "tflite": Exporter(".tflite", FLOAT, _tflite),
    "tflite-int8": Exporter(".int8.tflite", INT8, _tflite, calibrated=True),
    "tvm": Exporter(".so", FLOAT, _tvm, cross=True, tuned=True),
    # int8 model blob for the Cortex-M firmware (firmware/runtime)
    "blob": Exporter(".hwnb", INT8, _blob, calibrated=True),
    # float32 model blob for the same firmware (boards with an FPU)
    "blob-fp32": Exporter(".f32.hwnb", FLOAT, _blob_fp32),
    # model.c + model.h in their own folder, for firmware builds (checked through the blob they embed)
    "c": Exporter("-c/model.c", INT8, _c, calibrated=True),
}
#: format -> file suffix
FORMATS: dict[str, str] = {fmt: e.suffix for fmt, e in EXPORTERS.items()}
TOLERANCE: dict[str, Tolerance] = {fmt: e.tolerance for fmt, e in EXPORTERS.items()}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    return fmt


def artifact_filename(stem: str, fmt: str, target: str = "host") -> str:
    return stem + ("" if target == "host" else f".{target}") + FORMATS[check_format(fmt)]


def export_model(
    model: nn.Module,
    example: torch.Tensor,
    fmt: str,
    path: str | Path,
    *,
    target: str = "host",
    calibration: np.ndarray | None = None,
    verify: bool = True,
    space: str | None = None,
    config: Mapping | None = None,
    tuning=None,
) -> Artifact:
    """Export `model` at the shape of `example` to `path` and return its verified record.
    `tuning` (`tvm_tuning.Tuning`, TVM only): build from a tuning database's records."""
    exporter = EXPORTERS[check_format(fmt)]
    if tuning is not None and not exporter.tuned:
        raise ExportError(f"format {fmt!r} is not built from a tuning database; only 'tvm' is")
    if target not in TARGETS:
        raise UnknownNameError("target", target, TARGETS)
    if target != "host" and not exporter.cross:
        raise ExportError(f"format {fmt!r} has no cross target; only 'tvm' takes --target {target}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if exporter.calibrated and calibration is None:
        gen = torch.Generator().manual_seed(1234)
        calibration = torch.randn((CALIBRATION_SAMPLES, *example.shape[1:]), generator=gen).numpy()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmp:
        written = exporter.write(model, example, path, Path(tmp), target,
                                 calibration if exporter.calibrated else None, verify,
                                 **({"tuning": tuning} if tuning is not None else {}))
        seconds = time.perf_counter() - start

        with torch.no_grad():
            reference = model(example).numpy()
        artifact = Artifact(
            format=fmt,
            path=str(path),
            sha256=sha256_file(path),
            inputs=written.inputs or [TensorSpec("input", tuple(example.shape), "float32")],
            outputs=written.outputs or [TensorSpec("output", tuple(reference.shape), "float32")],
            target=target,
            space=space,
            config=dict(config) if config is not None else None,
            export_seconds=round(seconds, 4),
            extra=written.extra,
            exporter=exporter_digest(),
        )
        if verify:
            checked = artifact
            if written.check_path is not None:
                checked = replace(artifact, path=str(written.check_path), format=written.check_format, target="host")
            artifact.max_abs_error = verify_artifact(checked, example.numpy(), reference)
    artifact.save()
    return artifact


def verify_artifact(artifact: Artifact, x: np.ndarray, reference: np.ndarray) -> float:
    """Run the artifact on `x`; raise ExportError if it strays from `reference` beyond tolerance."""
    from hwnas_deploy.runtimes import load_runner

    out = load_runner(artifact, threads=1)(x)
    if out.shape != reference.shape:
        raise ExportError(f"{artifact.format}: output shape {out.shape} differs from torch {reference.shape}")
    out, reference = out.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    err = float(np.max(np.abs(out - reference)))
    tol = TOLERANCE[artifact.format]
    if tol.max_abs is not None and not err <= tol.max_abs:
        raise ExportError(
            f"{artifact.format}: output differs from torch by {err:.3g} (max abs), allowed {tol.max_abs:g}"
        )
    if tol.min_cosine is not None:
        cosine = cosine_similarity(out, reference)
        if not cosine >= tol.min_cosine:
            raise ExportError(
                f"{artifact.format}: output cosine similarity to torch is {cosine:.3f}, "
                f"allowed >= {tol.min_cosine} (max abs error {err:.3g})"
            )
    return err


def compare_blob_with_litert(blob_path: Path, int8_tflite: Path, seed: int = 0) -> int:
    """Largest difference, in quantisation steps, between the firmware runtime (built for the
    host) and LiteRT's reference int8 kernels on the same random int8 input."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from hwnas_deploy.mcu.blob import blob_input_dims, blob_io_quantization, input_transposed
    from hwnas_deploy.mcu.host import HostBlobRunner

    interp = Interpreter(model_path=str(int8_tflite), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    blob = Path(blob_path).read_bytes()
    (in_scale, in_zero), (out_scale, out_zero) = blob_io_quantization(blob)
    x = np.random.default_rng(seed).integers(-128, 128, size=d["shape"], dtype=np.int8)
    # a model with float input and output around its int8 graph: LiteRT gets the int8 values
    # dequantised (its QUANTIZE gives them back exactly), its float answer is quantised back
    fed = x if d["dtype"] == np.int8 else ((x.astype(np.float32) - in_zero) * np.float32(in_scale)).astype(d["dtype"])
    interp.set_tensor(d["index"], fed)
    interp.invoke()
    ref = interp.get_tensor(interp.get_output_details()[0]["index"]).ravel()
    if ref.dtype != np.int8:
        ref = np.clip(np.round(ref / np.float32(out_scale)) + out_zero, -128, 127).astype(np.int8)
    # the board takes a 4-D NCHW input NHWC (the converter dropped its transpose, or a first
    # operator reads it so); a model's NHWC, 2-D or 3-D input goes in its own memory order
    nhwc = x.ndim == 4 and (input_transposed(int8_tflite) or (
        tuple(x.shape) != blob_input_dims(blob) and tuple(x.transpose(0, 2, 3, 1).shape) == blob_input_dims(blob)))
    board_x = x.transpose(0, 2, 3, 1) if nhwc else x
    out = HostBlobRunner(blob).invoke(np.ascontiguousarray(board_x), ref.size)
    return int(np.max(np.abs(out.astype(np.int32) - ref.astype(np.int32))))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom else 0.0


def _tflite_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))

    def spec(d: dict) -> TensorSpec:
        scale, zero = d["quantization"]
        quant = (float(scale), int(zero)) if scale else None
        return TensorSpec(d["name"], tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]).name, quant)

    return [spec(d) for d in interp.get_input_details()], [spec(d) for d in interp.get_output_details()]


def export_subnet(
    space,
    config: Mapping,
    fmt: str,
    out_dir: str | Path,
    *,
    target: str = "host",
    batch: int = 1,
    seed: int = 0,
    verify: bool = True,
    tuning=None,
) -> Artifact:
    """Build a sub-network of `space` and export it into `out_dir`, named by its config hash."""
    cfg = space.canonical(config)
    model = space.build(cfg, seed=seed)
    example = space.example_input(cfg, batch=batch, seed=seed)
    stem = f"{space.name}-{space.config_hash(cfg)}-b{batch}"
    path = Path(out_dir) / artifact_filename(stem, fmt, target)
    return export_model(model, example, fmt, path, target=target, verify=verify, space=space.name, config=cfg,
                        tuning=tuning)


__all__ = [
    "EXPORT_LOCK",
    "FORMATS",
    "TOLERANCE",
    "Artifact",
    "TensorSpec",
    "artifact_filename",
    "export_model",
    "export_subnet",
    "verify_artifact",
]
