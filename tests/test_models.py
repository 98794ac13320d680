"""Your own model: the four tinyML reference networks of the zoo (hwnas_deploy/models/zoo.py) and
a TFLite model made outside hwnas, read, exported, measured from the CLI and stored by content."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hwnas_deploy.errors import ConfigError, ExportError
from hwnas_deploy.graphs import tflite_facts
from hwnas_deploy.models import load_model
from hwnas_deploy.store import Store
from tests.conftest import REPO, private_adb_server, run_cli

#: FACTS.md: the MLPerf Tiny reference networks' MACs, 2.657 M, 7.490 M, 12.50 M and 0.264 M
ZOO_MACS = {"ds-cnn": 2_656_768, "mobilenet-v1-0.25": 7_489_664, "resnet8": 12_501_632, "fc-autoencoder": 264_192}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Each zoo network as the files a user brings: ONNX and full-integer int8 TFLite."""
    out = tmp_path_factory.mktemp("zoo")
    files = {}
    for name in ZOO_MACS:
        model = load_model(f"zoo:{name}")
        files[name] = {fmt: model.export(fmt, out).path for fmt in ("onnx", "tflite-int8")}
    return files


def test_every_format_counts_the_published_macs(zoo):
    for name, macs in ZOO_MACS.items():
        assert load_model(f"zoo:{name}").macs == macs, name  # from the torch.export graph
        onnx, int8 = load_model(zoo[name]["onnx"]), load_model(zoo[name]["tflite-int8"])
        assert (onnx.kind, int8.kind) == ("onnx", "tflite-int8")
        assert (onnx.macs, int8.macs) == (macs, macs), name


def test_the_int8_zoo_becomes_blobs_bit_exact_with_litert(zoo, tmp_path):
    """A Conv2d with one input channel (DS-CNN's first layer, a depthwise conv with multiplier 64
    in TFLite) and a 2-D input (the autoencoder) were refused or crashed before."""
    for name, files in zoo.items():
        model = load_model(files["tflite-int8"])
        art = model.export("blob", tmp_path)
        assert art.extra["max_lsb_vs_litert_reference"] == 0, name  # README: bit-exact
        facts = tflite_facts(open(files["tflite-int8"], "rb").read(), files["tflite-int8"])
        # the file's quantisation is the blob's: nothing re-quantised
        assert art.inputs[0].quantization == pytest.approx(facts.inputs[0].quantization, rel=1e-7)
        assert art.outputs[0].quantization == pytest.approx(facts.outputs[0].quantization, rel=1e-7)


def with_float_io(int8_tflite: Path, out: Path) -> Path:
    """The int8 model with float input and output, as TensorFlow's converter writes a full-integer
    model by default: a QUANTIZE before its graph, a DEQUANTIZE after it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = int8_tflite.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    for b in model.buffers:  # constants stored after the flatbuffer: inline them, the file is rebuilt
        if b.data is None and b.offset > 1:
            b.data, b.offset, b.size = list(data[b.offset : b.offset + b.size]), 0, 0
    g = model.subgraphs[0]
    first, last = int(g.inputs[0]), int(g.outputs[0])
    codes = []
    for op in ("QUANTIZE", "DEQUANTIZE"):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = getattr(schema.BuiltinOperator, op)
        code.version = 1
        codes.append(len(model.operatorCodes))
        model.operatorCodes.append(code)
    ends = []
    for source in (first, last):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = f"float_{source}".encode(), list(g.tensors[source].shape), 0, 0
        ends.append(len(g.tensors))
        g.tensors.append(t)
    quantize, dequantize = schema.OperatorT(), schema.OperatorT()
    quantize.opcodeIndex, quantize.inputs, quantize.outputs = codes[0], [ends[0]], [first]
    dequantize.opcodeIndex, dequantize.inputs, dequantize.outputs = codes[1], [last], [ends[1]]
    g.operators = [quantize, *g.operators, dequantize]
    g.inputs, g.outputs = [ends[0]], [ends[1]]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


def test_an_int8_model_with_float_input_and_output_reaches_the_firmware(zoo, tmp_path):
    """TensorFlow's converter keeps float input and output around a full-integer graph unless
    told otherwise: such a file is an int8 model (the user is told), its blob takes and gives the
    int8 tensors inside, bit-exact with LiteRT running the whole file, quantisation unchanged."""
    for name in ("fc-autoencoder", "ds-cnn"):
        wrapped = with_float_io(Path(zoo[name]["tflite-int8"]), tmp_path / f"{name}.float-io.tflite")
        model = load_model(wrapped)
        assert model.kind == "tflite-int8" and model.input.dtype == "float32"
        assert any("float input and output around a full-integer int8 graph" in n for n in model.notes("blob"))
        art = model.export("blob", tmp_path / name)
        assert art.extra["max_lsb_vs_litert_reference"] == 0, name
        plain = load_model(zoo[name]["tflite-int8"]).export("blob", tmp_path / f"{name}-plain")
        assert art.extra["ops"] == plain.extra["ops"]  # nothing of the two ends on the board
        assert art.inputs[0].quantization == plain.inputs[0].quantization
        from hwnas_deploy.export import compare_blob_with_litert

        assert [compare_blob_with_litert(art.path, wrapped, seed=s) for s in (1, 2)] == [0, 0]


def test_a_litert_int8_model_from_outside_keeps_its_quantisation_on_the_board(tmp_path):
    """Made by the LiteRT converter and quantizer directly (channels-last input, as a TensorFlow
    model takes it), deployed on the Cortex-M7 twin with its own weights: the board's output
    equals the host kernels' (the driver checks it) and these equal LiteRT's reference kernels
    (the export checks it), with every scale and zero point as the file has them."""
    from ai_edge_litert import schema_py_generated as schema

    tfl = tmp_path / "direct.tflite"
    made = subprocess.run([str(REPO / ".venv-litert/bin/python"), str(REPO / "tests/litert_direct.py"), str(tfl)],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    model = load_model(tfl)
    assert model.kind == "tflite-int8" and model.input.shape == (1, 24, 24, 3)  # NHWC: no transpose to drop
    blob = model.export("blob", tmp_path / "a")
    assert blob.extra["max_lsb_vs_litert_reference"] == 0
    assert blob.extra["ops"][-1] == "SOFTMAX"  # the classifier's softmax, as a TensorFlow pipeline ends
    # nothing re-quantised: every int8 weight tensor of the blob holds bytes of the file, and every
    # int8 activation of the blob has a scale and zero point of one of the file's tensors
    from hwnas_deploy.mcu.blob import CONST, HEADER, INT8, INT8_Q15, TENSOR, pack_q15

    data = open(blob.path, "rb").read()
    fields = HEADER.unpack_from(data)
    rows = [TENSOR.unpack_from(data, fields[10] + i * TENSOR.size) for i in range(fields[5])]
    model_t = schema.ModelT.InitFromPackedBuf(tfl.read_bytes(), 0)
    buffers = [bytes(b.data) for b in model_t.buffers if b.data is not None]
    quants = {(np.float32(t.quantization.scale[0]), int(t.quantization.zeroPoint[0]))
              for t in model_t.subgraphs[0].tensors if t.quantization is not None and t.quantization.scale is not None}
    weights = [r for r in rows if r[5] == CONST and r[4] in (INT8, INT8_Q15)]
    acts = [r for r in rows if r[5] != CONST and r[4] == INT8]
    assert len(weights) == 4 and len(acts) >= 5
    for d0, d1, d2, d3, dtype, _, _, offset, _, _ in weights:
        start, n = fields[12] + offset, d0 * d1 * d2 * d3
        if dtype == INT8_Q15:  # stored unpacked for the Cortex-M7 loop (blob v2): the same int8 values
            stored = pack_q15(np.frombuffer(data[start:start + 2 * n], "<i2").reshape(d0, -1)).tobytes()
        else:
            stored = data[start:start + n]
        assert stored in buffers
    assert {(np.float32(r[8]), r[9]) for r in acts} <= quants

    out = run_cli("deploy", "--model", str(tfl), "--device", "qemu-m7", "--db", "s.sqlite", "--quiet", cwd=tmp_path,
                  timeout=600, check=True).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("direct ")]
    assert "bit-exact" in line and model.config_hash in line
    with Store(str(tmp_path / "s.sqlite")) as s:
        (row,) = s.measurements(device="qemu-m7", space="model")
    assert row["config_hash"] == model.config_hash and row["config"]["sha256"] == model.sha256
    assert row["details"]["weights"] == "real"
    assert row["details"]["output_check"]["identical_to_host_kernels"] is True


def test_every_zoo_network_from_the_cli_on_the_board_the_cpu_and_the_phone(zoo, tmp_path):
    int8 = [a for f in zoo.values() for a in ("--model", f["tflite-int8"])]
    onnx = [a for f in zoo.values() for a in ("--model", f["onnx"])]
    runs = [("qemu-m7", "firmware", int8), ("local-cpu", "onnxruntime", onnx), ("local-cpu", "tflite-int8", int8),
            ("sim-android", "tflite-int8", int8)]
    (tmp_path / "home").mkdir()
    with private_adb_server(tmp_path / "home"):
        for device, runtime, models in runs:
            out = run_cli("profile", *models, "--device", device, "--runtime", runtime, "--db", "s.sqlite",
                          "--quiet", cwd=tmp_path, timeout=900)
            assert out.returncode == 0, (device, runtime, out.stderr[-3000:])
            assert "measured 4, already stored 0, failed 0 of 4" in out.stdout, out.stdout
    again = run_cli("profile", *int8, "--device", "local-cpu", "--runtime", "tflite-int8", "--db", "s.sqlite",
                    "--quiet", cwd=tmp_path, check=True).stdout
    assert "measured 0, already stored 4" in again  # stored by content: resumable, skipped
    listed = json.loads(run_cli("show", "--models", "--db", "s.sqlite", "--json", cwd=tmp_path, check=True).stdout)
    assert len(listed) == 4 * 4
    for row in listed:
        assert row["macs"] == ZOO_MACS[row["model"]] and row["median_ms"] > 0
        if row["device"] == "qemu-m7":
            d = row["details"]
            assert d["count_unit"] == "instructions" and d["weights"] == "generated"
            # the per-layer counts add up to the whole network (the layers' timers bracket each layer)
            assert sum(d["layer_counts"]) == pytest.approx(float(np.median(d["counts"])), rel=0.01)
            assert sum(d["layer_macs"]) == ZOO_MACS[row["model"]]
    shown = run_cli("show", "--layers", "ds-cnn", "--device", "qemu-m7", "--db", "s.sqlite", "--json", "--plot",
                    "ds.png", "--html", "ds.html", cwd=tmp_path, check=True)
    layers = json.loads(shown.stdout)
    assert [r["op"] for r in layers][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"] and layers[-1]["op"] == "(outside the layers)"
    assert abs(layers[-1]["share_%"]) <= 1.0 and layers[-2]["cumulative_%"] == pytest.approx(100 - layers[-1]["share_%"])
    assert sum(r["macs"] or 0 for r in layers) == ZOO_MACS["ds-cnn"]
    first = layers[0]  # the 10x4 conv over one channel: its instructions per MAC as the table says
    assert first["instructions_per_mac"] == pytest.approx(first["instructions"] / first["macs"], rel=1e-3)
    assert (tmp_path / "ds.png").stat().st_size > 10_000 and "instructions_per_mac" in (tmp_path / "ds.html").read_text()


def test_bad_model_files_say_what_is_wrong(tmp_path, zoo):
    (tmp_path / "x.onnx").write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match=r"x\.onnx: not a valid ONNX model"):
        load_model(tmp_path / "x.onnx")
    data = open(zoo["resnet8"]["tflite-int8"], "rb").read()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
    with pytest.raises(ConfigError, match=r"cut\.tflite: "):
        load_model(tmp_path / "cut.tflite")
    (tmp_path / "notflite.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=r"notflite\.tflite: not a TFLite model"):
        load_model(tmp_path / "notflite.tflite")
    import onnx

    dynamic = onnx.load(zoo["resnet8"]["onnx"])
    dims = dynamic.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param = "batch", "height"
    onnx.save(dynamic, tmp_path / "dyn.onnx")
    with pytest.raises(ConfigError, match=r"dyn\.onnx: tensor 'input' has a dynamic dimension 2 \('height'\)"):
        load_model(tmp_path / "dyn.onnx")
    dims[2].dim_value = 32  # a dynamic batch alone is taken as 1, and the user is told
    onnx.save(dynamic, tmp_path / "batch.onnx")
    assert load_model(tmp_path / "batch.onnx").notes("onnx") == [
        f"{tmp_path / 'batch.onnx'}: input 'input': dynamic batch dimension taken as 1"]
    with pytest.raises(ConfigError, match=r"--model nothing\.onnx: no such file"):
        load_model("nothing.onnx")
    with pytest.raises(ConfigError, match=r"give a \.onnx, \.tflite or \.pt2 file"):
        load_model(tmp_path / "model.h5")
    onnx = load_model(zoo["ds-cnn"]["onnx"])
    with pytest.raises(ExportError, match=r"cannot be exported to 'blob': an ONNX file reaches onnxruntime and TVM"):
        onnx.export("blob", tmp_path)
    bad = run_cli("profile", "--model", zoo["ds-cnn"]["onnx"], "--device", "qemu-m7", "--runtime", "firmware",
                  "--db", "s.sqlite", cwd=tmp_path)
    assert bad.returncode == 2 and "cannot be exported to 'blob'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_model_module_file_and_calibration(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),\n"
        "                              torch.nn.Linear(4 * 6 * 6, 3))\n"
        "    return net, torch.randn(1, 2, 8, 8)\n")
    model = load_model(f"{tmp_path}/net.py:build")
    assert model.kind == "torch" and model.macs == 4 * 6 * 6 * 2 * 9 + 144 * 3
    assert model.params == 4 * 2 * 9 + 4 + 144 * 3 + 3
    assert load_model(f"{tmp_path}/net.py:build").config_hash == model.config_hash  # reproducible by content
    assert any("quantised on random inputs" in n for n in model.notes("tflite-int8"))
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((4, 2, 8, 8)).astype(np.float32))
    calibrated = load_model(f"{tmp_path}/net.py:build", tmp_path / "calib.npy")
    assert calibrated.config_hash != model.config_hash and not calibrated.notes("tflite-int8")
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"samples of shape \[3, 8, 8\], the model's input is \[1, 2, 8, 8\]"):
        load_model(f"{tmp_path}/net.py:build", tmp_path / "wrong.npy")
    with pytest.raises(ConfigError, match=r"has no function 'nope'"):
        load_model(f"{tmp_path}/net.py:nope")
    out = run_cli("export", "--model", f"{tmp_path}/net.py:build", "--format", "onnx,tvm", "--out", "x",
                  cwd=tmp_path, check=True).stdout
    arts = [json.loads(line) for line in out.splitlines()]
    assert [a["format"] for a in arts] == ["onnx", "tvm"] and all(a["max_abs_error"] < 1e-4 for a in arts)


def test_analyze_without_a_board_names_what_does_not_fit(zoo):
    from hwnas_deploy.analysis import analyze
    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.devices.profile import parse_profile

    model = load_model(zoo["mobilenet-v1-0.25"]["tflite-int8"])
    a = analyze(model, "qemu-m7")
    assert a.fits and a.format == "blob" and a.macs == ZOO_MACS["mobilenet-v1-0.25"]
    assert sum(r["macs"] for r in a.layers) == a.macs and a.peak_sram_bytes >= max(r["arena_live_bytes"]
                                                                                    for r in a.layers)
    # TFLite Micro's greedy-by-size plan leaves a 9 KiB hole here; ours reaches the largest live set
    assert (a.peak_sram_bytes, a.tflm_greedy_sram_bytes, a.live_sram_bytes) == (55_296, 64_512, 55_296)
    assert "(TFLite Micro's greedy plan: 64,512 B; largest live set 55,296 B)" in a.summary()
    data = load_profile("qemu-m7").to_dict()
    data["hardware"] = {**data["hardware"], "sram_bytes": 40_000, "flash_bytes": 200_000}
    small = analyze(model, parse_profile(data, "small.yaml"))
    assert not small.fits and len(small.reasons) == 2
    peak = small.layers[small.peak_layer]
    assert f"SRAM: the arena needs {a.peak_sram_bytes:,} B > 40,000 B (at layer {peak['layer']}" in small.reasons[0]
    # what the board would get: every unpacked weight handed back to int8 (blob v1), still too big
    assert a.unpacked_layers == 11 and small.unpacked_layers == 0 and small.flash_bytes < a.flash_bytes
    assert "flash 344,240 B of 1,048,576 (11 convolutions' weights unpacked)" in a.summary()  # 336.2 KiB, BENCHMARKS
    assert small.reasons[1].startswith(f"flash: the model needs {small.flash_bytes:,} B > 200,000 B")
    # a budget between the two: as many unpacked layers as fit, and it fits
    data["hardware"]["sram_bytes"], data["hardware"]["flash_bytes"] = 60_000, (small.flash_bytes + a.flash_bytes) // 2
    mid = analyze(model, parse_profile(data, "mid.yaml"))
    assert mid.fits and 0 < mid.unpacked_layers < 11 and small.flash_bytes < mid.flash_bytes <= data["hardware"][
        "flash_bytes"]


def test_per_layer_times_on_the_cpu_from_onnxruntimes_profiler(zoo, tmp_path):
    run_cli("profile", "--model", zoo["resnet8"]["onnx"], "--device", "local-cpu", "--runtime", "onnxruntime",
            "--layers", "--db", "s.sqlite", "--quiet", cwd=tmp_path, check=True)
    layers = json.loads(run_cli("show", "--layers", "resnet8", "--db", "s.sqlite", "--json", cwd=tmp_path,
                                check=True).stdout)
    convs = [r for r in layers if r["op"] == "Conv"]
    assert len(convs) == 9 and convs[0]["output"] == "1x16x32x32"  # fused with their ReLUs and ADDs
    assert sum(r["macs"] or 0 for r in layers) == ZOO_MACS["resnet8"]  # from the profiler's shapes
    rest = layers[-1]
    assert rest["op"] == "(outside the layers)" and 0 <= rest["share_%"] < 50  # the executor between nodes
    with pytest.raises(ConfigError, match=r"--layers: rpc-local \(tvm-rpc\) gives no per-layer times"):
        from hwnas_deploy.devices import load_profile
        from hwnas_deploy.devices.profile import with_layer_timing

        with_layer_timing(load_profile("rpc-local"))


def test_a_float_tflite_model_reaches_the_float_firmware(tmp_path):
    """DS-CNN as a float TFLite file: its one-channel first convolution (LiteRT's depthwise with
    multiplier 64) runs as a convolution in the float kernels too, within 1e-4 of LiteRT."""
    path = load_model("zoo:ds-cnn").export("tflite", tmp_path).path
    model = load_model(path)
    assert model.kind == "tflite" and model.formats == {"tflite", "blob-fp32"}
    art = model.export("blob-fp32", tmp_path / "fp32")
    assert art.max_abs_error is not None and art.max_abs_error <= 1e-4
    assert art.extra["ops"][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"] and sum(art.extra["op_macs"]) == ZOO_MACS["ds-cnn"]
    with pytest.raises(ExportError, match=r"a float TFLite file reaches LiteRT \(tflite\) and the float firmware"):
        model.export("blob", tmp_path)
