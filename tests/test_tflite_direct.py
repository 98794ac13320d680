"""The direct float TFLite writer (export/tflite_direct.py) against litert-torch's conversion of
the same networks: the same operators, options, shapes, data flow and constants bit for bit, and
int8 blobs byte-identical once both are quantised by LiteRT's quantiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwnas_deploy.export import export_model
from hwnas_deploy.export.tflite_direct import float_tflite
from hwnas_deploy.graphs import tflite_op_name
from hwnas_deploy.spaces import get_space


def _graph(buf: bytes) -> list[tuple]:
    """Everything of a one-subgraph TFLite model but its names: per operator its name, options,
    the producers of its inputs (operator index, 'in' for the graph input, the constant's bytes)
    and its output shapes; then the graph output's producer."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(buf, 0)
    (g,) = m.subgraphs
    made_by = {int(i): "in" for i in g.inputs}
    ops = []
    for k, op in enumerate(g.operators):
        opt = op.builtinOptions
        options = sorted(vars(opt).items()) if opt is not None else []
        inputs = []
        for i in op.inputs:
            i = int(i)
            if i < 0:
                inputs.append(None)
                continue
            t = g.tensors[i]
            data = m.buffers[t.buffer].data
            inputs.append(made_by[i] if data is None else (t.type, tuple(t.shape), bytes(data)))
        outputs = [tuple(g.tensors[int(i)].shape) for i in op.outputs]
        ops.append((tflite_op_name(m, op), repr(options), inputs, repr(outputs)))
        made_by.update({int(i): k for i in op.outputs})
    return ops + [[made_by[int(i)] for i in g.outputs]]


def _network(seed: int):
    space = get_space("mcu-mbnet")
    cfg = space.sample(seed)
    return space.build(cfg), space.example_input(cfg)


def test_the_float_graph_is_litert_torchs_and_the_int8_blob_byte_identical(tmp_path, monkeypatch):
    """An mcu-mbnet network at r=80 (stride-2 convolutions on even inputs take an explicit PAD,
    on odd ones TFLite's SAME; residual ADDs; a block without expansion layer; the head's zero
    bias left out)."""
    model, x = _network(3)
    direct = float_tflite(model, x)
    assert direct is not None
    direct_blob = export_model(model, x, "blob", tmp_path / "direct.hwnb")
    direct_float = export_model(model, x, "tflite", tmp_path / "direct.tflite")
    monkeypatch.setenv("HWNAS_TFLITE_DIRECT", "0")
    litert_float = export_model(model, x, "tflite", tmp_path / "litert.tflite")
    litert_blob = export_model(model, x, "blob", tmp_path / "litert.hwnb")

    ours, theirs = _graph(direct), _graph((tmp_path / "litert.tflite").read_bytes())
    names = [op[0] for op in theirs[:-1]]
    assert {"PAD", "ADD", "MEAN", "FULLY_CONNECTED"} <= set(names) and len(ours) == len(theirs) == 71
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"operator {k} ({names[k] if k < len(names) else 'output'}) differs"
    assert (tmp_path / "direct.tflite").read_bytes() == direct
    assert direct_float.max_abs_error <= 1e-4 and direct_float.max_abs_error == litert_float.max_abs_error
    assert direct_blob.sha256 == litert_blob.sha256
    assert direct_blob.extra["max_lsb_vs_litert_reference"] == 0


def _int8_ops(path) -> list[tuple]:
    """Per operator of a quantised model: its name and, for each input and output, the shape,
    type, stored bytes and quantisation."""
    from hwnas_deploy.mcu.blob import _Graph

    g = _Graph(path.read_bytes())

    def tensor(i: int):
        if i < 0:
            return None
        t, q, data = g.g.tensors[i], g.g.tensors[i].quantization, g.stored(i)
        quant = None if q is None or q.scale is None else (list(q.scale), list(q.zeroPoint))
        return tuple(t.shape), t.type, None if data is None else bytes(data), repr(quant)

    return [(g.op_name(op), [tensor(int(i)) for i in [*op.inputs, *op.outputs]]) for op in g.g.operators]


@pytest.mark.slow
def test_an_ofa_network_gives_litert_torchs_int8_model(tmp_path, monkeypatch):
    """OFA MobileNetV3: h-swish, squeeze-and-excitation (its hard sigmoid), the head's hidden
    1x1 convolution; equal constants shared as LiteRT shares them."""
    from ai_edge_litert.interpreter import Interpreter

    space = get_space("ofa-mbv3-w1.0")
    cfg = space.sample(0)
    model, x = space.build(cfg), space.example_input(cfg)
    assert float_tflite(model, x) is not None
    calib = torch.randn(4, *x.shape[1:]).numpy()
    export_model(model, x, "tflite-int8", tmp_path / "direct.tflite", calibration=calib)
    monkeypatch.setenv("HWNAS_TFLITE_DIRECT", "0")
    export_model(model, x, "tflite-int8", tmp_path / "litert.tflite", calibration=calib)
    ours, theirs = _int8_ops(tmp_path / "direct.tflite"), _int8_ops(tmp_path / "litert.tflite")
    assert {"HARD_SWISH", "MUL", "MEAN", "FULLY_CONNECTED"} <= {name for name, _ in theirs}
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"operator {k} ({b[0]}) differs"
    outputs = []
    for name in ("direct", "litert"):
        it = Interpreter(model_path=str(tmp_path / f"{name}.tflite"))
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.random.default_rng(0).integers(-128, 128, d["shape"]).astype(np.int8))
        it.invoke()
        outputs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert np.array_equal(*outputs)


def test_anything_else_is_left_to_litert():
    x = torch.randn(1, 3, 16, 16)
    blox = get_space("blox-mini")
    cfg = blox.sample(0)
    assert float_tflite(blox.build(cfg), blox.example_input(cfg)) is None  # BLOX cells
    assert float_tflite(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval(), x) is None  # no head
    model, x = _network(3)
    assert float_tflite(model.train(), x) is None
    assert float_tflite(model.eval(), torch.cat([x, x])) is None  # a batch of two
    c = model[-1].fc.in_features

    def one_conv(*layers):
        return nn.Sequential(nn.Sequential(*layers), model[-1]).eval()

    assert float_tflite(one_conv(nn.Conv2d(3, c, 3, padding=1), nn.ReLU()), x) is not None  # the control
    assert float_tflite(one_conv(nn.Conv2d(3, c, 3, padding=2, dilation=2), nn.ReLU()), x) is None
    assert float_tflite(one_conv(nn.Conv2d(3, c, 3, padding=1), nn.SiLU()), x) is None  # not dropped
    grouped = [nn.Conv2d(3, c, 1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU6()]
    assert float_tflite(one_conv(*grouped), x) is not None  # depthwise
    grouped[2] = nn.Conv2d(c, c, 3, padding=1, groups=2)
    assert float_tflite(one_conv(*grouped), x) is None
