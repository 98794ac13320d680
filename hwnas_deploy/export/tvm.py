"""ONNX -> TVM Relax -> compiled shared library, for this host or cross-compiled.

Cross targets are named by their GNU triple; the library is linked with that triple's gcc
(Debian `gcc-aarch64-linux-gnu` for aarch64). microTVM is gone upstream, so there is no TVM
path to a Cortex-M: MCUs use our own firmware runtime instead.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from hwnas_deploy.artifact import sha256_file
from hwnas_deploy.errors import ExportError, UnsupportedOpError
from hwnas_deploy.export.cache import ConversionCache, toolchain_digest
from hwnas_deploy.export.onnx import INPUT_NAME

CROSS_TARGETS: dict[str, dict] = {
    "aarch64-linux-gnu": {
        "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
        "cc": "aarch64-linux-gnu-gcc",
        "elf_machine": 183,  # EM_AARCH64
    },
}
TARGETS = ("host", *CROSS_TARGETS)


def host_target() -> dict:
    import tvm

    return {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}


def target_spec(target: str) -> dict:
    """The TVM target for a name in TARGETS ("host": this machine's CPU)."""
    if target == "host":
        return host_target()
    if target not in CROSS_TARGETS:
        raise ExportError(f"unknown TVM target {target!r}; known: {', '.join(TARGETS)}")
    return CROSS_TARGETS[target]["target"]


def relax_module(onnx_path: Path, input_shape: tuple[int, ...]):
    """The ONNX file as a Relax module (weights bound as constants)."""
    import onnx
    import tvm.relax.frontend.onnx as relax_onnx

    try:
        return relax_onnx.from_onnx(onnx.load(str(onnx_path)), shape_dict={INPUT_NAME: list(input_shape)})
    except Exception as exc:  # noqa: BLE001
        match = re.search(r"not supported[^:]*:\s*([\w, ]+)", str(exc))
        if match:
            raise UnsupportedOpError("tvm", match.group(1).strip(), str(exc).splitlines()[0]) from None
        raise ExportError(f"tvm: importing {onnx_path} into Relax failed: {exc}") from exc


def compile_onnx(onnx_path: Path, input_shape: tuple[int, ...], target: str = "host", tuning=None, mod=None):
    """Import an ONNX file into Relax and compile it; returns the TVM executable. With `tuning`
    (`tvm_tuning.Tuning`), each workload the database holds a record for is built from its best
    record, the others as without. `mod`: the file's Relax module when the caller imported it."""
    import tvm

    mod = mod if mod is not None else relax_module(onnx_path, input_shape)
    if tuning is None:
        return tvm.compile(mod, target=tvm.target.Target(target_spec(target)))
    from tvm.s_tir import meta_schedule as ms

    spec = tuning.target(target)
    return ms.relax_integration.compile_relax(tuning.database.database(spec), mod, tvm.target.Target(spec), None)


def to_tvm(onnx_path: Path, input_shape: tuple[int, ...], path: Path, target: str = "host",
           tuning=None) -> dict | None:
    """Write the library `path`. A build of the same ONNX file for the same shape, target and TVM
    done before (by any process) is taken from the conversion cache (export/cache.py).

    With `tuning` (`tvm_tuning.Tuning`) the workloads the database holds records for are built
    from them; returns what the build took from it: the database's path and id, the target, how
    many of the network's workloads were tuned, and the database's record count then."""
    path = Path(path)
    spec = target_spec(target)
    used = mod = None
    parts = [sha256_file(onnx_path), json.dumps(list(input_shape)), json.dumps(spec, sort_keys=True)]
    if tuning is not None:
        from hwnas_deploy.export.tvm_tuning import applied, workloads

        spec = tuning.target(target)
        tuning.database.database(spec)  # refused by name when its folder is not on this host
        mod = relax_module(onnx_path, input_shape)
        found = workloads(mod, spec)
        tuned, digest = applied(found, tuning.database, spec)
        used = {"database": str(tuning.database.path), "id": tuning.database.id, "target": spec,
                "workloads": len(found), "tuned_workloads": tuned, "records": tuning.database.records(spec)}
        if tuned:
            parts += ["tuned", json.dumps(spec, sort_keys=True), digest]
        else:  # nothing of it tuned: the untuned build, as without the database
            tuning = None
    cache = ConversionCache()
    key = ""
    if cache.enabled:
        key = cache.key("tvm", *parts, toolchain_digest(sys.executable, __file__))
        if cache.fetch(key, path.suffix, path):
            return used
    _build(onnx_path, input_shape, path, target, tuning, mod)
    if key:
        cache.keep(key, path.suffix, path)
    return used


def _build(onnx_path: Path, input_shape: tuple[int, ...], path: Path, target: str, tuning=None, mod=None) -> None:
    executable = compile_onnx(onnx_path, input_shape, target, tuning, mod)
    if target == "host":
        executable.export_library(str(path))
        return
    cc = CROSS_TARGETS[target]["cc"]
    if shutil.which(cc) is None:
        raise ExportError(f"tvm: cross-compiling for {target} needs {cc} (apt-get install gcc-{target})")
    from tvm.support import cc as tvm_cc

    executable.export_library(str(path), fcompile=tvm_cc.cross_compiler(cc))
    machine = int.from_bytes(path.read_bytes()[18:20], "little")
    if machine != CROSS_TARGETS[target]["elf_machine"]:
        raise ExportError(f"tvm: {path} is not a {target} shared object (ELF machine {machine})")
