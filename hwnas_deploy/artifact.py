"""The record every export returns and writes beside its file (``<file>.json``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    #: (scale, zero_point) for quantised tensors
    quantization: tuple[float, int] | None = None


@dataclass
class Artifact:
    format: str
    path: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: "host" for the build machine, or a cross target such as "aarch64-linux-gnu"
    target: str = "host"
    space: str | None = None
    config: dict[str, Any] | None = None
    #: max |artifact - torch| on the verification input; None when not verified
    max_abs_error: float | None = None
    export_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: `exporter_digest()` of the code that made it (an artifacts folder is reused only while equal)
    exporter: str | None = None

    @property
    def sidecar(self) -> Path:
        return Path(self.path + ".json")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        d = dict(d)
        for key in ("inputs", "outputs"):
            d[key] = [
                TensorSpec(
                    t["name"], tuple(t["shape"]), t["dtype"], tuple(t["quantization"]) if t.get("quantization") else None
                )
                for t in d[key]
            ]
        return cls(**d)

    def save(self) -> Path:
        self.sidecar.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return self.sidecar

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        sidecar = path if path.suffix == ".json" else Path(str(path) + ".json")
        return cls.from_dict(json.loads(sidecar.read_text()))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: the package's sources an artifact depends on: what builds a network and what converts it
EXPORTER_SOURCES = ("artifact.py", "graphs.py", "export", "mcu", "spaces", "models")
#: and the distributions doing the conversions in this environment
EXPORTER_DISTRIBUTIONS = ("torch", "onnx", "onnxruntime", "ai-edge-litert", "apache-tvm")


@lru_cache(maxsize=1)
def exporter_digest() -> str:
    """What made an artifact: the package's exporting sources and the converters' versions. An
    artifact written by other code (an upgrade, a fixed converter) is not reused from a folder."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for name in EXPORTER_SOURCES:
        path = root / name
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    for dist in EXPORTER_DISTRIBUTIONS:
        try:
            h.update(f"{dist}=={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} absent".encode())
    return h.hexdigest()[:16]
