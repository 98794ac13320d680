"""Parsing TFLite benchmark_model output: the lines FACTS.md quotes verbatim from a phone, the
older builds' unprefixed log, exponent-form numbers, op-profiling tables (laid out as TFLite's
stats_calculator prints them: a tab before each right-aligned field), and failures."""

from __future__ import annotations

import pytest

from hwnas_deploy.devices.benchmark_model import BenchmarkOutputError, parse

# verbatim, from ../shared/design/FACTS.md (a Cortex-A76 run of a large model)
FACTS_LOG = """\
INFO: STARTING!
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/model.tflite]
INFO: Loaded model /data/local/tmp/model.tflite
INFO: count=1 curr=1357602

INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""


def test_the_facts_lines_parse_with_exponent_numbers():
    r = parse(FACTS_LOG)
    assert r.runs.count == 50
    assert r.runs.avg == pytest.approx(1.24027e06)
    assert (r.runs.min, r.runs.max, r.runs.p5, r.runs.p95) == (1238588, 1252566, 1238753, 1247415)
    assert r.median_us == 1239807
    assert r.warmup is None  # "count=1 curr=..." has no statistics
    assert (r.init_us, r.first_us) == (5579, 1357602)
    assert r.warmup_avg_us == pytest.approx(1.3576e06)
    assert r.inference_avg_us == pytest.approx(1.24027e06)
    assert (r.memory_init_mb, r.memory_overall_mb) == (6.36328, 109.832)


OLD_LOG = """\
STARTING!
Min num runs: [100]
Num threads: [4]
Graph: [/data/local/tmp/mobilenet_quant.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/mobilenet_quant.tflite
Initialized session in 3.021ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=41 first=21538 curr=11905 min=11765 max=21538 avg=12238.6 std=1498

Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=100 first=11950 curr=11842 min=11712 max=13950 avg=11921.5 std=305

Inference timings in us: Init: 3021, First inference: 21538, Warmup (avg): 12238.6, Inference (avg): 11921.5
"""


def test_builds_without_prefix_and_percentiles_fall_back_to_the_average():
    r = parse(OLD_LOG)
    assert r.warmup.count == 41 and r.warmup.avg == pytest.approx(12238.6)
    assert r.runs.count == 100 and "median" not in r.runs.values
    assert r.median_us == pytest.approx(11921.5)
    assert r.memory_overall_mb is None


def _field(value, width: int) -> str:
    """TFLite's InitField: a tab, then the value right-aligned, fixed with 3 decimals."""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return "\t" + text.rjust(width)


def _run_order(title: str, rows: list[tuple], with_start: bool) -> str:
    head = [("[node type]", 24)] + ([("[start]", 17)] if with_start else []) + [
        ("[first]", 9), ("[avg ms]", 9), ("[%]", 8), ("[cdf%]", 8), ("[mem KB]", 10), ("[times called]", 9)]
    lines = [f"============================== {title} ==============================",
             "".join(_field(h, w) for h, w in head) + "\t[Name]"]
    cdf = 0.0
    total = sum(r[2] for r in rows)
    for node, first, avg, name in rows:
        pct = 100 * avg / total
        cdf += pct
        cells = [_field(node, 24)] + ([_field(0.0, 17)] if with_start else []) + [
            _field(first, 9), _field(avg, 9), _field(f"{pct:.3f}%", 8), _field(f"{cdf:.3f}%", 8),
            _field(0.0, 10), _field(1, 9)]
        lines.append("".join(cells) + f"\t[{name}]")
    return "\n".join(lines) + "\n"


ROWS = [("CONV_2D", 0.412, 0.398, "model/conv1;Relu6"), ("DEPTHWISE_CONV_2D", 0.201, 0.187, "model/dw1"),
        ("CONV_2D", 0.298, 0.301, "model/pw1"), ("MEAN", 0.020, 0.018, "model/pool"),
        ("FULLY_CONNECTED", 0.011, 0.009, "model/fc")]


@pytest.mark.parametrize("with_start", [False, True])
def test_op_profiling_tables_are_read_by_header_and_the_regular_runs_win(with_start):
    init_table = _run_order("Run Order", [("ModifyGraphWithDelegate", 0.403, 0.403, "ModifyGraphWithDelegate/0")],
                            with_start)
    runs_table = _run_order("Run Order", ROWS, with_start)
    by_type = "\n".join([
        "============================== Summary by node type ==============================",
        _field("[Node type]", 24) + _field("[count]", 9) + _field("[avg ms]", 10) + _field("[avg %]", 11)
        + _field("[cdf %]", 11) + _field("[mem KB]", 10) + _field("[times called]", 10),
        _field("CONV_2D", 24) + _field(2, 9) + _field(0.699, 10) + _field("76.393%", 11) + _field("76.393%", 11)
        + _field(0.0, 10) + _field(2, 10),
        _field("DEPTHWISE_CONV_2D", 24) + _field(1, 9) + _field(0.187, 10) + _field("20.437%", 11)
        + _field("96.831%", 11) + _field(0.0, 10) + _field(1, 10),
    ]) + "\n"
    text = (FACTS_LOG + "Profiling Info for Benchmark Initialization:\n" + init_table + "\n"
            + "Operator-wise Profiling Info for Regular Benchmark Runs:\n" + runs_table + "\n" + by_type
            + "\nTimings (microseconds): count=50 first=942 curr=913 min=905 max=1001 avg=915.3 std=12\n"
            + "Memory (bytes): count=0\n5 nodes observed\n")
    r = parse(text)
    assert r.runs.count == 50  # the op-profiling "Timings" line is not a benchmark stats line
    order = r.tables["Run Order"]
    assert [row["node type"] for row in order] == [n for n, *_ in ROWS]
    assert [row["avg ms"] for row in order] == [a for _, _, a, _ in ROWS]
    assert order[0]["Name"] == "model/conv1;Relu6"
    assert order[-1]["cdf%"] == pytest.approx(100.0, abs=1e-3)
    assert ("start" in order[0]) == with_start
    layers = r.layer_details()  # what `hwnas show --layers` tabulates for a phone
    assert layers["layer_ops"] == [n for n, *_ in ROWS] and layers["layer_names"][0] == "model/conv1;Relu6"
    assert layers["layer_counts"] == pytest.approx([1e6 * a for _, _, a, _ in ROWS])
    assert layers["count_unit"] == "ns" and layers["counts"] == [pytest.approx(1000 * r.median_us)]
    summary = r.tables["Summary by node type"]
    assert summary[0] == {"Node type": "CONV_2D", "count": 2, "avg ms": 0.699, "avg %": 76.393, "cdf %": 76.393,
                          "mem KB": 0.0, "times called": 2}


def test_gpu_delegate_lines_are_recognised():
    applied = ("INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the "
               "delegate.\n")
    partial = ("INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the "
               "delegate w/ 3 delegate kernels.\n")
    unsupported = "WARNING: GPU acceleration is unsupported on this platform.\n"
    assert parse(applied + FACTS_LOG).gpu_delegate == "applied"
    assert parse(partial + FACTS_LOG).gpu_delegate == "partial"
    assert parse(unsupported + FACTS_LOG).gpu_delegate == "unsupported"
    assert parse(FACTS_LOG).gpu_delegate is None


def test_a_failed_run_raises_with_the_tools_own_error_lines():
    log = ("INFO: STARTING!\nINFO: Graph: [/data/local/tmp/missing.tflite]\n"
           "ERROR: Could not open '/data/local/tmp/missing.tflite'.\nERROR: Benchmarking failed.\n")
    with pytest.raises(BenchmarkOutputError, match=r"Could not open '/data/local/tmp/missing\.tflite'"):
        parse(log)
    with pytest.raises(BenchmarkOutputError, match="printed no timings"):
        parse("")


def test_the_host_build_prints_what_the_parser_reads(tmp_path):
    """hwnas-benchmark-model (the twin's tool) on a real model: every field the driver stores."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401 - the runtime the host build uses

    from hwnas_deploy.export import export_subnet
    from hwnas_deploy.sim import benchmark_model
    from hwnas_deploy.spaces import get_space

    sp = get_space("mcu-mbnet")
    art = export_subnet(sp, sp.sample_unique(1, 0)[0], "tflite", tmp_path)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = benchmark_model.main([f"--graph={art.path}", "--num_threads=1", "--warmup_runs=2", "--num_runs=15",
                                   "--min_secs=0", "--warmup_min_secs=0"])
    assert rc == 0
    r = parse(buf.getvalue())
    assert (r.warmup.count, r.runs.count) == (2, 15)
    assert r.runs.min <= r.runs.p5 <= r.median_us <= r.runs.p95 <= r.runs.max
    assert r.inference_avg_us == pytest.approx(r.runs.avg, rel=1e-4)
    assert np.isfinite([r.init_us, r.first_us, r.memory_init_mb, r.memory_overall_mb]).all()
    assert benchmark_model.main(["--graph=/nonexistent.tflite"]) == 1
    with pytest.raises(SystemExit):
        benchmark_model.main(["--no_such_flag=1"])
