"""The direct float TFLite writer (export/tflite_direct.py) against litert-torch's conversion of
the same networks: the same operators, options, shapes, data flow and constants bit for bit, and
int8 blobs byte-identical once both are quantised by LiteRT's quantiser."""

from __future__ import annotations

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


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
def test_other_networks_give_byte_identical_int8_blobs(seed, tmp_path, monkeypatch):
    model, x = _network(seed)
    assert float_tflite(model, x) is not None
    direct = export_model(model, x, "blob", tmp_path / "direct.hwnb")
    monkeypatch.setenv("HWNAS_TFLITE_DIRECT", "0")
    assert export_model(model, x, "blob", tmp_path / "litert.hwnb").sha256 == direct.sha256


def test_anything_else_is_left_to_litert():
    ofa = get_space("ofa-mbv3-w1.0")
    cfg = ofa.sample(0)
    x = torch.randn(1, 3, 16, 16)
    assert float_tflite(ofa.build(cfg), ofa.example_input(cfg)) is None  # h-swish, squeeze-and-excitation
    assert float_tflite(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval(), x) is None  # no head
    model, x = _network(3)
    assert float_tflite(model.train(), x) is None
    assert float_tflite(model.eval(), torch.cat([x, x])) is None  # a batch of two
    dilated = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2)), model[-1])
    assert float_tflite(dilated.eval(), torch.randn(1, 3, 16, 16)) is None
