"""Per-layer times on the host CPU from onnxruntime's own profiler.

A second session with profiling on (the timed one stays without it) runs the network `runs`
times after a warm-up; each node's time is the median of its kernel times over the runs, the
whole network's the median of the runs' `model_run` times, so what the nodes do not account for
(input binding, the executor between nodes) is left as the remainder the report shows. Layers are
the nodes as onnxruntime executes them (after its graph fusions, e.g. Conv + Relu); their MACs
come from the shapes the profiler reports for each node.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def onnxruntime_layers(path: str | Path, x: np.ndarray, threads: int = 1, runs: int = 20,
                       warmup: int = 5) -> dict[str, Any]:
    """Measurement details: `layer_ops`, `layer_names`, `layer_counts` (ns per node, in execution
    order), `layer_macs`, `counts` (ns of whole runs) and `count_unit` "ns"."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hwnas-ortprof-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        for _ in range(warmup):
            session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_us = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    per_node: dict[str, list[float]] = {}
    facts: dict[str, tuple[str, tuple[int, ...], int | None]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            per_node.setdefault(node, []).append(e["dur"])
            args = e.get("args", {})
            ins, outs = _shapes(args.get("input_type_shape")), _shapes(args.get("output_type_shape"))
            op = args.get("op_name", "?")
            facts[node] = (op, outs[0] if outs else (), _macs(op, ins, outs))
    names = list(per_node)
    return {
        "count_unit": "ns",
        "counts": [1000.0 * d for d in runs_us],
        "layer_names": names,
        "layer_ops": [facts[n][0] for n in names],
        "layer_shapes": [list(facts[n][1]) for n in names],
        # the last `runs` kernel times of each node: the warm-up's are dropped
        "layer_counts": [1000.0 * statistics.median(per_node[n][-runs:]) for n in names],
        "layer_macs": [facts[n][2] for n in names],
        "layer_source": "onnxruntime profiler",
    }


def _shapes(entries) -> list[tuple[int, ...]]:
    """[{"float": [1, 16, 32, 32]}, ...] -> [(1, 16, 32, 32), ...] (the profiler's logical shapes)."""
    return [tuple(int(d) for d in next(iter(entry.values()))) for entry in entries or [] if entry]


def _macs(op: str, ins: list[tuple[int, ...]], outs: list[tuple[int, ...]]) -> int | None:
    """Multiply-accumulates of a node from its shapes (fused nodes keep their convolution's)."""
    if not outs or len(ins) < 2:
        return None
    if op in ("Conv", "FusedConv"):  # weights (Cout, Cin / groups, kh, kw)
        return math.prod(outs[0]) * math.prod(ins[1][1:])
    if op in ("Gemm", "FusedGemm", "MatMul", "FusedMatMul"):
        return math.prod(outs[0]) * ins[0][-1]
    return None
