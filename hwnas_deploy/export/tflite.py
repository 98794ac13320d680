"""PyTorch -> TFLite, float32 and full-integer int8, through litert-torch in its own environment.

Networks of the spaces' MobileNet blocks skip litert-torch: their float graph is written directly
(export/tflite_direct.py, the same operators and constants LiteRT writes, ~0.1 s against ~11 s),
and only int8 quantisation runs in the converter (LiteRT's own quantiser, well under a second).
`$HWNAS_TFLITE_DIRECT=0` converts every model with litert-torch (benchmarks compare the two).
The model crosses the process boundary as a `torch.export` program (.pt2, weights included), so
any nn.Module the main process can export converts, not only sub-networks of a known space.
A converter process serves every conversion of this process (`_Converter`), so the
converter's imports are paid once, not per model (LUT builds convert hundreds of blocks); it is
replaced after a crash, a timeout or `RECYCLE_AFTER` conversions (bounded memory). Threads that
export at once (a measurement loop exporting ahead) convert in up to `parallel_conversions()`
such processes side by side, the export lock given up while they wait (`export.lock`): a
conversion is single-threaded, so on a host with cores to spare that many go as fast as one.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas_deploy.artifact import sha256_file
from hwnas_deploy.errors import ExportError, UnsupportedOpError
from hwnas_deploy.export import litert_worker
from hwnas_deploy.export.cache import ConversionCache, toolchain_digest
from hwnas_deploy.export.litert_env import converter_python
from hwnas_deploy.export.litert_worker import RESULT_TAG
from hwnas_deploy.export.lock import export_lock_released
from hwnas_deploy.export.tflite_direct import float_tflite

CONVERT_TIMEOUT_S = 900
RECYCLE_AFTER = 200
CONVERTERS_ENV_VAR = "HWNAS_CONVERTERS"
DIRECT_ENV_VAR = "HWNAS_TFLITE_DIRECT"
_TAG = RESULT_TAG.encode()  # what starts the converter's answer lines


def to_tflite(model: nn.Module, example: torch.Tensor, path: Path, calibration: np.ndarray | None = None) -> None:
    """Write `path`. With `calibration` (N x C x H x W samples), quantise to full-integer int8.
    A network of the spaces' blocks skips litert-torch (export/tflite_direct.py: its float graph
    written here, only quantised by the converter). A conversion of the same program or float
    model, samples and converter done before (by any process) is taken from the conversion cache
    (export/cache.py)."""
    fmt = "tflite-int8" if calibration is not None else "tflite"
    direct = float_tflite(model, example) if os.environ.get(DIRECT_ENV_VAR, "1") != "0" else None
    if direct is not None and calibration is None:
        Path(path).write_bytes(direct)
        return
    program = None
    if direct is None:
        try:
            program = torch.export.export(model, (example,))
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{fmt}: torch.export could not trace the model: {exc}") from exc
    cache = ConversionCache()
    with tempfile.TemporaryDirectory(prefix="hwnas-tflite-") as tmp:
        # what the converter takes: the traced program, or (a .tflite) the float model to quantise
        source = Path(tmp) / ("model.fp32.tflite" if direct is not None else "model.pt2")
        if direct is not None:
            source.write_bytes(direct)
        else:
            torch.export.save(program, source)
        calib = None
        if calibration is not None:
            calib = Path(tmp) / "calib.npy"
            np.save(calib, np.asarray(calibration, dtype=np.float32))
        key = ""
        if cache.enabled:
            key = cache.key(fmt, sha256_file(source), sha256_file(calib) if calib else "-",
                            toolchain_digest(str(converter_python()), litert_worker.__file__))
            if cache.fetch(key, ".tflite", Path(path)):
                return
        with export_lock_released():  # another thread's export may build and convert meanwhile
            result = _CONVERTERS.convert(fmt, {"program": str(source), "out": str(path),
                                               "calib": calib and str(calib)})
    if result["ok"]:
        if key:
            cache.keep(key, ".tflite", Path(path))
        return
    if result.get("op"):
        raise UnsupportedOpError(fmt, result["op"], result["error"].splitlines()[0])
    raise ExportError(f"{fmt}: conversion failed: {result['error']}")


class _Converter:
    """The long-lived `litert_worker --serve` process and its request/answer protocol."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.log = None
        self.served = 0
        self.owner = os.getpid()
        self.lock = threading.Lock()
        atexit.register(self.stop)

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.log = tempfile.TemporaryFile()  # the converter's stderr, for the message if it dies
        # the worker imports nothing of ours: run as a file, -P keeps its folder (our export/onnx.py
        # ...) off the converter's import path, and the main environment's packages stay out of it
        self.proc = subprocess.Popen([str(converter_python()), "-P", litert_worker.__file__, "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env)
        self.served = 0
        return self.proc

    def stop(self) -> None:
        if self.owner != os.getpid():
            return
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def _stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace").strip()[-2000:]

    def convert(self, fmt: str, request: dict) -> dict:
        with self.lock:
            if self.owner != os.getpid():  # a forked child: the parent's converter and pipes are not its own
                self.proc, self.log, self.owner = None, None, os.getpid()
            if self.proc is None or self.proc.poll() is not None or self.served >= RECYCLE_AFTER:
                self.stop()
                self._start()
            proc = self.proc
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
            except OSError:
                pass  # it died: reported below with its stderr
            deadline = time.monotonic() + CONVERT_TIMEOUT_S
            fd, buf = proc.stdout.fileno(), b""
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while True:
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.startswith(_TAG):
                            self.served += 1
                            return json.loads(line[len(_TAG):])
                    left = deadline - time.monotonic()
                    if left <= 0 or not sel.select(timeout=left):
                        self.stop()
                        raise ExportError(f"{fmt}: converter did not finish within {CONVERT_TIMEOUT_S} s")
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:  # EOF: the converter crashed
                        code = proc.wait()
                        tail = self._stderr_tail()
                        self.stop()
                        raise ExportError(f"{fmt}: converter crashed (exit {code}): {tail}")
                    buf += chunk


_CONVERTER = _Converter()


def parallel_conversions() -> int:
    """How many conversions run side by side at most: `$HWNAS_CONVERTERS`, else one per core
    up to 2 (each converter process holds ~1.5 GB)."""
    text = os.environ.get(CONVERTERS_ENV_VAR)
    if not text:
        return max(1, min(2, os.cpu_count() or 1))
    if not text.isdigit() or int(text) < 1:
        raise ExportError(f"${CONVERTERS_ENV_VAR} {text!r}: allowed: an integer >= 1")
    return int(text)


class _Converters:
    """Converter processes for threads converting at once: the first (`_CONVERTER`) serves a
    single thread; another is started only when every one is busy, up to
    `parallel_conversions()`; beyond, a thread waits for one to be free."""

    def __init__(self, first: _Converter):
        self.started = [first]
        self.idle = [first]  # in the order started: the first is taken whenever it is free
        self.free = threading.Condition()

    def convert(self, fmt: str, request: dict) -> dict:
        with self.free:
            while not self.idle and len(self.started) >= parallel_conversions():
                self.free.wait()
            if self.idle:
                converter = self.idle.pop(0)
            else:
                converter = _Converter()
                self.started.append(converter)
        try:
            return converter.convert(fmt, request)
        finally:
            with self.free:
                self.idle = sorted([*self.idle, converter], key=self.started.index)
                self.free.notify()


_CONVERTERS = _Converters(_CONVERTER)
