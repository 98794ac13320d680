"""Host runtimes that execute an exported artifact: onnxruntime, LiteRT and TVM.

A `Runner` is loaded once per (artifact, threads); `set_input` stages the input and `invoke`
runs one inference on it, so timing loops measure inference only, not input conversion.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.errors import DeviceError, UnknownNameError


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    format: str  # the artifact format this runtime executes
    description: str
    package: str | None = None  # the distribution whose version says which build measured (host runtimes)


RUNTIMES: dict[str, RuntimeInfo] = {
    r.name: r
    for r in (
        RuntimeInfo("onnxruntime", "onnx", "onnxruntime CPU execution provider", "onnxruntime"),
        RuntimeInfo("tflite", "tflite", "LiteRT interpreter (XNNPACK), float32 model", "ai-edge-litert"),
        RuntimeInfo("tflite-int8", "tflite-int8", "LiteRT interpreter, full-integer int8 model", "ai-edge-litert"),
        RuntimeInfo("tvm", "tvm", "TVM Relax VM, library compiled for this host", "apache-tvm"),
        RuntimeInfo("firmware", "blob", "hwnas Cortex-M firmware, int8 runtime, over a serial port"),
        RuntimeInfo("firmware-fp32", "blob-fp32", "hwnas Cortex-M firmware, float32 runtime, over a serial port"),
    )
}


def runtime_info(name: str) -> RuntimeInfo:
    """A runtime by name; `tvm@ID` (TVM libraries built with tuning database ID, as the store
    names them) is TVM's."""
    base, at, tag = name.partition("@")
    if base not in RUNTIMES or (at and (base != "tvm" or not tag)):
        raise UnknownNameError("runtime", name, [*RUNTIMES, "tvm@<tuning database id>"])
    return RUNTIMES[base]


class Runner(ABC):
    """One loaded artifact, ready to run."""

    @abstractmethod
    def set_input(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def invoke(self) -> None: ...

    @abstractmethod
    def output(self) -> np.ndarray: ...

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.set_input(x)
        self.invoke()
        return self.output()


class OnnxRuntimeRunner(Runner):
    def __init__(self, artifact: Artifact, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.artifact, self.threads = artifact, threads
        self.session = ort.InferenceSession(artifact.path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self._feed: dict = {}
        self._out: np.ndarray | None = None

    def set_input(self, x: np.ndarray) -> None:
        self._feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}

    @property
    def staged_input(self) -> np.ndarray:
        return self._feed[self.input_name]

    def invoke(self) -> None:
        self._out = self.session.run(None, self._feed)[0]

    def output(self) -> np.ndarray:
        return self._out


class LiteRTRunner(Runner):
    """LiteRT interpreter. Full-integer models get their input quantised and output dequantised
    with the scale/zero-point stored in the model, so callers always see float32."""

    def __init__(self, artifact: Artifact, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=artifact.path, num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    def set_input(self, x: np.ndarray) -> None:
        dtype = self.inp["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        self.interp.set_tensor(self.inp["index"], np.ascontiguousarray(x, dtype=dtype))

    def invoke(self) -> None:
        self.interp.invoke()

    def output(self) -> np.ndarray:
        y = self.interp.get_tensor(self.out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


class TVMRunner(Runner):
    def __init__(self, artifact: Artifact, threads: int):
        import tvm
        from tvm import relax

        # The TVM thread pool reads its size when it first starts; config_threadpool resizes it.
        os.environ.setdefault("TVM_NUM_THREADS", str(threads))
        tvm.get_global_func("runtime.config_threadpool")(0, threads)
        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(artifact.path), self.dev)
        self.main = self.vm["main"]
        self._tensor = tvm.runtime.tensor
        self._arg = None
        self._out = None

    def set_input(self, x: np.ndarray) -> None:
        self._arg = self._tensor(np.ascontiguousarray(x, dtype=np.float32), self.dev)

    def invoke(self) -> None:
        self._out = self.main(self._arg)

    def output(self) -> np.ndarray:
        out = self._out
        if not hasattr(out, "numpy"):  # a tuple of outputs
            out = out[0]
        return out.numpy()


class BlobHostRunner(Runner):
    """A firmware model blob run on this host by the firmware's own C kernels (ctypes).

    Takes float NCHW like the other runners and transposes it to the blob's NHWC input; for an
    int8 blob it quantises the input and dequantises the output."""

    def __init__(self, artifact: Artifact, threads: int):
        from hwnas_deploy.mcu.host import HostBlobRunner as _Host

        self.host = _Host(open(artifact.path, "rb").read())
        self.inp, self.out = artifact.inputs[0], artifact.outputs[0]
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def set_input(self, x: np.ndarray) -> None:
        if self.inp.quantization:
            scale, zero = self.inp.quantization
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        if len(self.inp.shape) == 4:
            n, h, w, c = self.inp.shape
            # NCHW unless it can only be NHWC: with C == H == W both read alike, and NCHW is the contract
            x = x.transpose(0, 2, 3, 1) if x.shape == (n, c, h, w) else x
        self._x = x

    def invoke(self) -> None:
        self._y = self.host.invoke(self._x, int(np.prod(self.out.shape)))

    def output(self) -> np.ndarray:
        if not self.out.quantization:
            return self._y.reshape(self.out.shape)
        scale, zero = self.out.quantization
        return ((self._y.astype(np.float32) - zero) * scale).reshape(self.out.shape)


_RUNNERS: dict[str, type[Runner]] = {
    "onnx": OnnxRuntimeRunner,
    "tflite": LiteRTRunner,
    "tflite-int8": LiteRTRunner,
    "tvm": TVMRunner,
    "blob": BlobHostRunner,
    "blob-fp32": BlobHostRunner,
}


def load_runner(artifact: Artifact, threads: int = 1) -> Runner:
    """Load an artifact into the host runtime for its format."""
    if artifact.format not in _RUNNERS:
        raise DeviceError(f"no host runtime runs format {artifact.format!r}")
    if artifact.target not in (None, "host"):
        raise DeviceError(
            f"{artifact.path} was compiled for {artifact.target}; it cannot run on this host "
            "(measure it on a device of that target)"
        )
    try:
        return _RUNNERS[artifact.format](artifact, threads)
    except ImportError as exc:
        raise DeviceError(f"runtime for {artifact.format} is not installed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the runtime's own error, with the step that failed
        raise DeviceError(f"loading {artifact.path} into the {artifact.format} runtime failed: {exc}") from exc
