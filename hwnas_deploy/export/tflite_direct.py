"""A float32 TFLite model written straight from a network of the spaces' blocks, in ~0.1 s.

litert-torch takes ~11 s of one core per network (torch.export, three decompositions, MLIR),
which made the LiteRT conversion most of a measurement on an MCU twin. For the layers our
MobileNet-style spaces are made of (spaces/blocks.py: convolution + BatchNorm +
ReLU/ReLU6/h-swish, inverted residuals with or without squeeze-and-excitation, the pooled head)
the graph LiteRT makes is small and regular, so it is written here operator for operator as
LiteRT writes it: the input's NCHW->NHWC TRANSPOSE,
BatchNorm folded into the convolution before it (a convolution without one gets a zero bias),
ReLU and ReLU6 fused, h-swish as HARD_SWISH, a convolution's padding as SAME where TFLite's SAME
pads as torch does and as an explicit PAD + VALID where it does not, a residual as ADD,
squeeze-and-excitation as MEAN, two convolutions (the hard sigmoid's +3 folded into the second's
bias, ReLU6 fused) and two MULs, the head as MEAN + [CONV_2D] + FULLY_CONNECTED (a zero bias left
out). Quantisation to int8
stays with LiteRT's own quantiser (export/litert_worker.py), so an int8 model made from this
graph is LiteRT's int8 model of the same network (tests/test_tflite_direct.py compares both
operator by operator, blob by blob and output by output).

`float_tflite(model, example)` returns the model's bytes, or None for anything else (another
layer or activation, a dilated or grouped convolution, a batch of several): the caller converts
with LiteRT as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hwnas_deploy.spaces.blocks import ClassifierHeadModule, MBConv, SqueezeExcite

_NONE, _RELU, _RELU6 = 0, 1, 3  # TFLite fused activations
_SAME, _VALID = 0, 1
_HARD_SWISH = "HARD_SWISH"  # not fused: an operator of its own
_ACTIVATIONS = {nn.Identity: _NONE, nn.ReLU: _RELU, nn.ReLU6: _RELU6, nn.Hardswish: _HARD_SWISH}
#: builtin operator -> the version LiteRT's converter writes for these float operators
#: (FULLY_CONNECTED: 5 where it keeps the input's dimensions, 1 where it does not)
_OPERATORS = {"ADD": 1, "TRANSPOSE": 1, "PAD": 1, "CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "MEAN": 1,
              "MUL": 1, "HARD_SWISH": 1, "FULLY_CONNECTED": 5}


class _Unsupported(Exception):
    """A layer this writer does not know: LiteRT converts the model instead."""


class _Builder:
    """The model being written: tensors with their buffers, operators, operator codes."""

    def __init__(self):
        from ai_edge_litert import schema_py_generated as schema

        self.s = schema
        self.tensors: list = []
        self.buffers = [schema.BufferT()]  # buffer 0: the empty one every tensor without data uses
        self.operators: list = []
        self.codes: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.constants: dict[tuple, int] = {}

    def tensor(self, name: str, shape, dtype=np.float32, data: np.ndarray | None = None) -> int:
        """A new tensor; a constant equal to an earlier one (MEAN's axes, a zero bias) is that
        one, as in LiteRT's models (its converter folds equal constants into one)."""
        if data is not None:
            data = np.ascontiguousarray(data, dtype=dtype)
            key = (np.dtype(dtype).str, tuple(int(d) for d in shape), data.tobytes())
            if key in self.constants:
                return self.constants[key]
        t = self.s.TensorT()
        t.name = name.encode()
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = {np.float32: self.s.TensorType.FLOAT32, np.int32: self.s.TensorType.INT32}[dtype]
        t.buffer = 0
        if data is not None:
            b = self.s.BufferT()
            b.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
            self.constants[key] = len(self.tensors)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name: str, inputs: list[int], outputs: list[int], options_type=None, options=None,
           version: int | None = None) -> None:
        self.codes.setdefault(name, len(self.codes))
        self.versions[name] = version or _OPERATORS[name]
        o = self.s.OperatorT()
        o.opcodeIndex = self.codes[name]
        o.inputs, o.outputs = np.asarray(inputs, dtype=np.int32), np.asarray(outputs, dtype=np.int32)
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)

    def finish(self, graph_input: int, graph_output: int) -> bytes:
        import flatbuffers

        s = self.s
        g = s.SubGraphT()
        g.tensors, g.operators, g.name = self.tensors, self.operators, b"main"
        g.inputs, g.outputs = np.asarray([graph_input], np.int32), np.asarray([graph_output], np.int32)
        m = s.ModelT()
        m.version, m.description = 3, b"hwnas-deploy tflite_direct"
        m.subgraphs, m.buffers = [g], self.buffers
        m.operatorCodes = [None] * len(self.codes)
        for name, index in self.codes.items():
            code = s.OperatorCodeT()
            code.builtinCode = getattr(s.BuiltinOperator, name)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
            code.version = self.versions[name]
            m.operatorCodes[index] = code
        sig = s.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = b"serving_default", 0
        sig.inputs = [self._tensor_map(b"args_0", graph_input)]
        sig.outputs = [self._tensor_map(b"output_0", graph_output)]
        m.signatureDefs = [sig]
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _tensor_map(self, name: bytes, index: int):
        t = self.s.TensorMapT()
        t.name, t.tensorIndex = name, index
        return t


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray]:
    """The convolution's weight and bias with the BatchNorm after it folded in (float32)."""
    w = conv.weight.detach().numpy().astype(np.float32)
    b = (conv.bias.detach().numpy().astype(np.float32) if conv.bias is not None
         else np.zeros(w.shape[0], np.float32))
    if bn is None:
        return w, b
    var = bn.running_var.detach().numpy()
    scale = (bn.weight.detach().numpy() / np.sqrt(var + np.float32(bn.eps))).astype(np.float32)
    shift = (bn.bias.detach().numpy() - bn.running_mean.detach().numpy() * scale).astype(np.float32)
    return (w * scale[:, None, None, None]).astype(np.float32), (b * scale + shift).astype(np.float32)


class _Writer:
    def __init__(self):
        self.b = _Builder()
        self.s = self.b.s
        self.n = 0

    def name(self, what: str) -> str:
        self.n += 1
        return f"{what}_{self.n}"

    def shape(self, t: int) -> list[int]:
        return [int(d) for d in self.b.tensors[t].shape]

    def activation(self, y: int, act) -> int:
        """`act` after the operator that wrote `y`: fused already, or HARD_SWISH on its own."""
        if act != _HARD_SWISH:
            return y
        out = self.b.tensor(self.name("hard_swish"), self.shape(y))
        self.b.op("HARD_SWISH", [y], [out])
        return out

    def conv(self, x: int, conv: nn.Conv2d, bn, act, bias_add: float = 0.0) -> int:
        s = self.s
        if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise _Unsupported("convolution with dilation or non-zero padding mode")
        _, h, w, cin = self.shape(x)
        if cin != conv.in_channels:
            raise _Unsupported("channel counts that do not chain")
        cout = conv.out_channels
        depthwise = conv.groups == cin == cout and cin > 1
        if conv.groups != 1 and not depthwise:
            raise _Unsupported("grouped convolution")
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        padding = _VALID
        if ph or pw:
            # TFLite's SAME pads (total // 2) before: it is torch's padding where the totals agree
            th, tw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
            if (th, tw) == (2 * ph, 2 * pw) and (oh, ow) == (-(-h // sh), -(-w // sw)):
                padding = _SAME
            else:
                pads = np.asarray([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32)
                padded = self.b.tensor(self.name("pad"), [1, h + 2 * ph, w + 2 * pw, cin])
                self.b.op("PAD", [x, self.b.tensor(self.name("paddings"), [4, 2], np.int32, pads)], [padded])
                x = padded
        weight, bias = _folded(conv, bn)
        if bias_add:
            bias = (bias + np.float32(bias_add)).astype(np.float32)
        if depthwise:
            weight = weight.transpose(1, 2, 3, 0)  # [C, 1, KH, KW] -> [1, KH, KW, C]
        else:
            weight = weight.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        wt = self.b.tensor(self.name("weight"), weight.shape, np.float32, weight)
        bt = self.b.tensor(self.name("bias"), [cout], np.float32, bias)
        y = self.b.tensor(self.name("conv"), [1, oh, ow, cout])
        fused = _NONE if act == _HARD_SWISH else act
        if depthwise:
            opt = s.DepthwiseConv2DOptionsT()
            opt.padding, opt.strideH, opt.strideW, opt.depthMultiplier = padding, sh, sw, 1
            opt.fusedActivationFunction, opt.dilationHFactor, opt.dilationWFactor = fused, 1, 1
            self.b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], s.BuiltinOptions.DepthwiseConv2DOptions, opt)
        else:
            opt = s.Conv2DOptionsT()
            opt.padding, opt.strideH, opt.strideW = padding, sh, sw
            opt.fusedActivationFunction, opt.dilationHFactor, opt.dilationWFactor = fused, 1, 1
            self.b.op("CONV_2D", [x, wt, bt], [y], s.BuiltinOptions.Conv2DOptions, opt)
        return self.activation(y, act)

    def mean(self, x: int, keep_dims: bool) -> int:
        channels = self.shape(x)[3]
        pooled = self.b.tensor(self.name("mean"), [1, 1, 1, channels] if keep_dims else [1, channels])
        axes = self.b.tensor(self.name("axes"), [2], np.int32, np.asarray([1, 2], np.int32))
        opt = self.s.ReducerOptionsT()
        opt.keepDims = keep_dims
        self.b.op("MEAN", [x, axes], [pooled], self.s.BuiltinOptions.ReducerOptions, opt)
        return pooled

    def mul(self, a: int, b: int) -> int:
        y = self.b.tensor(self.name("mul"), self.shape(a))
        opt = self.s.MulOptionsT()
        opt.fusedActivationFunction = _NONE
        self.b.op("MUL", [a, b], [y], self.s.BuiltinOptions.MulOptions, opt)
        return y

    def squeeze_excite(self, x: int, se: SqueezeExcite) -> int:
        """x * relu6(expand(relu(reduce(mean(x)))) + 3) / 6, as LiteRT writes a hard sigmoid gate."""
        if type(se.relu) is not nn.ReLU or type(se.gate) is not nn.Hardsigmoid:
            raise _Unsupported("squeeze-and-excitation with other activations")
        y = self.conv(self.mean(x, keep_dims=True), se.reduce, None, _RELU)
        y = self.conv(y, se.expand, None, _RELU6, bias_add=3.0)
        sixth = self.b.tensor(self.name("sixth"), [], np.float32, np.asarray(1.0 / 6.0, np.float32))
        return self.mul(x, self.mul(y, sixth))

    def layers(self, x: int, modules: list[nn.Module]) -> int:
        """Conv2d [BatchNorm2d] [activation] runs, one fused operator each (h-swish: two), and
        squeeze-and-excitation."""
        i = 0
        while i < len(modules):
            conv = modules[i]
            i += 1
            if isinstance(conv, SqueezeExcite):
                x = self.squeeze_excite(x, conv)
                continue
            if type(conv) is not nn.Conv2d:
                raise _Unsupported(type(conv).__name__)
            bn = None
            if i < len(modules) and type(modules[i]) is nn.BatchNorm2d:
                bn, i = modules[i], i + 1
                if bn.training or not bn.track_running_stats or not bn.affine:
                    raise _Unsupported("BatchNorm2d outside eval mode")
            act = _NONE
            if i < len(modules) and type(modules[i]) in _ACTIVATIONS:
                act, i = _ACTIVATIONS[type(modules[i])], i + 1
            x = self.conv(x, conv, bn, act)
        return x

    def head(self, x: int, head: ClassifierHeadModule) -> int:
        s = self.s
        if type(head.fc) is not nn.Linear:
            raise _Unsupported("a head other than a linear classifier")
        hidden = not isinstance(head.mix, nn.Identity)
        x = self.mean(x, keep_dims=hidden)
        if hidden:  # the 1x1 convolution on the pooled map stays a CONV_2D (4-D into the classifier)
            x = self.layers(x, list(head.mix))
        if self.shape(x)[-1] != head.fc.in_features:
            raise _Unsupported("channel counts that do not chain")
        weight = head.fc.weight.detach().numpy().astype(np.float32)
        inputs = [x, self.b.tensor(self.name("fc_weight"), weight.shape, np.float32, weight)]
        bias = head.fc.bias.detach().numpy().astype(np.float32) if head.fc.bias is not None else None
        inputs.append(self.b.tensor(self.name("fc_bias"), bias.shape, np.float32, bias)
                      if bias is not None and np.any(bias) else -1)
        y = self.b.tensor(self.name("logits"), [1, head.fc.out_features])
        opt = s.FullyConnectedOptionsT()
        opt.fusedActivationFunction, opt.keepNumDims = _NONE, not hidden
        self.b.op("FULLY_CONNECTED", inputs, [y], s.BuiltinOptions.FullyConnectedOptions, opt,
                  version=5 if opt.keepNumDims else 1)
        return y

    def network(self, model: nn.Module, example: torch.Tensor) -> bytes:
        s = self.s
        if type(model) is not nn.Sequential or example.dim() != 4 or example.shape[0] != 1:
            raise _Unsupported("not a sequence of blocks on one NCHW image")
        _, c, h, w = (int(d) for d in example.shape)
        graph_input = self.b.tensor("serving_default_args_0", [1, c, h, w])
        perm = self.b.tensor(self.name("perm"), [4], np.int32, np.asarray([0, 2, 3, 1], np.int32))
        x = self.b.tensor(self.name("nhwc"), [1, h, w, c])
        self.b.op("TRANSPOSE", [graph_input, perm], [x])
        y = None
        blocks = list(model)
        for n, block in enumerate(blocks):
            if type(block) is ClassifierHeadModule:
                if n != len(blocks) - 1:
                    raise _Unsupported("a head before the last block")
                y = self.head(x, block)
            elif type(block) is MBConv:
                out = self.layers(x, list(block.body))
                if block.residual:
                    summed = self.b.tensor(self.name("add"), self.shape(out))
                    opt = s.AddOptionsT()
                    opt.fusedActivationFunction = _NONE
                    self.b.op("ADD", [x, out], [summed], s.BuiltinOptions.AddOptions, opt)
                    out = summed
                x = out
            elif type(block) is nn.Sequential:
                x = self.layers(x, list(block))
            else:
                raise _Unsupported(type(block).__name__)
        if y is None:
            raise _Unsupported("no classifier head")
        self.b.tensors[y].name = b"serving_default_output_0_output"
        return self.b.finish(graph_input, y)


def float_tflite(model: nn.Module, example: torch.Tensor) -> bytes | None:
    """The float32 TFLite model LiteRT's converter would make of `model`, or None where `model`
    holds a layer this writer does not know."""
    if model.training:
        return None
    try:
        return _Writer().network(model, example)
    except (_Unsupported, ImportError):  # ImportError: no ai-edge-litert here (the `litert` extra)
        return None
