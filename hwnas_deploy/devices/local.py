"""The `server` driver for this machine: artifacts run in-process on the host runtimes."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy as np

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices.base import Driver
from hwnas_deploy.measure import MeasureSettings, Summary, measure
from hwnas_deploy.runtimes import Runner, load_runner


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class LocalDriver(Driver):
    def open(self) -> dict[str, Any]:
        import os

        self.info = {
            "host": platform.node(),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": _version("onnxruntime"),
            "ai-edge-litert": _version("ai-edge-litert"),
            "apache-tvm": _version("apache-tvm"),
        }
        return self.info

    def deploy(self, artifact: Artifact, threads: int, weights: str = "real") -> Runner:
        runner = load_runner(artifact, threads)
        shape = artifact.inputs[0].shape
        runner.set_input(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        return runner

    def measure(self, handle: Runner, settings: MeasureSettings) -> Summary:
        summary = measure(handle.invoke, settings)
        if self.profile.benchmark.get("op_profiling"):
            summary.details = {**(summary.details or {}), **self._layers(handle)}
        return summary

    @staticmethod
    def _layers(handle: Runner) -> dict[str, Any]:
        """Per-layer times, from a profiled second session (onnxruntime artifacts)."""
        from hwnas_deploy.runtimes import OnnxRuntimeRunner

        if not isinstance(handle, OnnxRuntimeRunner):
            return {"layer_source": f"none: per-layer times come from onnxruntime's profiler (runtime onnxruntime), "
                                    f"not {type(handle).__name__}"}
        from hwnas_deploy.devices.layer_timing import onnxruntime_layers

        return onnxruntime_layers(handle.artifact.path, handle.staged_input, handle.threads)
