"""What to measure: a network the store can key and the exporters can build.

A `Network` is named in the store by a namespace (`space`) and a content hash (`config_hash`)
with a plain-data description (`config`); it exports itself to an artifact of any format. The
toolchain's own spaces give `SubNetwork`s (space + config); anything else that builds a torch
module at a fixed input shape (a LUT's block, a user's model) is a `ModuleNetwork`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas_deploy.export import Artifact, artifact_filename, export_model, export_subnet


class Network(ABC):
    """One network to measure. `space` and `config_hash` key it in the store."""

    space: str
    config_hash: str
    config: dict
    macs: int | None = None
    params: int | None = None

    def stem(self, batch: int) -> str:
        """The artifact's file name without format suffix (unique per network and batch)."""
        return f"{self.space}-{self.config_hash}-b{batch}"

    def artifact_path(self, out_dir: Path, fmt: str, batch: int, target: str = "host") -> Path:
        return Path(out_dir) / artifact_filename(self.stem(batch), fmt, target)

    def check_format(self, fmt: str) -> None:
        """ExportError when this network cannot be exported to `fmt` (a torch network reaches every
        format; a model file may not)."""

    @abstractmethod
    def export(self, fmt: str, out_dir: Path, *, batch: int = 1, target: str = "host", tuning=None) -> Artifact:
        """Export into `out_dir` at `artifact_path(...)`, checked against torch (`tuning`: a TVM
        library built from a tuning database, `export.tvm_tuning.Tuning`)."""


class SubNetwork(Network):
    """A sub-network of one of the toolchain's search spaces (its canonical config)."""

    def __init__(self, space, config: Mapping):
        from hwnas_deploy.spaces import SearchSpace, get_space

        self.search_space = space if isinstance(space, SearchSpace) else get_space(space)
        self.config = self.search_space.canonical(config)
        self.space = self.search_space.name
        self.config_hash = self.search_space.config_hash(self.config)
        self.macs = self.search_space.macs(self.config)
        self.params = self.search_space.params_count(self.config)

    def export(self, fmt: str, out_dir: Path, *, batch: int = 1, target: str = "host", tuning=None) -> Artifact:
        return export_subnet(self.search_space, self.config, fmt, out_dir, batch=batch, target=target, tuning=tuning)

    def __repr__(self) -> str:
        return f"SubNetwork({self.space!r}, {self.config_hash})"


@dataclass(eq=False)
class ModuleNetwork(Network):
    """A torch module at a fixed input shape: `build()` returns (module, example input at batch 1).

    `describe` is the plain data that identifies it (hashed into `config_hash`); `space` is the
    namespace it is stored under (e.g. "lut:mcu-mbnet" for a LUT's blocks)."""

    space: str
    describe: dict
    build: Callable[[], tuple[Any, Any]] = field(repr=False)
    macs: int | None = None
    params: int | None = None

    def __post_init__(self):
        self.config = dict(self.describe)
        text = json.dumps(self.config, sort_keys=True, separators=(",", ":"))
        self.config_hash = hashlib.sha256(text.encode()).hexdigest()[:16]

    def export(self, fmt: str, out_dir: Path, *, batch: int = 1, target: str = "host", tuning=None) -> Artifact:
        model, example = self.build()
        if batch != example.shape[0]:
            example = example[:1].expand(batch, *example.shape[1:]).contiguous()
        return export_model(model, example, fmt, self.artifact_path(out_dir, fmt, batch, target), target=target,
                            space=self.space, config=self.config, tuning=tuning)
