"""TFLite (full-integer int8, or float32) -> firmware model blob (firmware/runtime/hw_model.h).

The blob carries the graph of the TFLite model as our runtime executes it: NHWC tensors,
per-channel weight scales turned into fixed-point multipliers and shifts (TFLite's
QuantizeMultiplier), fused activations as clamp ranges, and a static arena plan over tensor
lifetimes (hwnas_deploy.mcu.arena: never larger than TFLite Micro's greedy-by-size plan), so peak
SRAM is known before the board runs it.
A leading NCHW->NHWC TRANSPOSE of the graph input is dropped: the host sends NHWC input. PADs
feeding only convolutions are folded into them (no padded copy in SRAM).

Kernel-specific layout (blob v2): the int8 weights of a convolution the Cortex-M7 kernels run as
2 x 2 blocks over unpacked inputs may be stored unpacked (`INT8_Q15`: int16, each group of four in
the order 0, 2, 1, 3), which their inner loop reads without SXTB16 (13 instructions per 16 MACs
against 17) at twice the flash. `unpacked_layers` picks the layers whose MACs pay for it, within a
flash budget; a blob with none stays v1, which older firmware reads.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas_deploy.errors import ExportError, UnsupportedOpError
from hwnas_deploy.graphs import tflite_op_name
from hwnas_deploy.mcu.arena import align as _align
from hwnas_deploy.mcu.arena import greedy_by_size, lower_bound, plan_arena, shared

MAGIC = 0x424E5748  # "HWNB"
VERSION = 1  # a blob without unpacked weights
VERSION_UNPACKED = 2  # with INT8_Q15 weights (firmware 0.11.0 on)
HEADER = struct.Struct("<IHHIIHHIHHIIIII")  # 48 bytes
TENSOR = struct.Struct("<4HBBHIfi")  # 24 bytes
OP = struct.Struct("<BBH4H12iI")  # 64 bytes
NO_TENSOR = 0xFFFF

INT8, INT32, FLOAT32, INT8_Q15 = 1, 2, 3, 4
_ELEMENT_BYTES = {INT8: 1, INT32: 4, FLOAT32: 4, INT8_Q15: 2}
#: a layer's weights are stored unpacked only where its output has at least this many pixels: the
#: saving is 4 instructions per 16 MACs, 0.25 x pixels per byte of flash added (below 16 pixels,
#: under 4 instructions per byte, the late layers that hold most of a network's weights)
MIN_UNPACKED_PIXELS = 16
#: the Cortex-M7 kernels' limits for the unpacked path (firmware/runtime/kernels_s8_opt.c: XQ_MAX,
#: IM2COL_Q_MAX, IM2COL_Q8_MAX)
_XQ_MAX, _IM2COL_Q_MAX, _IM2COL_Q8_MAX = 512, 576, 256
ARENA, CONST = 0, 1
OPCODES = {
    "CONV_2D": 1, "DEPTHWISE_CONV_2D": 2, "ADD": 3, "MEAN": 4, "FULLY_CONNECTED": 5, "PAD": 6, "HARD_SWISH": 7,
    "AVERAGE_POOL_2D": 8, "MAX_POOL_2D": 9, "TRANSPOSE": 10, "RELU": 11, "LOGISTIC": 12, "MUL": 13,
    "SOFTMAX": 14, "CONCATENATION": 15, "LOOKUP": 16, "TANH": 17, "CLAMP": 18, "LEAKY_RELU": 19,
}
_TFLITE_FLOAT32, _TFLITE_INT32, _TFLITE_INT8 = 0, 2, 9
FLOAT_MAX = float(np.finfo(np.float32).max)


@dataclass
class _Tensor:
    dims: tuple[int, int, int, int]
    dtype: int
    kind: int
    scale: float = 0.0
    zero_point: int = 0
    offset: int = 0
    data: bytes | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.dims)) * _ELEMENT_BYTES[self.dtype]


def unpacked_path(kh: int, kw: int, ic: int, stride: tuple[int, int], pad: tuple[int, int]) -> bool:
    """Whether the Cortex-M7 kernels run a conv2d with these weights as 2 x 2 blocks over unpacked
    inputs, the path that reads unpacked weights (`w16_path` in kernels_s8_opt.c; elsewhere the
    portable kernel reads them, correct but slower)."""
    n = kh * kw * ic
    if n % 4:
        return False
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and tuple(pad) == (0, 0) and n <= _XQ_MAX:
        return True
    return (ic % 4 == 0 and n <= _IM2COL_Q_MAX) or n <= _IM2COL_Q8_MAX


def unpack_q15(w: np.ndarray) -> np.ndarray:
    """int8 weights [O][...] (each row's length a multiple of 4) -> the INT8_Q15 layout: int16, each
    group of four in the order 0, 2, 1, 3."""
    rows = np.asarray(w, dtype=np.int8).reshape(w.shape[0], -1, 4)
    return np.ascontiguousarray(rows[:, :, [0, 2, 1, 3]].astype("<i2")).reshape(w.shape)


def pack_q15(w: np.ndarray) -> np.ndarray:
    """The int8 weights an INT8_Q15 array holds (unpack_q15's inverse)."""
    rows = np.asarray(w).reshape(w.shape[0], -1, 4)
    return np.ascontiguousarray(rows[:, :, [0, 2, 1, 3]].astype(np.int8)).reshape(w.shape)


def unpacked_layers(candidates: list[tuple[int, int, int]], size: int, flash_budget: int | None) -> set[int]:
    """Which of `candidates` (key, output pixels, bytes unpacking adds) to store unpacked in a blob of
    `size` bytes without any: every one with >= MIN_UNPACKED_PIXELS pixels, most pixels (the
    largest saving per byte) first, while the blob stays within `flash_budget`."""
    chosen, total = set(), size
    for key, pixels, nbytes in sorted(candidates, key=lambda c: (-c[1], c[0])):
        if pixels < MIN_UNPACKED_PIXELS:
            break
        if flash_budget is None or total + nbytes <= flash_budget:
            chosen.add(key)
            total += nbytes
    return chosen


@dataclass
class BlobInfo:
    """What the host needs to talk to a board about a blob."""

    size: int
    arena_bytes: int
    weight_bytes: int
    n_ops: int
    input_shape: tuple[int, int, int, int]  # NHWC
    input_quant: tuple[float, int]
    output_shape: tuple[int, ...]
    output_quant: tuple[float, int]
    op_names: list[str] = field(default_factory=list)
    dtype: str = "int8"  # of the activations: "int8" or "float32"
    #: per operator: output dims (NHWC), multiply-accumulates, arena bytes live while it runs
    op_shapes: list[tuple[int, ...]] = field(default_factory=list)
    op_macs: list[int] = field(default_factory=list)
    op_live_bytes: list[int] = field(default_factory=list)
    #: the arena TFLite Micro's greedy-by-size planner would need for the same tensors and lifetimes,
    #: and the largest set of them alive at once (no plan of this operator order is smaller)
    arena_greedy_bytes: int = 0
    arena_lower_bound: int = 0
    #: the arena if every depthwise layer whose input dies there wrote its output in place
    #: (computed; the kernels do not do it)
    arena_in_place_bytes: int = 0
    #: convolutions whose weights are stored unpacked (INT8_Q15), and the flash that took
    unpacked_layers: int = 0
    unpacked_extra_bytes: int = 0


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = q * 2^(shift - 31), q in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    q = int(math.floor(abs(mantissa) * (1 << 31) + 0.5)) * (1 if mantissa >= 0 else -1)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _channel_multipliers(in_scale: float, w_scales: np.ndarray, out_scale: float, channels: int):
    """Per-output-channel (multipliers, shifts) for in_scale * w_scale[c] / out_scale, computed
    in double precision from the float32 scales as TFLite does."""
    pairs = [
        quantize_multiplier(float(np.float64(in_scale) * np.float64(s) / np.float64(out_scale)))
        for s in np.broadcast_to(w_scales, (channels,))
    ]
    return [m for m, _ in pairs], [sh for _, sh in pairs]


def _mean_multiplier(in_scale: float, out_scale: float, count: int) -> tuple[int, int]:
    """(multiplier, shift) of an int8 MEAN over `count` values as LiteRT's QuantizedMeanOrSum
    builds it: in_scale / out_scale quantised, then 1 / count folded in by an integer division of
    the multiplier (quantising in_scale / (out_scale * count) in double differs by one step on some
    outputs when count is not a power of two)."""
    mult, shift = quantize_multiplier(float(np.float64(in_scale) / np.float64(out_scale)))
    s = min(count.bit_length() - 1, 32, 31 + shift)
    return (mult << s) // count, shift - s


def _activation_range(act: int, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8 (0 none, 1 relu, 3 relu6)."""
    def q(x: float) -> int:
        v = np.float32(x) / np.float32(scale)
        return zero_point + int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    if act == 0:
        return -128, 127
    if act == 1:
        return max(-128, q(0.0)), 127
    if act == 3:
        return max(-128, q(0.0)), min(127, q(6.0))
    raise UnsupportedOpError("blob", f"fused activation {act}")


def _float_activation_range(act: int) -> tuple[int, int]:
    """A float32 op's fused activation as the bit patterns of its clamp bounds."""
    lo, hi = {0: (-FLOAT_MAX, FLOAT_MAX), 1: (0.0, FLOAT_MAX), 3: (0.0, 6.0)}.get(act, (None, None))
    if lo is None:
        raise UnsupportedOpError("blob", f"fused activation {act}")
    return _f32_bits(lo), _f32_bits(hi)


def _lookup_table(g: "_Graph", chain: list) -> np.ndarray:
    """An int8 element-wise operator over all 256 inputs (-128 first), or a chain of them from an
    int8 tensor to an int8 tensor (DEQUANTIZE, float operators, QUANTIZE), computed by LiteRT's
    reference kernels themselves on a model of just those operators with their own options and
    scales (LOGISTIC: gemmlowp's fixed-point logistic; HARD_SWISH: int16 fixed point), so the
    board's table lookup is bit-exact with the reference the export is checked against."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def tensor(index: int) -> schema.TensorT:
        source = g.g.tensors[index]
        out = schema.TensorT()
        out.shape, out.type, out.buffer, out.name = [1, 256], source.type, 0, f"t{index}"
        out.quantization = source.quantization if source.type == _TFLITE_INT8 else None
        return out

    chain_tensors = [int(chain[0].inputs[0])] + [int(op.outputs[0]) for op in chain]
    codes, ops = [], []
    for n, op in enumerate(chain):
        source = g.model.operatorCodes[op.opcodeIndex]
        code = schema.OperatorCodeT()
        code.builtinCode = max(source.builtinCode, source.deprecatedBuiltinCode)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # 127: "see builtinCode"
        code.version = source.version
        one = schema.OperatorT()
        one.opcodeIndex, one.inputs, one.outputs = n, [n], [n + 1]
        one.builtinOptionsType, one.builtinOptions = op.builtinOptionsType, op.builtinOptions
        codes.append(code)
        ops.append(one)
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [tensor(i) for i in chain_tensors], ops
    graph.inputs, graph.outputs = [0], [len(chain)]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    try:
        interp = Interpreter(model_content=bytes(builder.Output()),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], np.arange(-128, 128, dtype=np.int8)[None])
        interp.invoke()
    except (RuntimeError, ValueError) as e:  # the reference kernels lack it, or refuse these scales
        names = "+".join(g.op_name(op) for op in chain)
        raise UnsupportedOpError("blob", names, "LiteRT's reference kernels, which the board's table is taken "
                                 f"from, do not run it ({str(e).splitlines()[0][:120]})") from None
    return interp.get_tensor(interp.get_output_details()[0]["index"]).ravel().astype(np.int8)


def _softmax_exp_table(in_scale: float, beta: float) -> np.ndarray:
    """LiteRT's int8 SOFTMAX table: entry 255 - d is expf(-in_scale * beta * d) in float32, by the
    C library's expf (the one LiteRT calls: numpy's vectorised exp differs in the last bit)."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    scale = np.float32(-np.float32(in_scale) * np.float32(beta))
    values = [libm.expf(float(np.float32(scale * np.float32(d)))) for d in range(256)]
    return np.asarray(values[::-1], dtype=np.float32)


def _f32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", x))[0]


def _lowest(tensor) -> float:
    """The value a max pool can never pick: int8's -128, or float32's most negative number."""
    return -128.0 if tensor.type == _TFLITE_INT8 else -FLOAT_MAX


def _conv_geometry(name: str, opt, in_shape, out_dims, kh: int, kw: int, extra_top: int, extra_left: int):
    """(pad_top, pad_left) of a CONV_2D / DEPTHWISE_CONV_2D over the input it was given, after
    checking what the MCU kernels cannot do."""
    if getattr(opt, "dilationHFactor", 1) != 1 or getattr(opt, "dilationWFactor", 1) != 1:
        raise UnsupportedOpError("blob", name, "dilation")
    _, in_h, in_w, _ = (int(d) for d in in_shape)
    same = opt.padding == 0  # SAME, over the (explicitly padded) input the conv was given
    pad_top = (_same_padding(out_dims[1], opt.strideH, kh, in_h) if same else 0) + extra_top
    pad_left = (_same_padding(out_dims[2], opt.strideW, kw, in_w) if same else 0) + extra_left
    return pad_top, pad_left


def _same_padding(out_n: int, stride: int, k: int, in_n: int) -> int:
    """TFLite SAME padding before the first row/col."""
    return max((out_n - 1) * stride + k - in_n, 0) // 2



class _Graph:
    """A TFLite model's one subgraph being turned into blob tensors: its constants, quantisation,
    and the blob tensor of each TFLite activation (made on first use)."""

    def __init__(self, buf: bytes):
        from ai_edge_litert import schema_py_generated as schema

        self.buf = buf
        self.model = schema.ModelT.InitFromPackedBuf(buf, 0)
        if len(self.model.subgraphs) != 1:
            raise ExportError("blob: only single-subgraph models are supported")
        self.g = self.model.subgraphs[0]
        self.tensors: list[_Tensor] = []
        self.index_of: dict[int, int] = {}  # TFLite tensor index -> blob tensor index
        self.unpackable: list[tuple[int, int, int]] = []  # (weight tensor, output pixels, int8 bytes)

    def op_name(self, op) -> str:
        return tflite_op_name(self.model, op)

    def stored(self, index: int):
        """The tensor's bytes in the model, or None for a tensor computed at run time."""
        b = self.model.buffers[self.g.tensors[index].buffer]
        if b.data is None and b.offset > 1:  # stored after the flatbuffer (large-model layout)
            return self.buf[b.offset : b.offset + b.size]
        return b.data

    def const(self, index: int) -> np.ndarray:
        t = self.g.tensors[index]
        data = self.stored(index)
        if data is None:
            raise ExportError(f"blob: tensor {t.name!r} was expected to be a constant")
        dtype = {_TFLITE_INT8: np.int8, _TFLITE_INT32: np.int32, _TFLITE_FLOAT32: np.float32}.get(t.type)
        if dtype is None:
            raise UnsupportedOpError("blob", f"constant of TFLite type {t.type}")
        return np.frombuffer(bytes(data), dtype=dtype).reshape(list(t.shape))

    def quant(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.g.tensors[index].quantization
        if q is None or q.scale is None:
            raise ExportError(f"blob: tensor {self.g.tensors[index].name!r} is not quantised "
                              "(need a full-integer model)")
        return np.asarray(q.scale, dtype=np.float32), np.asarray(q.zeroPoint, dtype=np.int64)

    def activation(self, tfl_index: int) -> int:
        if tfl_index not in self.index_of:
            t = self.g.tensors[tfl_index]
            if t.type not in (_TFLITE_INT8, _TFLITE_FLOAT32):
                raise UnsupportedOpError("blob", f"activation tensor of TFLite type {t.type} (int8 or float32 only)")
            shape = [int(s) for s in t.shape]
            dims = tuple([1] * (4 - len(shape)) + shape) if len(shape) < 4 else tuple(shape)
            if t.type == _TFLITE_FLOAT32:
                self.tensors.append(_Tensor(dims, FLOAT32, ARENA))
            else:
                scale, zp = self.quant(tfl_index)
                self.tensors.append(_Tensor(dims, INT8, ARENA, float(scale[0]), int(zp[0])))
            self.index_of[tfl_index] = len(self.tensors) - 1
        return self.index_of[tfl_index]

    def constant(self, array: np.ndarray, dims: tuple[int, int, int, int], dtype: int) -> int:
        self.tensors.append(_Tensor(dims, dtype, CONST, data=np.ascontiguousarray(array).tobytes()))
        return len(self.tensors) - 1

    def int32_array(self, values: list[int]) -> int:
        return self.constant(np.asarray(values, dtype=np.int32), (1, 1, 1, len(values)), INT32)

    def optional_constant(self, ins: list[int], i: int, dims, dtype: int) -> int:
        return self.constant(self.const(ins[i]), dims, dtype) if len(ins) > i and ins[i] >= 0 else NO_TENSOR


@dataclass
class _Op:
    """One TFLite operator as a kernel's converter sees it: its TFLite inputs (a folded PAD's
    source in place of the padded tensor), options, and blob input/output tensors."""

    name: str
    index: int  # position in the TFLite graph
    tfl: object  # the TFLite operator (its original inputs)
    ins: list[int]
    opt: object
    x: int  # blob index of the first input
    y: int  # blob index of the output
    extra_top: int = 0  # padding of a PAD folded into this operator
    extra_left: int = 0
    input_is_nchw_graph_input: bool = False  # consumes the NCHW graph input as given
    input_is_nchw_view: bool = False  # consumes an NHWC tensor whose NCHW transpose was dropped

    def in_t(self, g: _Graph) -> _Tensor:
        return g.tensors[self.x]

    def out_t(self, g: _Graph) -> _Tensor:
        return g.tensors[self.y]


@dataclass(frozen=True)
class Kernel:
    """A firmware kernel's opcode and its converter, `convert(graph, op, fp) -> (inputs, params)`;
    `tables`: the int8 params that point at tables in the blob's data (fixed up on packing);
    `int8_opcode`: the firmware opcode of the int8 version where it is another kernel (a table
    lookup for element-wise operators)."""

    opcode: int
    convert: object
    tables: tuple[int, ...] = ()
    int8_opcode: int | None = None

    def opcode_for(self, fp: bool) -> int:
        return self.opcode if fp or self.int8_opcode is None else self.int8_opcode


#: TFLite operator -> the firmware's kernel (TFLite Micro's registration: one converter each)
KERNELS: dict[str, Kernel] = {}


def kernel(*names: str, tables: tuple[int, ...] = (), opcode: str | None = None, int8_opcode: str | None = None):
    """Register `fn` as the converter of the TFLite operators `names` (each to the firmware opcode
    of its own name, or `opcode`)."""
    def register(fn):
        for name in names:
            KERNELS[name] = Kernel(OPCODES[opcode or name], fn, tables,
                                   OPCODES[int8_opcode] if int8_opcode else None)
        return fn
    return register


@kernel("CONV_2D", "DEPTHWISE_CONV_2D", tables=(6, 7))
def _conv(g: _Graph, op: _Op, fp: bool):
    w = g.const(op.ins[1])
    if op.name == "CONV_2D" and g.op_name(op.tfl) == "DEPTHWISE_CONV_2D":  # one input channel (see tflite_to_blob)
        w = np.ascontiguousarray(w.transpose(3, 1, 2, 0))  # [1, KH, KW, M] -> [M, KH, KW, 1]
    out_t = op.out_t(g)
    # over the input the TFLite conv was given (before any PAD folded in here)
    pad_top, pad_left = _conv_geometry(op.name, op.opt, g.g.tensors[int(op.tfl.inputs[0])].shape, out_t.dims,
                                       int(w.shape[1]), int(w.shape[2]), op.extra_top, op.extra_left)
    channels = out_t.dims[3]
    if op.name == "DEPTHWISE_CONV_2D" and channels % op.in_t(g).dims[3]:
        raise UnsupportedOpError("blob", op.name, f"{channels} output channels from {op.in_t(g).dims[3]} input "
                                 "channels (a depth multiplier must divide them)")
    dtype = FLOAT32 if fp else INT8
    inputs = [op.x, g.constant(w, tuple(int(d) for d in w.shape), dtype),
              g.optional_constant(op.ins, 2, (1, 1, 1, channels), FLOAT32 if fp else INT32)]
    if fp:
        return inputs, [op.opt.strideH, op.opt.strideW, pad_top, pad_left,
                        *_float_activation_range(op.opt.fusedActivationFunction)]
    if op.name == "CONV_2D" and unpacked_path(int(w.shape[1]), int(w.shape[2]), int(w.shape[3]),
                                              (op.opt.strideH, op.opt.strideW), (pad_top, pad_left)):
        g.unpackable.append((inputs[1], out_t.dims[1] * out_t.dims[2], int(w.size)))
    w_scale, _ = g.quant(op.ins[1])
    mults, shifts = _channel_multipliers(op.in_t(g).scale, w_scale, out_t.scale, channels)
    act = _activation_range(op.opt.fusedActivationFunction, out_t.scale, out_t.zero_point)
    return inputs, [op.opt.strideH, op.opt.strideW, pad_top, pad_left, *act, g.int32_array(mults),
                    g.int32_array(shifts)]


@kernel("FULLY_CONNECTED", tables=(2, 3))
def _fully_connected(g: _Graph, op: _Op, fp: bool):
    w = g.const(op.ins[1])
    n_out, n_in = w.shape
    out_t = op.out_t(g)
    inputs = [op.x, g.constant(w, (1, 1, n_out, n_in), FLOAT32 if fp else INT8),
              g.optional_constant(op.ins, 2, (1, 1, 1, n_out), FLOAT32 if fp else INT32)]
    if fp:
        return inputs, list(_float_activation_range(op.opt.fusedActivationFunction))
    w_scale, _ = g.quant(op.ins[1])
    mults, shifts = _channel_multipliers(op.in_t(g).scale, w_scale, out_t.scale, n_out)
    act = _activation_range(op.opt.fusedActivationFunction, out_t.scale, out_t.zero_point)
    # LiteRT requantises a per-channel FULLY_CONNECTED with one rounding, a per-tensor one with
    # two (as convolutions): the flag tells the firmware which (bit-exact either way)
    return inputs, [*act, g.int32_array(mults), g.int32_array(shifts), int(np.size(w_scale) > 1)]


@kernel("ADD")
def _add(g: _Graph, op: _Op, fp: bool):
    in_t, out_t = op.in_t(g), op.out_t(g)
    b = g.activation(op.ins[1])
    if g.tensors[b].dims != in_t.dims or out_t.dims != in_t.dims:
        raise UnsupportedOpError("blob", op.name, "broadcasting")
    if fp:
        return [op.x, b], [0] * 7 + list(_float_activation_range(op.opt.fusedActivationFunction))
    left_shift = 20
    twice_max = 2 * max(np.float64(in_t.scale), np.float64(g.tensors[b].scale))
    m1 = quantize_multiplier(float(np.float64(in_t.scale) / twice_max))
    m2 = quantize_multiplier(float(np.float64(g.tensors[b].scale) / twice_max))
    mo = quantize_multiplier(float(twice_max / ((1 << left_shift) * np.float64(out_t.scale))))
    act = _activation_range(op.opt.fusedActivationFunction, out_t.scale, out_t.zero_point)
    return [op.x, b], [left_shift, *m1, *m2, *mo, *act]


@kernel("TRANSPOSE")
def _transpose(g: _Graph, op: _Op, fp: bool):
    perm = [int(v) for v in g.const(op.ins[1]).ravel()]
    if len(perm) != 4 or len(g.g.tensors[op.ins[0]].shape) != 4:
        raise UnsupportedOpError("blob", op.name, "only 4-D transposes")
    in_t, out_t = op.in_t(g), op.out_t(g)
    if not fp and (in_t.scale, in_t.zero_point) != (out_t.scale, out_t.zero_point):
        raise UnsupportedOpError("blob", op.name, "requantising transpose")
    return [op.x], perm


@kernel("RELU")
def _relu(g: _Graph, op: _Op, fp: bool):
    if fp:
        return [op.x], []
    in_t, out_t = op.in_t(g), op.out_t(g)
    # TFLite's quantised ReLU: requantise from the input's scale, clamp at zero
    mult = quantize_multiplier(float(np.float64(in_t.scale) / np.float64(out_t.scale)))
    return [op.x], [*mult, *_activation_range(1, out_t.scale, out_t.zero_point)]


@kernel("MUL")
def _mul(g: _Graph, op: _Op, fp: bool):
    if g.stored(op.ins[1]) is not None or g.stored(op.ins[0]) is not None:
        raise UnsupportedOpError("blob", op.name, "multiplication by a constant tensor")
    in_t, out_t = op.in_t(g), op.out_t(g)
    b = g.activation(op.ins[1])
    big, small = (op.x, b) if in_t.dims == out_t.dims else (b, op.x)
    sd, od = g.tensors[small].dims, out_t.dims
    if g.tensors[big].dims != od:
        raise UnsupportedOpError("blob", op.name, "broadcasting of the first operand")
    if sd == od:
        broadcast = 0
    elif sd[0] == od[0] == 1 and sd[1] == sd[2] == 1 and sd[3] == od[3]:
        broadcast = 1  # one value per channel (a squeeze-and-excitation gate)
    else:
        raise UnsupportedOpError("blob", op.name, f"broadcasting {sd} over {od}")
    if fp:
        return [big, small], [0, 0, *_float_activation_range(op.opt.fusedActivationFunction), broadcast]
    real = np.float64(g.tensors[big].scale) * np.float64(g.tensors[small].scale) / np.float64(out_t.scale)
    return [big, small], [*quantize_multiplier(float(real)),
                          *_activation_range(op.opt.fusedActivationFunction, out_t.scale, out_t.zero_point),
                          broadcast]


#: int8 element-wise operators the board runs as a 256-entry table taken from LiteRT
LOOKUP_OPS = ("LOGISTIC", "TANH", "HARD_SWISH", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "GELU",
              "QUANTIZE", "EXP", "ABS", "NEG", "LOG")


def _element_wise(g: _Graph, op: _Op, fp: bool):
    if not fp:
        return [op.x], [g.constant(_lookup_table(g, [op.tfl]), (1, 1, 1, 256), INT8)]
    if op.name in ("LOGISTIC", "TANH", "HARD_SWISH"):
        return [op.x], []
    if op.name in ("RELU6", "RELU_N1_TO_1", "RELU_0_TO_1"):
        lo, hi = {"RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}[op.name]
        return [op.x], [_f32_bits(lo), _f32_bits(hi)]
    if op.name == "LEAKY_RELU":
        return [op.x], [_f32_bits(op.opt.alpha)]
    raise UnsupportedOpError("blob", op.name, "float32 has no MCU kernel for it (its int8 version has: "
                             "export blob from an int8 model)")


_FLOAT_OPCODE = {"RELU6": "CLAMP", "RELU_N1_TO_1": "CLAMP", "RELU_0_TO_1": "CLAMP", "LOGISTIC": "LOGISTIC",
                 "TANH": "TANH", "HARD_SWISH": "HARD_SWISH", "LEAKY_RELU": "LEAKY_RELU"}
for _name in LOOKUP_OPS:  # float32: a kernel of its own where there is one (else refused when converted)
    kernel(_name, tables=(0,), opcode=_FLOAT_OPCODE.get(_name, "LOOKUP"), int8_opcode="LOOKUP")(_element_wise)


@kernel("SOFTMAX", tables=(0,))
def _softmax(g: _Graph, op: _Op, fp: bool):
    if fp:
        return [op.x], [_f32_bits(op.opt.beta)]
    table = g.constant(_softmax_exp_table(op.in_t(g).scale, op.opt.beta), (1, 1, 1, 256), FLOAT32)
    return [op.x], [table, _f32_bits(op.out_t(g).scale)]


@kernel("CONCATENATION")
def _concatenation(g: _Graph, op: _Op, fp: bool):
    if len(op.ins) > 4:
        raise UnsupportedOpError("blob", op.name, f"{len(op.ins)} inputs (at most 4)")
    if any(g.stored(i) is not None for i in op.ins):
        raise UnsupportedOpError("blob", op.name, "concatenation with a constant tensor")
    if op.opt.fusedActivationFunction:
        raise UnsupportedOpError("blob", op.name, "fused activation")
    out_t = op.out_t(g)
    inputs = [op.x] + [g.activation(i) for i in op.ins[1:]]
    if not fp and any((g.tensors[i].scale, g.tensors[i].zero_point) != (out_t.scale, out_t.zero_point)
                      for i in inputs):
        raise UnsupportedOpError("blob", op.name, "requantising concatenation (input and output scales differ)")
    rank = len(g.g.tensors[op.ins[0]].shape)
    axis = op.opt.axis + rank if op.opt.axis < 0 else op.opt.axis
    return inputs, [axis + 4 - rank]


@kernel("AVERAGE_POOL_2D", "MAX_POOL_2D")
def _pool(g: _Graph, op: _Op, fp: bool):
    o = op.opt
    in_t, out_t = op.in_t(g), op.out_t(g)
    same = o.padding == 0
    _, in_h, in_w, _ = (int(d) for d in g.g.tensors[int(op.tfl.inputs[0])].shape)
    pad_top = (_same_padding(out_t.dims[1], o.strideH, o.filterHeight, in_h) if same else 0) + op.extra_top
    pad_left = (_same_padding(out_t.dims[2], o.strideW, o.filterWidth, in_w) if same else 0) + op.extra_left
    if fp:
        act = _float_activation_range(o.fusedActivationFunction)
    else:
        if (in_t.scale, in_t.zero_point) != (out_t.scale, out_t.zero_point):
            raise UnsupportedOpError("blob", op.name, "requantising pooling (input and output scales differ)")
        act = _activation_range(o.fusedActivationFunction, out_t.scale, out_t.zero_point)
    return [op.x], [o.strideH, o.strideW, pad_top, pad_left, o.filterHeight, o.filterWidth, *act]


@kernel("MEAN")
def _mean(g: _Graph, op: _Op, fp: bool):
    in_t, out_t = op.in_t(g), op.out_t(g)
    axes = sorted(int(a) for a in g.const(op.ins[1]).ravel())
    if axes == [2, 3] and op.input_is_nchw_view:  # the mean of NCHW over H, W is NHWC's over 1, 2
        axes = [1, 2]
    if axes == [2, 3] and op.input_is_nchw_graph_input:
        # a head alone: the spatial mean of the NCHW input as given; the host sends NHWC
        nb, c, h, w = in_t.dims
        in_t.dims, axes = (nb, h, w, c), [1, 2]
    if axes != [1, 2] or len(g.g.tensors[op.ins[0]].shape) != 4:
        raise UnsupportedOpError("blob", op.name, f"reduction over axes {axes} (only H, W)")
    if fp:
        return [op.x], []
    # LiteRT folds the 1 / (H * W) into the multiplier: so does the blob (bit-exact)
    return [op.x], [*_mean_multiplier(in_t.scale, out_t.scale, in_t.dims[1] * in_t.dims[2]), 1]


@kernel("PAD")
def _pad(g: _Graph, op: _Op, fp: bool):
    pads = g.const(op.ins[1]).reshape(-1, 2)
    if pads[0].any() or pads[3].any():
        raise UnsupportedOpError("blob", op.name, "padding of batch or channels")
    return [op.x], [int(pads[1][0]), int(pads[1][1]), int(pads[2][0]), int(pads[2][1])]


def _io_records(blob: bytes) -> tuple[tuple, tuple]:
    """The tensor records (TENSOR fields) of a blob's input and output."""
    fields = HEADER.unpack_from(blob)
    return tuple(TENSOR.unpack_from(blob, fields[10] + i * TENSOR.size) for i in (fields[8], fields[9]))


def blob_input_dims(blob: bytes) -> tuple[int, ...]:
    """The dimensions of a blob's input tensor (NHWC; fewer dimensions padded in front with 1s)."""
    return tuple(_io_records(blob)[0][:4])


def blob_io_quantization(blob: bytes) -> tuple[tuple[float, int], tuple[float, int]]:
    """((scale, zero point) of the input, the same of the output) of a blob's int8 tensors."""
    inp, out = _io_records(blob)
    return (inp[8], inp[9]), (out[8], out[9])


def input_transposed(tflite_path: str | Path) -> bool:
    """Whether the model's blob takes the 4-D input NHWC where the model takes it NCHW: the
    converter drops a leading NCHW->NHWC TRANSPOSE of the graph input (our exports have one; a
    model made in TensorFlow is NHWC already)."""
    graph = _Graph(Path(tflite_path).read_bytes())
    g = graph.g
    if not g.operators:
        return False
    op, source = g.operators[0], int(g.inputs[0])
    if graph.op_name(op) == "QUANTIZE" and int(op.inputs[0]) == source and len(g.operators) > 1:
        op, source = g.operators[1], int(op.outputs[0])  # float input quantised first: the board takes that
    return (graph.op_name(op) == "TRANSPOSE" and int(op.inputs[0]) == source
            and list(graph.const(int(op.inputs[1]))) == [0, 2, 3, 1])


def op_macs(opcode: int, weight_dims: tuple[int, ...] | None, out_dims: tuple[int, ...]) -> int:
    """Multiply-accumulates of one blob operator (convolutions and fully connected layers), from
    its weights' and output's dimensions."""
    if weight_dims is None:
        return 0
    w = weight_dims
    if opcode == OPCODES["CONV_2D"]:  # weights [O][KH][KW][I]
        return math.prod(out_dims) * w[1] * w[2] * w[3]
    if opcode == OPCODES["DEPTHWISE_CONV_2D"]:  # [1][KH][KW][C]
        return math.prod(out_dims) * w[1] * w[2]
    if opcode == OPCODES["FULLY_CONNECTED"]:  # [1][1][O][I]
        return math.prod(out_dims) * w[3]
    return 0


def blob_ops(blob: bytes) -> list[tuple[int, tuple[int, ...] | None, tuple[int, ...]]]:
    """(opcode, dimensions of its second input (the weights) or None, output dimensions) of every
    operator of a blob, read from its tables."""
    fields = HEADER.unpack_from(blob)
    n_tensors, n_ops, tensors_at, ops_at = fields[5], fields[6], fields[10], fields[11]
    dims = [TENSOR.unpack_from(blob, tensors_at + TENSOR.size * i)[:4] for i in range(n_tensors)]
    out = []
    for i in range(n_ops):
        op = OP.unpack_from(blob, ops_at + OP.size * i)
        opcode, n_inputs, output, inputs = op[0], op[1], op[2], op[3:7]
        weights = dims[inputs[1]] if n_inputs > 1 and inputs[1] != NO_TENSOR else None
        out.append((opcode, weights, dims[output]))
    return out


#: float32 operators of one input that act element by element (a chain of them between a
#: DEQUANTIZE and a QUANTIZE is one int8 table)
_FLOAT_ELEMENT_WISE = {"LEAKY_RELU", "ELU", "GELU", "TANH", "LOGISTIC", "HARD_SWISH", "RELU", "RELU6", "RELU_N1_TO_1",
                       "RELU_0_TO_1", "EXP", "ABS", "NEG", "SQUARE", "SIN", "COS"}


def _dequantized_chain(graph: _Graph, n: int, consumer_ops: dict[int, list[int]], graph_outputs: set[int]) -> list[int]:
    """Operator indices DEQUANTIZE, float element-wise operators, QUANTIZE from operator `n` on,
    each the only consumer of the one before (what the quantiser leaves of an operator it has no
    int8 kernel for), or [] where operator n does not start such a chain."""
    g = graph.g
    op = g.operators[n]
    if graph.op_name(op) != "DEQUANTIZE" or g.tensors[int(op.inputs[0])].type != _TFLITE_INT8:
        return []
    chain = [n]
    while True:
        out = int(g.operators[chain[-1]].outputs[0])
        users = consumer_ops.get(out, [])
        if len(users) != 1 or out in graph_outputs:
            return []
        nxt = g.operators[users[0]]
        name = graph.op_name(nxt)
        if name == "QUANTIZE" and g.tensors[int(nxt.outputs[0])].type == _TFLITE_INT8:
            return chain + [users[0]] if len(chain) > 1 else []
        if name not in _FLOAT_ELEMENT_WISE or len(nxt.inputs) != 1:
            return []
        chain.append(users[0])


def tflite_to_blob(tflite_path: str | Path, blob_path: str | Path, unpacked: bool = True,
                   flash_budget: int | None = None) -> BlobInfo:
    """Convert a TFLite model to a blob at `blob_path`: each operator by its registered kernel's
    converter (`KERNELS`); the graph's structure (the input transpose, reshapes, folded pads) here.
    `unpacked`: store the weights of the convolutions that gain from it unpacked (blob v2, see the
    module's doc), within `flash_budget` bytes of blob if given; False: a v1 blob, int8 weights."""
    graph = _Graph(Path(tflite_path).read_bytes())
    g, tensors, index_of = graph.g, graph.tensors, graph.index_of
    activation = graph.activation

    # A PAD whose only consumers are convolutions is folded into them (their kernels skip
    # out-of-bounds taps, which equals padding with the zero point), and so is a PADV2 with the
    # lowest value feeding max pools: no padded copy in SRAM.
    consumer_ops: dict[int, list[int]] = {}  # tensor -> the operators that read it
    for n, op in enumerate(g.operators):
        for i in op.inputs:
            consumer_ops.setdefault(int(i), []).append(n)
    folded_pads: dict[int, tuple[int, int, int]] = {}  # padded tensor -> (source, top, left)
    nchw_views: set[int] = set()  # NHWC tensors standing in for their dropped NCHW transposes
    skipped: set[int] = set()  # operators folded into a table lookup
    graph_outputs = {int(o) for o in g.outputs}

    ops: list[tuple[int, list[int], int, list[int], str, bool]] = []
    graph_input, output = g.inputs[0], int(g.outputs[0])
    input_alias: int | None = None  # the tensor the board takes as its input, where not the graph's
    nchw_input: int | None = None  # the NCHW tensor whose NHWC transpose (or reshape) is the board's input
    for n, op in enumerate(g.operators):
        if n in skipped:
            continue
        name = graph.op_name(op)
        ins, outs = [int(i) for i in op.inputs], [int(o) for o in op.outputs]
        users = {graph.op_name(g.operators[m]) for m in consumer_ops.get(outs[0], [])} if outs else set()
        users = users or {"?"}
        if (name == "TRANSPOSE" and users == {"MEAN"} and outs[0] not in graph_outputs
                and list(graph.const(ins[1])) == [0, 3, 1, 2]
                and all(sorted(int(a) for a in graph.const(int(g.operators[m].inputs[1])).ravel()) == [2, 3]
                        for m in consumer_ops[outs[0]])):
            # NHWC -> NCHW for a mean over H and W (torch's x.mean((2, 3))): the mean reads NHWC
            index_of[outs[0]] = activation(ins[0])
            nchw_views.add(outs[0])
            continue
        chain = _dequantized_chain(graph, n, consumer_ops, graph_outputs)
        if chain:
            x, y = activation(ins[0]), activation(int(g.operators[chain[-1]].outputs[0]))
            table = graph.constant(_lookup_table(graph, [g.operators[m] for m in chain]), (1, 1, 1, 256), INT8)
            label = "+".join(graph.op_name(g.operators[m]) for m in chain[1:-1])
            ops.append((OPCODES["LOOKUP"], [x], y, [table] + [0] * 11, label, False))
            skipped.update(chain)
            continue
        foldable = (name == "PAD" and users <= {"CONV_2D", "DEPTHWISE_CONV_2D"}) or (
            name == "PADV2"
            and users == {"MAX_POOL_2D"}
            and float(graph.const(ins[2]).ravel()[0]) <= _lowest(g.tensors[ins[0]])
        )
        if foldable:
            pads = graph.const(ins[1]).reshape(-1, 2)
            if not (pads[0].any() or pads[3].any()):
                folded_pads[outs[0]] = (ins[0], int(pads[1][0]), int(pads[2][0]))
                continue
        extra_top = extra_left = 0
        if ins and ins[0] in folded_pads:
            padded = ins[0]
            ins = [folded_pads[padded][0], *ins[1:]]
            extra_top, extra_left = folded_pads[padded][1], folded_pads[padded][2]
        entry = input_alias if input_alias is not None else graph_input  # what the board's input is so far
        if (name == "QUANTIZE" and not ops and ins[0] == graph_input and input_alias is None
                and g.tensors[ins[0]].type == _TFLITE_FLOAT32 and g.tensors[outs[0]].type == _TFLITE_INT8):
            # an int8 model with float input: the board takes the quantised tensor (the host quantises)
            input_alias = outs[0]
            continue
        if (name == "DEQUANTIZE" and outs[0] == output and g.tensors[ins[0]].type == _TFLITE_INT8
                and n == len(g.operators) - 1):
            output = ins[0]  # ... and float output: the board gives the int8 tensor (the host dequantises)
            continue
        if name == "TRANSPOSE" and not ops and ins[0] == entry and nchw_input is None:
            if list(graph.const(ins[1])) != [0, 2, 3, 1]:
                raise UnsupportedOpError("blob", "TRANSPOSE", "only the NCHW->NHWC input transpose is supported")
            nchw_input, input_alias = entry, outs[0]
            continue
        if name == "RESHAPE" and not ops and ins[0] == entry and nchw_input is None:
            # LiteRT writes NCHW -> NHWC of a one-channel input as a RESHAPE (the same memory
            # order): the board takes the reshaped tensor as its input, as the transposed one above
            nchw_input, input_alias = entry, outs[0]
            continue
        if nchw_input is not None and nchw_input in ins and nchw_input not in index_of:
            # the NCHW input is used again past the dropped transpose (a residual block alone: its
            # ADD takes the input as given): the board gets it back from the NHWC one it was sent
            src = activation(input_alias)
            ops.append((OPCODES["TRANSPOSE"], [src], activation(nchw_input), [0, 3, 1, 2] + [0] * 8, "TRANSPOSE",
                        tensors[src].dtype == FLOAT32))
        if name == "RESHAPE":  # NHWC memory is already in the new shape's order: an alias
            index_of[outs[0]] = activation(ins[0])
            continue
        if name == "DEPTHWISE_CONV_2D" and int(g.tensors[ins[0]].shape[-1]) == 1:
            # LiteRT writes a Conv2d with one input channel (a keyword-spotting network's first layer)
            # as a depthwise conv with depth multiplier M: the same sums as a conv with M filters
            name = "CONV_2D"
        if name not in KERNELS:
            raise UnsupportedOpError("blob", name, "the MCU runtime has no kernel for it (formats that take it: "
                                     "tflite and tflite-int8, which LiteRT runs)")
        x, y = activation(ins[0]), activation(outs[0])
        fp = tensors[x].dtype == FLOAT32
        if tensors[y].dtype != tensors[x].dtype:
            raise UnsupportedOpError("blob", name, "mixed int8/float32 operands")
        view = _Op(name, n, op, ins, op.builtinOptions, x, y, extra_top, extra_left,
                   input_is_nchw_graph_input=ins[0] == entry and nchw_input is None and not ops,
                   input_is_nchw_view=ins[0] in nchw_views)
        inputs, params = KERNELS[name].convert(graph, view, fp)
        ops.append((KERNELS[name].opcode_for(fp), inputs, y, (list(params) + [0] * 12)[:12], name, fp))

    entry = input_alias if input_alias is not None else graph_input
    if entry not in index_of:
        raise ExportError("blob: the graph input is not consumed by any supported operator")
    blob_input, blob_output = index_of[entry], index_of[output]

    # -- arena plan over activation lifetimes ----------------------------------------------
    arena_ids = [i for i, t in enumerate(tensors) if t.kind == ARENA]
    life = {i: [len(ops), -1] for i in arena_ids}
    for n, (_, inputs, out, _, _, _) in enumerate(ops):
        life[out][0] = min(life[out][0], n)
        life[out][1] = max(life[out][1], n)
        for i in inputs:
            if i in life:
                life[i][0] = min(life[i][0], n)
                life[i][1] = max(life[i][1], n)
    life[blob_input][0] = 0
    life[blob_output][1] = len(ops)
    arena_sizes, arena_lives = [tensors[i].nbytes for i in arena_ids], [tuple(life[i]) for i in arena_ids]
    offsets, arena_bytes = plan_arena(arena_sizes, arena_lives)
    # what an in-place depthwise (its output over its input where the input dies there, as
    # TinyEngine does) would plan: reported, not run (the kernels do not write in place)
    slot = {t: k for k, t in enumerate(arena_ids)}
    in_place = [(slot[inputs[0]], slot[out]) for n, (opcode, inputs, out, _, _, _) in enumerate(ops)
                if opcode == OPCODES["DEPTHWISE_CONV_2D"] and inputs[0] in slot and life[inputs[0]][1] == n
                and tensors[inputs[0]].dims[3] == tensors[out].dims[3]]
    arena_in_place = plan_arena(*shared(arena_sizes, arena_lives, in_place))[1] if in_place else arena_bytes
    for i, off in zip(arena_ids, offsets, strict=True):
        tensors[i].offset = off

    # -- unpacked weights: the layers that gain, within the flash budget ----------------------
    n_unpacked = extra_bytes = 0
    if unpacked and graph.unpackable:
        consts = sum(_align(t.nbytes) for t in tensors if t.kind == CONST)
        size = (HEADER.size + _align(TENSOR.size * len(tensors)) + _align(OP.size * len(ops)) + consts)
        grows = {i: _align(2 * n) - _align(n) for i, _, n in graph.unpackable}
        for i in unpacked_layers([(i, px, grows[i]) for i, px, _ in graph.unpackable], size, flash_budget):
            t = tensors[i]
            w = np.frombuffer(t.data, dtype=np.int8).reshape(t.dims)
            t.data, t.dtype = unpack_q15(w).tobytes(), INT8_Q15
            n_unpacked, extra_bytes = n_unpacked + 1, extra_bytes + grows[i]

    # -- data section: constants, then the multiplier tables the op params point at ---------
    data = bytearray()
    for t in tensors:
        if t.kind == CONST:
            t.offset = len(data)
            data += t.data
            data += bytes(_align(len(data)) - len(data))
    packed_ops = []
    for opcode, inputs, out, p, name, fp in ops:
        p = list(p)
        if not fp:  # float32 ops carry no multiplier tables
            for i in KERNELS[name].tables if name in KERNELS else (0,):  # else: a folded chain's table
                p[i] = tensors[p[i]].offset
        padded = (list(inputs) + [NO_TENSOR] * 4)[:4]
        packed_ops.append(OP.pack(opcode, len(inputs), out, *padded, *p, 0))

    tensors_offset = HEADER.size
    ops_offset = tensors_offset + _align(TENSOR.size * len(tensors))
    data_offset = ops_offset + _align(OP.size * len(packed_ops))
    table = b"".join(TENSOR.pack(*t.dims, t.dtype, t.kind, 0, t.offset, t.scale, t.zero_point) for t in tensors)
    tensor_bytes = table + bytes(ops_offset - tensors_offset - len(table))
    op_bytes = b"".join(packed_ops) + bytes(data_offset - ops_offset - OP.size * len(packed_ops))
    total = data_offset + len(data)
    rest = struct.pack("<HHIHHIIIII", len(tensors), len(packed_ops), arena_bytes, blob_input, blob_output,
                       tensors_offset, ops_offset, data_offset, len(data), 0)
    payload = rest + tensor_bytes + op_bytes + bytes(data)
    crc = zlib.crc32(payload) & 0xFFFFFFFF
    version = VERSION_UNPACKED if n_unpacked else VERSION
    blob = struct.pack("<IHHII", MAGIC, version, HEADER.size, total, crc) + payload
    assert len(blob) == total
    Path(blob_path).write_bytes(blob)

    it, ot = tensors[blob_input], tensors[blob_output]
    out_shape = tuple(int(s) for s in g.tensors[int(g.outputs[0])].shape)
    return BlobInfo(
        size=total,
        arena_bytes=arena_bytes,
        weight_bytes=len(data),
        n_ops=len(packed_ops),
        input_shape=it.dims,
        input_quant=(it.scale, it.zero_point),
        output_shape=out_shape,
        output_quant=(ot.scale, ot.zero_point),
        op_names=[o[4] for o in ops],
        op_shapes=[tensors[o[2]].dims for o in ops],
        op_macs=[op_macs(o[0], tensors[o[1][1]].dims if len(o[1]) > 1 and o[1][1] != NO_TENSOR else None,
                         tensors[o[2]].dims) for o in ops],
        op_live_bytes=[sum(tensors[i].nbytes for i in arena_ids if life[i][0] <= n <= life[i][1])
                       for n in range(len(ops))],
        dtype="float32" if it.dtype == FLOAT32 else "int8",
        arena_greedy_bytes=greedy_by_size(arena_sizes, arena_lives)[1],
        arena_lower_bound=lower_bound(arena_sizes, arena_lives),
        arena_in_place_bytes=arena_in_place,
        unpacked_layers=n_unpacked,
        unpacked_extra_bytes=extra_bytes,
    )


def _table_params() -> dict[int, tuple[int, ...]]:
    """The op params that hold data offsets, by the opcode of an int8 op (each kernel's `tables`)."""
    out: dict[int, tuple[int, ...]] = {OPCODES["LOOKUP"]: (0,)}
    for k in KERNELS.values():
        out.setdefault(k.opcode_for(False), k.tables)
    return out


def fit_flash(blob: bytes, flash_budget: int) -> bytes:
    """`blob` with as many of its unpacked (INT8_Q15) weights turned back into int8 as it takes to
    fit `flash_budget` bytes, the layers with the fewest output pixels first (`unpacked_layers`'
    order): the blob `tflite_to_blob(..., flash_budget=...)` writes, byte for byte. A blob that fits,
    or has nothing to give back, is returned as it is."""
    if len(blob) <= flash_budget or HEADER.unpack_from(blob)[1] < VERSION_UNPACKED:
        return blob
    h = list(HEADER.unpack_from(blob))
    n_tensors, n_ops, tensors_offset, ops_offset, data_offset = h[5], h[6], h[10], h[11], h[12]
    tensors = [list(TENSOR.unpack_from(blob, tensors_offset + i * TENSOR.size)) for i in range(n_tensors)]
    ops = [list(OP.unpack_from(blob, ops_offset + i * OP.size)) for i in range(n_ops)]

    def data_of(t) -> bytes:
        n = int(np.prod(t[:4])) * _ELEMENT_BYTES[t[4]]
        return blob[data_offset + t[7]:data_offset + t[7] + n]

    unpacked = []  # (tensor, output pixels of its conv, bytes given back as int8)
    for op in ops:
        w = op[4]  # OP: opcode, n_inputs, output, inputs[4], p[12], reserved
        if op[1] > 1 and w != NO_TENSOR and tensors[w][4] == INT8_Q15:
            n = int(np.prod(tensors[w][:4]))
            out = tensors[op[2]]
            unpacked.append((w, out[1] * out[2], _align(2 * n) - _align(n)))
    int8_size = len(blob) - sum(g for _, _, g in unpacked)
    keep = unpacked_layers(unpacked, int8_size, flash_budget)
    moved, data = {}, bytearray()
    for i, t in enumerate(tensors):
        if t[5] != CONST:
            continue
        payload = data_of(t)
        if t[4] == INT8_Q15 and i not in keep:
            q15 = np.frombuffer(payload, dtype="<i2").reshape(t[0], -1)
            payload, t[4] = pack_q15(q15).tobytes(), INT8
        moved[t[7]] = len(data)
        t[7] = len(data)
        data += payload + bytes(_align(len(payload)) - len(payload))
    tables = _table_params()
    for op in ops:
        if tensors[op[3]][4] == INT8:  # an int8 op's tables (float32 ops carry none)
            for i in tables.get(op[0], ()):
                op[7 + i] = moved[op[7 + i]]
    table = b"".join(TENSOR.pack(*t) for t in tensors)
    op_bytes = b"".join(OP.pack(*op) for op in ops)
    out = bytearray(blob[:data_offset]) + data
    out[tensors_offset:tensors_offset + len(table)] = table
    out[ops_offset:ops_offset + len(op_bytes)] = op_bytes
    h[1] = VERSION_UNPACKED if keep else VERSION
    h[3], h[13] = len(out), len(data)
    out[:HEADER.size] = HEADER.pack(*h)
    out[12:16] = (zlib.crc32(bytes(out[16:])) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)


def blob_unpacked_layers(blob: bytes) -> int:
    """How many weight tensors of `blob` are stored unpacked (INT8_Q15)."""
    h = HEADER.unpack_from(blob)
    return sum(TENSOR.unpack_from(blob, h[10] + i * TENSOR.size)[4] == INT8_Q15 for i in range(h[5]))
