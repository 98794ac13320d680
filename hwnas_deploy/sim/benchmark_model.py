"""A host build of TFLite's `benchmark_model` on LiteRT: what the Android twin executes.

The twin runs commands on this host, so the benchmark binary pushed to it is this program
(installed as `hwnas-benchmark-model`). It takes the real tool's flags and prints the real
tool's log format, so the `android-adb` driver and its parser run end to end on the twin exactly
as on a phone. Timings are real: LiteRT's interpreter on this CPU, one `invoke()` per run.

Not available here, and said so in the log: the GPU delegate (`--use_gpu`: the run falls back to
the CPU and prints that GPU acceleration is unsupported, as the real tool does on a device
without OpenCL) and per-operator profiling (`--enable_op_profiling`: LiteRT's Python API exposes
no profiler).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

FLAGS = {
    "graph": str, "num_threads": int, "warmup_runs": int, "num_runs": int, "min_secs": float,
    "max_secs": float, "warmup_min_secs": float, "run_delay": float, "use_xnnpack": bool, "use_gpu": bool,
    "enable_op_profiling": bool, "verbose": bool, "max_profiling_buffer_entries": int,
}
DEFAULTS = {"num_threads": -1, "warmup_runs": 1, "num_runs": 50, "min_secs": 1.0, "max_secs": 150.0,
            "warmup_min_secs": 0.5, "run_delay": -1.0, "use_xnnpack": True, "use_gpu": False,
            "enable_op_profiling": False, "verbose": False, "max_profiling_buffer_entries": 1024}


def _log(text: str) -> None:
    print(f"INFO: {text}", flush=True)


def _parse_flags(argv: list[str]) -> dict:
    values, unknown = dict(DEFAULTS), []
    for arg in argv:
        name, eq, text = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in FLAGS:
            unknown.append(arg)
            continue
        kind = FLAGS[name]
        if kind is bool:
            values[name] = (text or "true").lower() in ("1", "true", "yes")
        else:
            try:
                values[name] = kind(text)
            except ValueError:
                unknown.append(arg)
    if unknown:
        print(f"ERROR: Unconsumed cmdline flags: {' '.join(unknown)}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return values


def _stats_line(us: list[float], first: bool = True) -> str:
    a = np.asarray(us)
    text = f"count={len(a)}" + (f" first={int(a[0])}" if first else "") + f" curr={int(a[-1])}"
    if len(a) > 1:
        text += (f" min={int(a.min())} max={int(a.max())} avg={a.mean():g} std={int(a.std())}"
                 f" p5={int(np.percentile(a, 5))} median={int(np.median(a))} p95={int(np.percentile(a, 95))}")
    return text


def _timed_phase(invoke, runs: int, min_secs: float, max_secs: float, delay: float) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_secs:
        t0 = time.perf_counter_ns()
        invoke()
        times.append((time.perf_counter_ns() - t0) / 1e3)
        if time.perf_counter() - start > max_secs:
            break
        if delay > 0:
            time.sleep(delay)
    return times


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    flags = _parse_flags(sys.argv[1:] if argv is None else argv)
    _log("STARTING!")
    _log(f"Min num runs: [{flags['num_runs']}]")
    _log(f"Num threads: [{flags['num_threads']}]")
    _log(f"Min warmup runs: [{flags['warmup_runs']}]")
    _log(f"Graph: [{flags['graph']}]")
    _log(f"Use xnnpack: [{int(flags['use_xnnpack'])}]")
    if flags["use_gpu"]:
        _log("Use gpu: [1]")
    if flags["enable_op_profiling"]:
        _log("Enable op profiling: [1]")
    path = Path(flags.get("graph", ""))
    if not flags.get("graph") or not path.is_file():
        print(f"ERROR: Could not open '{flags.get('graph', '')}'.", file=sys.stderr, flush=True)
        print("ERROR: Benchmarking failed.", file=sys.stderr, flush=True)
        return 1
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    rss0 = _rss_mb()
    t0 = time.perf_counter_ns()

    threads = flags["num_threads"] if flags["num_threads"] > 0 else None
    resolver = (OpResolverType.AUTO if flags["use_xnnpack"]
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        print(f"ERROR: Failed to initialize the interpreter: {exc}", file=sys.stderr, flush=True)
        print("ERROR: Benchmarking failed.", file=sys.stderr, flush=True)
        return 1
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        dtype = detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
        else:
            data = rng.uniform(-1, 1, size=detail["shape"]).astype(dtype)
        interp.set_tensor(detail["index"], data)
    init_us = (time.perf_counter_ns() - t0) / 1e3
    rss_init = _rss_mb()
    _log(f"#threads used for CPU inference: [{threads or 1}]")
    if flags["use_gpu"]:
        print("WARNING: GPU acceleration is unsupported on this platform.", flush=True)
    _log(f"Loaded model {path}")
    _log(f"The input model file size (MB): {path.stat().st_size / 1e6:g}")
    _log(f"Initialized session in {init_us / 1e3:g}ms.")

    _log(f"Running benchmark for at least {flags['warmup_runs']} iterations and at least "
         f"{flags['warmup_min_secs']:g} seconds but terminate if exceeding {flags['max_secs']:g} seconds.")
    warm = _timed_phase(interp.invoke, flags["warmup_runs"], flags["warmup_min_secs"], flags["max_secs"], -1)
    _log(_stats_line(warm, first=len(warm) > 1) + "\n")
    _log(f"Running benchmark for at least {flags['num_runs']} iterations and at least "
         f"{flags['min_secs']:g} seconds but terminate if exceeding {flags['max_secs']:g} seconds.")
    runs = _timed_phase(interp.invoke, flags["num_runs"], flags["min_secs"], flags["max_secs"], flags["run_delay"])
    _log(_stats_line(runs) + "\n")
    if flags["enable_op_profiling"]:
        print("WARNING: Op profiling is not available in this host build of benchmark_model.", flush=True)
    _log(f"Inference timings in us: Init: {int(init_us)}, First inference: {int(warm[0])}, "
         f"Warmup (avg): {np.mean(warm):g}, Inference (avg): {np.mean(runs):g}")
    _log("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to "
         "the actual memory footprint of the model at runtime. Take the information at your one's own risk.")
    _log(f"Memory footprint delta from the start of the tool (MB): init={rss_init - rss0:g} "
         f"overall={_rss_mb() - rss0:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
