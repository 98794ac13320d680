"""The firmware's portable C runtime, built for this host and called through ctypes.

It executes model blobs with exactly the kernels the board runs, so a blob is checked on the
host (against torch and LiteRT) before it is uploaded, and the board's output can be compared
with the same code's output on the same input.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

from hwnas_deploy.errors import DeviceError, ExportError
from hwnas_deploy.mcu.firmware import build_root, make

_MODEL_STRUCT_BYTES = 128  # >= sizeof(hw_model_t) on any 64-bit host


@lru_cache(maxsize=1)
def host_library() -> ctypes.CDLL:
    """Build (if out of date) and load the firmware's runtime built for this host
    (`build_root()`/host/libhwnas_runtime.so)."""
    proc = make("host-lib")
    if proc.returncode != 0:
        raise DeviceError(f"building the host runtime failed: {proc.stderr.strip()[-2000:]}")
    lib = ctypes.CDLL(str(build_root() / "host" / "libhwnas_runtime.so"))
    lib.hw_model_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32]
    lib.hw_model_init.restype = ctypes.c_int
    lib.hw_model_error.argtypes = [ctypes.c_int]
    lib.hw_model_error.restype = ctypes.c_char_p
    lib.hw_model_invoke.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.hw_tensor_data.argtypes = [ctypes.c_void_p, ctypes.c_uint16]
    lib.hw_tensor_data.restype = ctypes.c_void_p
    lib.hw_model_set_kernels.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.hw_model_fill_input.argtypes = [ctypes.c_void_p]
    return lib


class HostBlobRunner:
    """Runs a blob on the host with the firmware's kernels; NHWC in (int8 or float32, as the
    blob), the same type out."""

    def __init__(self, blob: bytes):
        from hwnas_deploy.mcu.blob import FLOAT32, HEADER, TENSOR

        self.lib = host_library()
        self.blob = ctypes.create_string_buffer(bytes(blob), len(blob))
        fields = HEADER.unpack_from(blob)
        self.arena_bytes, self.input_index, self.output_index = fields[7], fields[8], fields[9]
        self.arena = ctypes.create_string_buffer(max(self.arena_bytes, 16))
        self.model = ctypes.create_string_buffer(_MODEL_STRUCT_BYTES)
        rc = self.lib.hw_model_init(self.model, self.blob, len(blob), self.arena, len(self.arena))
        if rc != 0:
            raise ExportError(f"blob rejected by the runtime: {self.lib.hw_model_error(rc).decode()}")
        # the runtime checked the tables: the input tensor's record is inside the blob
        input_record = TENSOR.unpack_from(blob, fields[10] + TENSOR.size * self.input_index)
        self.dtype = np.dtype(np.float32 if input_record[4] == FLOAT32 else np.int8)
        self.input_size = int(np.prod(input_record[:4]))

    def run_input(self) -> np.ndarray:
        """The int8 input the board's RUN measures on (and INPUT_FILL writes), flat NHWC."""
        self.lib.hw_model_fill_input(self.model)
        data = (ctypes.c_char * self.input_size).from_address(self.lib.hw_tensor_data(self.model, self.input_index))
        return np.frombuffer(bytes(data), dtype=np.int8).copy()

    def invoke(self, x_nhwc: np.ndarray, out_size: int, kernels: str = "optimised") -> np.ndarray:
        """Run once on `x_nhwc` (int8 or float32, as the blob's input) and return `out_size`
        outputs of the same type; `kernels` picks the int8 kernel set as on the board."""
        from hwnas_deploy.mcu.link import kernel_set

        x = np.ascontiguousarray(x_nhwc, dtype=self.dtype)
        self.lib.hw_model_set_kernels(self.model, kernel_set(kernels))
        ctypes.memmove(self.lib.hw_tensor_data(self.model, self.input_index), x.ctypes.data, x.nbytes)
        self.lib.hw_model_invoke(self.model, None, None)
        n = out_size * self.dtype.itemsize
        out = (ctypes.c_char * n).from_address(self.lib.hw_tensor_data(self.model, self.output_index))
        return np.frombuffer(bytes(out), dtype=self.dtype).copy()
