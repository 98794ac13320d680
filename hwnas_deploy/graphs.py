"""What a model file's graph holds: its input and output tensors, and per layer the operator, shapes,
multiply-accumulates and parameters, read from the graph itself (ONNX, TFLite, torch.export).

Every reader refuses a file it cannot use with one line naming the file and the problem (not a
model of that kind, truncated, a dynamic dimension, several inputs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from hwnas_deploy.artifact import TensorSpec
from hwnas_deploy.errors import ConfigError


@dataclass
class Layer:
    op: str
    output_shape: tuple[int, ...]
    macs: int = 0
    params: int = 0
    name: str = ""


@dataclass
class ModelFacts:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layers: list[Layer] = field(default_factory=list)
    #: "int8" for a full-integer model (int8 input and output, or float ones quantised at the ends
    #: of an int8 graph), else "float32"
    dtype: str = "float32"
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def layer_dicts(self) -> list[dict]:
        return [asdict(layer) for layer in self.layers]


def _fixed_shape(source: Path, tensor: str, dims: list, notes: list[str]) -> tuple[int, ...]:
    """The tensor's shape with a dynamic leading (batch) dimension taken as 1; any other dynamic
    dimension is an error naming it."""
    shape = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            shape.append(d)
        elif i == 0:
            shape.append(1)
            notes.append(f"input {tensor!r}: dynamic batch dimension taken as 1")
        else:
            raise ConfigError(f"{source}: tensor {tensor!r} has a dynamic dimension {i} ({d!r}) in {dims}; "
                              "export the model with a fixed input shape")
    return tuple(shape)


def _one_input(source: Path, names: list[str]) -> None:
    if len(names) != 1:
        raise ConfigError(f"{source}: the model has {len(names)} inputs ({', '.join(names) or 'none'}); "
                          "hwnas measures models with exactly one input tensor")


# -- ONNX ---------------------------------------------------------------------------------------

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


def onnx_facts(data: bytes, source: Path) -> ModelFacts:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{source}: not a valid ONNX model (truncated or another kind of file: {first})") from None
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    notes: list[str] = []

    def spec(v, fixed: bool) -> TensorSpec:
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        shape = _fixed_shape(source, v.name, dims, notes) if fixed else tuple(d if isinstance(d, int) else 1
                                                                             for d in dims)
        return TensorSpec(v.name, shape, _ONNX_DTYPES.get(tt.elem_type, f"onnx type {tt.elem_type}"))

    real_inputs = [v for v in graph.input if v.name not in initializers]
    _one_input(source, [v.name for v in real_inputs])
    inputs = [spec(real_inputs[0], True)]
    # shapes of every tensor, with the input fixed as above
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dim = fixed.graph.input[[v.name for v in fixed.graph.input].index(inputs[0].name)].type.tensor_type.shape.dim
    for d, n in zip(dim, inputs[0].shape, strict=True):
        d.dim_value = n
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds
        raise ConfigError(f"{source}: ONNX shape inference failed: {exc}") from None
    shapes: dict[str, tuple[int, ...]] = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(d.dim_value for d in dims)
    for name, t in initializers.items():
        shapes[name] = tuple(t.dims)
    outputs = [TensorSpec(v.name, shapes.get(v.name, ()), spec(v, False).dtype) for v in graph.output]

    layers = []
    for node in graph.node:
        out = shapes.get(node.output[0], ()) if node.output else ()
        weights = [i for i in node.input if i in initializers]
        params = sum(math.prod(initializers[w].dims) for w in weights
                     if initializers[w].data_type in (1, 3, 10, 11) or node.op_type in ("Conv", "Gemm", "MatMul"))
        layers.append(Layer(node.op_type, out, _onnx_macs(node, shapes, out), params, node.name))
    return ModelFacts(inputs, outputs, layers, _dtype(inputs, outputs), notes)


def _onnx_macs(node, shapes: dict, out: tuple[int, ...]) -> int:
    if not out:
        return 0
    if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
        w = shapes[node.input[1]]  # (Cout, Cin / groups, kh, kw)
        return math.prod(out) * math.prod(w[1:])
    if node.op_type in ("Gemm", "MatMul") and node.input[0] in shapes:
        a = shapes[node.input[0]]
        transposed = node.op_type == "Gemm" and any(att.name == "transA" and att.i for att in node.attribute)
        k = a[-2] if transposed else a[-1]
        return math.prod(out) * k
    if node.op_type == "ConvTranspose" and len(node.input) > 1 and node.input[0] in shapes \
            and node.input[1] in shapes:
        return math.prod(shapes[node.input[0]]) * math.prod(shapes[node.input[1]][1:])
    return 0


# -- TFLite -------------------------------------------------------------------------------------

_TFLITE_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 9: "int8", 7: "int16"}


@lru_cache(maxsize=1)
def _tflite_op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}


def tflite_op_name(model, op) -> str:
    """The builtin name ("CONV_2D") of operator `op` of a TFLite `model` (flatbuffer object API);
    the larger of the two code fields holds it (codes past 127 live only in `builtinCode`)."""
    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _tflite_op_names().get(number, f"op {number}")


def tflite_facts(data: bytes, source: Path) -> ModelFacts:
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConfigError(f"{source}: not a TFLite model (no TFL3 identifier; truncated or another kind of file)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        graph = model.subgraphs[0]
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer fails in many ways
        raise ConfigError(f"{source}: a damaged TFLite model ({type(exc).__name__}: {exc})") from None
    if len(model.subgraphs) != 1:
        raise ConfigError(f"{source}: {len(model.subgraphs)} subgraphs; hwnas measures single-subgraph models")
    notes: list[str] = []

    def tname(i: int) -> str:
        name = graph.tensors[i].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def spec(i: int, fixed: bool) -> TensorSpec:
        t = graph.tensors[i]
        dims = [int(d) for d in (t.shapeSignature if t.shapeSignature is not None else t.shape)]
        shape = _fixed_shape(source, tname(i), dims, notes) if fixed else tuple(int(d) for d in t.shape)
        q = t.quantization
        quant = (float(q.scale[0]), int(q.zeroPoint[0])) if q is not None and q.scale is not None and len(q.scale) \
            else None
        return TensorSpec(tname(i), shape, _TFLITE_DTYPES.get(t.type, f"tflite type {t.type}"), quant)

    _one_input(source, [tname(int(i)) for i in graph.inputs])
    inputs = [spec(int(graph.inputs[0]), True)]
    outputs = [spec(int(i), False) for i in graph.outputs]

    def const(i: int) -> bool:
        return i >= 0 and model.buffers[graph.tensors[i].buffer].data is not None or (
            i >= 0 and model.buffers[graph.tensors[i].buffer].offset > 1)

    layers = []
    for op in graph.operators:
        name = tflite_op_name(model, op)
        ins, outs = [int(i) for i in op.inputs], [int(o) for o in op.outputs]
        out = tuple(int(d) for d in graph.tensors[outs[0]].shape) if outs else ()
        weights = [i for i in ins[1:] if const(i)] if name in _WEIGHTED else []
        params = sum(math.prod(int(d) for d in graph.tensors[i].shape) for i in weights)
        macs = 0
        if out and len(ins) > 1 and ins[1] >= 0:
            w = tuple(int(d) for d in graph.tensors[ins[1]].shape)
            if name == "CONV_2D":  # filter (Cout, kh, kw, Cin)
                macs = math.prod(out) * math.prod(w[1:])
            elif name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, Cout)
                macs = math.prod(out) * w[1] * w[2]
            elif name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
                macs = math.prod(out) * w[-1] if name == "FULLY_CONNECTED" else math.prod(out) * w[-2]
            elif name == "TRANSPOSE_CONV" and len(ins) > 2:
                w = tuple(int(d) for d in graph.tensors[ins[1]].shape)  # (Cout, kh, kw, Cin)
                macs = math.prod(int(d) for d in graph.tensors[ins[2]].shape) * math.prod(w[:3])
        layers.append(Layer(name, out, macs, params, tname(outs[0]) if outs else ""))
    dtype = _dtype(inputs, outputs)
    if dtype == "float32" and len(layers) > 1 and layers[0].op == "QUANTIZE" and layers[-1].op == "DEQUANTIZE":
        dtype = "int8"  # TensorFlow's converter keeps float input and output by default
        notes.append("float input and output around a full-integer int8 graph: the int8 firmware takes and gives "
                     "the int8 tensors inside (the QUANTIZE and DEQUANTIZE at its ends are the host's)")
    return ModelFacts(inputs, outputs, layers, dtype, notes)


_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


# -- torch.export -------------------------------------------------------------------------------

def program_facts(program, source: Path) -> ModelFacts:
    """Facts of a `torch.export` program (its placeholders' fake tensors carry every shape)."""
    import torch

    sig = program.graph_signature
    user = list(sig.user_inputs)
    _one_input(source, [str(u) for u in user])
    nodes = {n.name: n for n in program.graph.nodes}
    x = nodes[user[0]].meta.get("val")
    if x is None or not all(isinstance(d, int) for d in x.shape):
        raise ConfigError(f"{source}: the program's input has no fixed shape; export it with a fixed example input")
    inputs = [TensorSpec("input", tuple(int(d) for d in x.shape), str(x.dtype).replace("torch.", ""))]
    state = program.state_dict
    weights = dict(sig.inputs_to_parameters)  # what training would change (BatchNorm's scale and shift too)
    layers = []
    out_specs = []
    for node in program.graph.nodes:
        if node.op == "output":
            for i, o in enumerate(node.args[0]):
                val = getattr(o, "meta", {}).get("val")
                out_specs.append(TensorSpec(f"output{i}" if i else "output", tuple(int(d) for d in val.shape),
                                            str(val.dtype).replace("torch.", "")))
            continue
        if node.op != "call_function":
            continue
        val = node.meta.get("val")
        out = tuple(int(d) for d in val.shape) if isinstance(val, torch.Tensor) else ()
        target = str(node.target).replace("aten.", "").split(".")[0]
        params, macs = 0, 0
        args = [a for a in node.args if hasattr(a, "name")]
        for a in args:
            w = weights.get(a.name)
            if w in state:
                params += state[w].numel()
        if out and len(args) > 1:
            wv = args[1].meta.get("val")
            if target in ("conv2d", "convolution", "conv1d") and wv is not None:
                macs = math.prod(out) * math.prod(int(d) for d in wv.shape[1:])
            elif target == "linear" and wv is not None:
                macs = math.prod(out) * int(wv.shape[-1])
            elif target in ("mm", "matmul", "addmm", "bmm"):
                a = (args[1] if target == "addmm" else args[0]).meta.get("val")
                if a is not None:
                    macs = math.prod(out) * int(a.shape[-1])
        layers.append(Layer(target, out, macs, params, node.name))
    return ModelFacts(inputs, out_specs, layers, _dtype(inputs, out_specs))


def _dtype(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    return "int8" if inputs and inputs[0].dtype == "int8" and all(o.dtype == "int8" for o in outputs) else "float32"


def random_input(spec: TensorSpec, seed: int = 0) -> np.ndarray:
    """A reproducible float input of `spec`'s shape (the host runners quantise an int8 model's)."""
    return np.random.default_rng(seed).standard_normal(spec.shape).astype(np.float32)
