"""The user's own model as a network to export, measure and store, keyed by its content.

    model = load_model("kws.tflite")              # or .onnx, .pt2, or "net.py:build"
    measure("qemu-m7", [model], "firmware", store)

A model exports to the formats its kind can reach: a torch model (`.pt2`, or `module.py:function`
returning `(nn.Module, example_input)`) to every format, as sub-networks do; an ONNX file to
ONNX and TVM; a float TFLite file to LiteRT and the float firmware blob; a full-integer int8
TFLite file to LiteRT int8 and the int8 firmware blob and C sources, with its quantisation as it
is (no re-quantising). Each artifact is checked against the model's own runtime on the same input.

In the store a model is space "model" and the first 16 hex digits of its content's SHA-256
(a torch model: of its saved `torch.export` program, which is byte-for-byte reproducible); its
config holds the name, source, SHA-256, tensors, MACs and parameters counted from the graph.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from hwnas_deploy.artifact import Artifact, TensorSpec, exporter_digest, sha256_file
from hwnas_deploy.errors import ConfigError, ExportError
from hwnas_deploy.export import BLOB_MAX_LSB, EXPORTERS, FORMATS, check_format, verify_artifact
from hwnas_deploy.graphs import ModelFacts, onnx_facts, program_facts, random_input, tflite_facts
from hwnas_deploy.measurement.network import Network
from hwnas_deploy.userfiles import attribute, split_spec

MODEL_SPACE = "model"

#: what each kind of model exports to (formats), and why not to the others
REACH: dict[str, tuple[set[str], str]] = {
    "torch": (set(FORMATS), ""),
    "onnx": ({"onnx", "tvm"}, "an ONNX file reaches onnxruntime and TVM only (no ONNX -> TFLite converter here); "
                             "give the torch model (.pt2 or module.py:function) for LiteRT and the firmware"),
    "tflite": ({"tflite", "blob-fp32"}, "a float TFLite file reaches LiteRT (tflite) and the float firmware "
                                        "(blob-fp32); give a full-integer int8 one for tflite-int8 and firmware"),
    "tflite-int8": ({"tflite-int8", "blob", "c"}, "a full-integer int8 TFLite file reaches LiteRT (tflite-int8) "
                                                  "and the int8 firmware (blob, c)"),
}


class UserModel(Network):
    """A model from a file. `calibration` (N samples of the input's shape) quantises a torch
    model for the int8 formats; without it random samples are used (`notes` says so)."""

    space = MODEL_SPACE

    def __init__(self, name: str, kind: str, data: bytes, source: str, facts: ModelFacts,
                 calibration: np.ndarray | None = None):
        self.name, self.kind, self.data, self.source, self.facts = name, kind, data, source, facts
        self.calibration = calibration
        digest = hashlib.sha256(data)
        self.sha256 = digest.hexdigest()
        self.macs, self.params = facts.macs, facts.params
        self.config = {
            "name": name, "kind": kind, "source": source, "sha256": self.sha256,
            "inputs": [_spec_dict(t) for t in facts.inputs], "outputs": [_spec_dict(t) for t in facts.outputs],
            "macs": self.macs, "params": self.params,
        }
        if calibration is not None:  # the int8 artifacts depend on it: another key
            cal = hashlib.sha256(np.ascontiguousarray(calibration, dtype=np.float32).tobytes()).hexdigest()
            self.config["calibration_sha256"] = cal
            digest.update(cal.encode())
        self.config_hash = digest.hexdigest()[:16]

    @property
    def formats(self) -> set[str]:
        return REACH[self.kind][0]

    @property
    def input(self) -> TensorSpec:
        return self.facts.inputs[0]

    def notes(self, fmt: str) -> list[str]:
        """What a user should know about exporting to `fmt`: a dynamic batch taken as 1, int8
        quantisation on random inputs."""
        out = [f"{self.source}: {note}" for note in self.facts.notes]
        if self.kind == "torch" and self.calibration is None and EXPORTERS[check_format(fmt)].calibrated:
            out.append(f"{self.source}: {fmt} is quantised on random inputs (give --calibration FILE.npy|FOLDER of "
                       "real ones for a realistic int8 model; the latency does not depend on it)")
        return out

    def stem(self, batch: int) -> str:
        return f"{self.name}-{self.config_hash}-b{batch}"

    def __repr__(self) -> str:
        return f"UserModel({self.name!r}, {self.kind}, {self.config_hash})"

    def check_format(self, fmt: str) -> None:
        check_format(fmt)
        if fmt not in self.formats:
            raise ExportError(f"{self.source}: cannot be exported to {fmt!r}: {REACH[self.kind][1]}")

    def export(self, fmt: str, out_dir: Path, *, batch: int = 1, target: str = "host", verify: bool = True,
               tuning=None) -> Artifact:
        self.check_format(fmt)
        if batch != 1 and self.kind != "torch":
            raise ExportError(f"{self.source}: a {self.kind} file has the fixed batch of its input "
                              f"{list(self.input.shape)}; batch {batch} needs the torch model")
        path = self.artifact_path(Path(out_dir), fmt, batch, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "torch":
            return self._export_torch(fmt, path, batch, target, verify, tuning)
        if target != "host" and fmt != "tvm":
            raise ExportError(f"format {fmt!r} has no cross target; only 'tvm' takes --target {target}")
        with tempfile.TemporaryDirectory(prefix="hwnas-model-") as tmp:
            source = Path(tmp) / ("model.onnx" if self.kind == "onnx" else "model.tflite")
            source.write_bytes(self.data)
            if fmt in ("onnx", "tflite", "tflite-int8"):
                shutil.copyfile(source, path)  # the file as given: nothing to compare it with
                art = self._artifact(fmt, path, target)
                if verify:
                    _run(art, random_input(self.input))  # its runtime loads and runs it
            elif fmt == "tvm":
                from hwnas_deploy.export.tvm import to_tvm

                used = to_tvm(source, self.input.shape, path, target, tuning)
                art = self._artifact(fmt, path, target)
                if used:
                    art.extra["tvm_tuning"] = used
                if verify:
                    checked = art
                    if target != "host":
                        twin = Path(tmp) / "host-twin.so"
                        to_tvm(source, self.input.shape, twin, "host")
                        checked = replace(art, path=str(twin), target="host")
                    x = random_input(self.input)
                    ref = _run(self._artifact("onnx", source, "host"), x)
                    art.max_abs_error = verify_artifact(checked, x, ref)
            else:
                art = self._export_blob(fmt, source, path, Path(tmp), verify)
        art.save()
        return art

    def _artifact(self, fmt: str, path: Path, target: str) -> Artifact:
        return Artifact(format=fmt, path=str(path), sha256=sha256_file(path), inputs=list(self.facts.inputs),
                        outputs=list(self.facts.outputs), target=target, space=self.space, config=dict(self.config),
                        exporter=exporter_digest())

    def _export_blob(self, fmt: str, source: Path, path: Path, tmp: Path, verify: bool) -> Artifact:
        from hwnas_deploy.export import blob_written, compare_blob_with_litert
        from hwnas_deploy.mcu.blob import tflite_to_blob
        from hwnas_deploy.mcu.c_source import blob_to_c

        blob_path = tmp / "model.hwnb" if fmt == "c" else path
        info = tflite_to_blob(source, blob_path)
        lsb = None
        if verify and fmt != "blob-fp32":
            lsb = compare_blob_with_litert(blob_path, source)
            if lsb > BLOB_MAX_LSB:
                raise ExportError(f"{self.source}: the blob differs from LiteRT's reference int8 kernels by {lsb} "
                                  "steps")
        written = blob_written(info, lsb)
        if fmt == "c":
            blob_to_c(blob_path, info, path.parent)
        art = Artifact(format=fmt, path=str(path), sha256=sha256_file(path), inputs=written.inputs,
                       outputs=written.outputs, space=self.space, config=dict(self.config), extra=written.extra,
                       exporter=exporter_digest())
        if verify and fmt == "blob-fp32":
            x = random_input(self.input)
            ref = _run(self._artifact("tflite", source, "host"), x)
            art.max_abs_error = verify_artifact(art, x, ref)
        return art

    def _export_torch(self, fmt: str, path: Path, batch: int, target: str, verify: bool, tuning=None) -> Artifact:
        import torch

        from hwnas_deploy.export import export_model

        program = torch.export.load(io.BytesIO(self.data))
        module = program.module()
        # it stays in the mode it was exported in; exporters that switch modes get a no-op
        module.train = lambda mode=True: module
        module.eval = lambda: module
        example = torch.from_numpy(random_input(self.input))
        if batch != example.shape[0]:
            example = example[:1].expand(batch, *example.shape[1:]).contiguous()
        with warnings.catch_warnings():  # the ONNX tracer notes the program's own input-shape guards
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return export_model(module, example, fmt, path, target=target, calibration=self.calibration,
                                verify=verify, space=self.space, config=self.config, tuning=tuning)


def _spec_dict(t: TensorSpec) -> dict:
    d = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    if t.quantization:
        d["quantization"] = list(t.quantization)
    return d


def _run(artifact: Artifact, x: np.ndarray) -> np.ndarray:
    from hwnas_deploy.runtimes import load_runner

    try:
        return load_runner(artifact, threads=1)(x)
    except Exception as exc:  # noqa: BLE001 - a runtime refusing a file raises its own kinds
        raise ExportError(f"{artifact.format}: the runtime could not run {artifact.path}: {exc}") from None


# -- loading ------------------------------------------------------------------------------------

SUFFIXES = (".onnx", ".tflite", ".pt2")


def load_model(spec: str | Path, calibration: str | Path | np.ndarray | None = None,
               name: str | None = None) -> UserModel:
    """The model at `spec`: FILE.onnx, FILE.tflite (float or full-integer int8), FILE.pt2 (a saved
    `torch.export` program), `module.py:function` (returning `(nn.Module, example_input)`) or
    `zoo:NAME` (models/zoo.py)."""
    text = str(spec)
    if text.startswith("zoo:"):
        from hwnas_deploy.models.zoo import ZOO

        if text[4:] not in ZOO:
            raise ConfigError(f"--model {text}: the zoo has {', '.join('zoo:' + k for k in ZOO)}")
        return _from_module(*ZOO[text[4:]](), text, name or text[4:], calibration)
    if split_spec(text):
        return _from_python(text, calibration, name)
    path = Path(text)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"--model {text}: give a .onnx, .tflite or .pt2 file, or module.py:function")
    if not path.is_file():
        raise ConfigError(f"--model {text}: no such file")
    data = path.read_bytes()
    # named by the file, less the suffix hwnas's own artifact names add (-HASH-bN, .int8)
    name = name or re.sub(r"-[0-9a-f]{16}-b\d+$", "", path.stem.removesuffix(".int8"))
    source = str(path)
    if path.suffix == ".onnx":
        facts, kind = onnx_facts(data, path), "onnx"
    elif path.suffix == ".tflite":
        facts = tflite_facts(data, path)
        kind = "tflite-int8" if facts.dtype == "int8" else "tflite"
    else:
        return _from_program(_load_program(data, path), name, source, calibration)
    if calibration is not None:
        raise ConfigError(f"--calibration: {source} is a {kind} file; calibration quantises torch models (.pt2 or "
                          "module.py:function), a TFLite file keeps its own quantisation")
    return UserModel(name, kind, data, source, facts)


def _load_program(data: bytes, path: Path):
    import torch

    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: not a torch.export program (.pt2 from torch.export.save): {first}") from None


def _from_program(program, name: str, source: str, calibration) -> UserModel:
    import torch

    facts = program_facts(program, Path(source))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return UserModel(name, "torch", buf.getvalue(), source, facts, load_calibration(calibration, facts.inputs[0]))


def _from_python(text: str, calibration, name: str | None) -> UserModel:
    import torch

    file, function = split_spec(text)
    fn = attribute(file, function, f"--model {text}")
    if not callable(fn):
        raise ConfigError(f"--model {text}: {function} in {file} is not a function")
    built = fn()
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module)
            and isinstance(built[1], torch.Tensor)):
        raise ConfigError(f"--model {text}: {function}() must return (nn.Module, example input tensor), "
                          f"got {type(built).__name__}")
    return _from_module(*built, text, name or function, calibration)


def _from_module(net, example, text: str, name: str, calibration) -> UserModel:
    import torch

    try:  # the example's first dimension is the batch
        program = torch.export.export(net.eval(), (example,))
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--model {text}: torch.export could not trace the model: {first}") from None
    return _from_program(program, name, text, calibration)


def load_calibration(calibration: str | Path | np.ndarray | None, spec: TensorSpec) -> np.ndarray | None:
    """Calibration samples for `spec`'s input: an array, a .npy file (N x shape, or one sample),
    or a folder of .npy files; each sample must have the input's shape without its batch."""
    if calibration is None:
        return None
    sample_shape = tuple(spec.shape[1:])
    if isinstance(calibration, np.ndarray):
        arrays, where = [calibration], "calibration"
    else:
        path = Path(calibration)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise ConfigError(f"--calibration {path}: give a .npy file or a folder of .npy files")
        arrays, where = [], str(path)
        for f in files:
            try:
                arrays.append(np.load(f, allow_pickle=False))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"--calibration {f}: not a readable .npy array ({exc})") from None
    samples = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        if a.shape == sample_shape:
            a = a[None]
        if a.shape[1:] != sample_shape:
            raise ConfigError(f"--calibration {where}: samples of shape {list(a.shape[1:])}, the model's input is "
                              f"{list(spec.shape)} (give N x {list(sample_shape)})")
        samples.append(a)
    out = np.concatenate(samples)
    if not np.isfinite(out).all():
        raise ConfigError(f"--calibration {where}: holds NaN or infinite values")
    return out


def stored_models(store, model: str | None = None, device: str | None = None,
                  runtime: str | None = None) -> list[dict]:
    """The user models the store holds measurements of, one row per (model, device, runtime,
    threads, batch), newest measurement; `model` picks one by name or (a prefix of) its hash."""
    rows = []
    for r in store.measurements(space=MODEL_SPACE, device=device, runtime=runtime):
        cfg = r["config"]
        if model is not None and model != cfg.get("name") and not r["config_hash"].startswith(model):
            continue
        rows.append({"model": cfg.get("name"), "hash": r["config_hash"], "kind": cfg.get("kind"),
                     "device": r["device"], "runtime": r["runtime"], "threads": r["threads"], "batch": r["batch"],
                     "median_ms": r["median_ms"], "macs": r["macs"], "params": r["params"],
                     "source": cfg.get("source"), "details": r["details"]})
    if model is not None and not rows:
        raise ConfigError(f"--model {model}: the store holds no measurement of a model of that name or hash")
    return sorted(rows, key=lambda r: (r["model"] or "", r["hash"], r["device"], r["runtime"]))
