"""The search-space interface every space implements.

A space has named elastic parameters with finite choices. A *config* is a plain dict from
parameter name to a value (scalar parameters) or a list of values (per-block parameters), as
OFA writes them: ``{"ks": [...20], "e": [...20], "d": [...5], "r": 224}``.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas_deploy.errors import ConfigError, HwnasError
from hwnas_deploy.spaces.blocks import Block, build_network, calibrate_batchnorm, peak_activation_elements

Config = dict[str, Any]

#: spaces with at most this many configs are sampled without replacement once a tenth is asked
ENUMERABLE = 1_000_000


@dataclass(frozen=True)
class Param:
    """One elastic parameter: `length` genes (1 for a scalar), each taking one of `choices`."""

    name: str
    choices: tuple
    length: int = 1
    help: str = ""

    @property
    def is_vector(self) -> bool:
        return self.length > 1


class SearchSpace(ABC):
    """Sample, validate, encode and build sub-networks of one super-network."""

    name: str
    params: tuple[Param, ...]
    #: keys a config may carry that mean nothing here, with the only value they may take
    tolerated_keys: Mapping[str, Any] = {}

    # -- what each space defines ------------------------------------------------------------
    @abstractmethod
    def blocks(self, cfg: Mapping) -> list[Block]:
        """One signature per block of the active network, in order (the LUT keys)."""

    @abstractmethod
    def unused_genes(self, cfg: Config) -> dict[str, list[int]]:
        """Indices of vector genes the config leaves unused (e.g. blocks beyond a stage's depth)."""

    @abstractmethod
    def input_shape(self, cfg: Mapping) -> tuple[int, int, int, int]:
        """NCHW input shape at batch 1."""

    # -- config handling --------------------------------------------------------------------
    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ConfigError(f"{self.name}: no parameter {name!r}")

    def validate(self, cfg: Mapping) -> Config:
        """Return the config in normal form, or raise ConfigError naming the bad key/value."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{self.name}: a config must be a JSON object, got {type(cfg).__name__}")
        names = {p.name for p in self.params}
        for key, value in cfg.items():
            if key in names:
                continue
            if key in self.tolerated_keys and value == self.tolerated_keys[key]:
                continue
            raise ConfigError(
                f"{self.name}: unknown config key {key!r}; expected keys: {', '.join(sorted(names))}"
            )
        out: Config = {}
        for p in self.params:
            if p.name not in cfg:
                raise ConfigError(f"{self.name}: config lacks key {p.name!r} ({p.help or p.choices})")
            value = cfg[p.name]
            if p.is_vector:
                if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != p.length:
                    raise ConfigError(
                        f"{self.name}: {p.name!r} must be a list of {p.length} values from "
                        f"{list(p.choices)}, got {value!r}"
                    )
                out[p.name] = [self._check_choice(p, v, f"{p.name}[{i}]") for i, v in enumerate(value)]
            else:
                # OFA writes the resolution as a one-element list: accept both forms.
                if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 1:
                    value = value[0]
                out[p.name] = self._check_choice(p, value, p.name)
        return out

    def _check_choice(self, p: Param, value: Any, where: str):
        for c in p.choices:
            if not isinstance(value, bool) and isinstance(value, numbers.Real) and value == c:
                return c
        raise ConfigError(f"{self.name}: {where}={value!r} is not allowed; choices: {list(p.choices)}")

    def canonical(self, cfg: Mapping) -> Config:
        """Normal form in which genes the network does not use are set to their first choice."""
        out = self.validate(cfg)
        for name, idxs in self.unused_genes(out).items():
            first = self.param(name).choices[0]
            for i in idxs:
                out[name][i] = first
        return out

    def config_hash(self, cfg: Mapping) -> str:
        """Identity of a sub-network: equal for configs that build the same network."""
        text = json.dumps({"space": self.name, "config": self.canonical(cfg)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def sample(self, rng: np.random.Generator | int | None = None) -> Config:
        rng = np.random.default_rng(rng)
        cfg: Config = {}
        for p in self.params:
            picks = [p.choices[int(i)] for i in rng.integers(0, len(p.choices), size=p.length)]
            cfg[p.name] = picks if p.is_vector else picks[0]
        return self.canonical(cfg)

    @property
    def n_configs(self) -> int:
        """How many gene vectors the space has (configs; several may build the same network)."""
        return math.prod(len(p.choices) ** p.length for p in self.params)

    def sample_unique(
        self,
        n: int,
        rng: np.random.Generator | int | None = None,
        accept: Callable[[Config], bool] | None = None,
        max_draws: int | None = None,
    ) -> list[Config]:
        """`n` distinct sub-networks (distinct after canonicalisation), each passing `accept`
        when given. Drawn at random while they are few against the space; past a tenth of a
        space of at most ENUMERABLE configs, drawn without replacement from all of them, so that
        asking for more than exist fails at once, naming how many do. Elsewhere ConfigError after
        `max_draws` draws (default 1000 per sub-network)."""
        if n < 0:
            raise ConfigError(f"{self.name}: cannot sample {n} sub-networks")
        total = self.n_configs
        if n > total:
            raise ConfigError(f"{self.name}: {n:,} sub-networks asked, but the space has only {total:,} configs")
        rng = np.random.default_rng(rng)
        seen: dict[str, Config] = {}
        if total <= ENUMERABLE and 10 * n > total:
            for index in rng.permutation(total):
                cfg = self.from_genes(self._genes_of(int(index)))
                if accept is None or accept(cfg):
                    seen.setdefault(self.config_hash(cfg), cfg)
                    if len(seen) == n:
                        return list(seen.values())
            what = "distinct sub-networks" + (" that are accepted" if accept is not None else "")
            raise ConfigError(f"{self.name}: {n:,} sub-networks asked, but the space has only {len(seen):,} {what}")
        for _ in range(max_draws or 1000 * n):
            cfg = self.sample(rng)
            if accept is None or accept(cfg):
                seen.setdefault(self.config_hash(cfg), cfg)
                if len(seen) == n:
                    return list(seen.values())
        raise ConfigError(f"{self.name}: only {len(seen)} of {n} sampled sub-networks were distinct and accepted")

    def _genes_of(self, index: int) -> list[int]:
        """The gene vector at `index` of all n_configs (mixed radix, last gene fastest)."""
        radices = [len(p.choices) for p in self.params for _ in range(p.length)]
        genes = []
        for r in reversed(radices):
            index, g = divmod(index, r)
            genes.append(g)
        return genes[::-1]

    # -- encodings --------------------------------------------------------------------------
    def genes(self, cfg: Mapping) -> np.ndarray:
        """Integer vector of choice indices (the encoding evolutionary search works on)."""
        cfg = self.validate(cfg)
        out: list[int] = []
        for p in self.params:
            values = cfg[p.name] if p.is_vector else [cfg[p.name]]
            out += [p.choices.index(v) for v in values]
        return np.asarray(out, dtype=np.int64)

    def from_genes(self, genes: Sequence[int]) -> Config:
        genes = [int(g) for g in genes]
        if len(genes) != self.n_genes:
            raise ConfigError(f"{self.name}: expected {self.n_genes} genes, got {len(genes)}")
        cfg: Config = {}
        pos = 0
        for p in self.params:
            idx = genes[pos : pos + p.length]
            pos += p.length
            for i in idx:
                if not 0 <= i < len(p.choices):
                    raise ConfigError(f"{self.name}: gene {i} out of range for {p.name!r} {p.choices}")
            values = [p.choices[i] for i in idx]
            cfg[p.name] = values if p.is_vector else values[0]
        return self.canonical(cfg)

    @property
    def n_genes(self) -> int:
        return sum(p.length for p in self.params)

    def gene_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        upper = [len(p.choices) - 1 for p in self.params for _ in range(p.length)]
        return np.zeros(self.n_genes, dtype=np.int64), np.asarray(upper, dtype=np.int64)

    def encode(self, cfg: Mapping) -> np.ndarray:
        """One-hot features for predictors; unused genes encode as all zeros."""
        cfg = self.canonical(cfg)
        unused = self.unused_genes(cfg)
        feats: list[np.ndarray] = []
        for p in self.params:
            values = cfg[p.name] if p.is_vector else [cfg[p.name]]
            for i, v in enumerate(values):
                onehot = np.zeros(len(p.choices), dtype=np.float32)
                if i not in unused.get(p.name, ()):
                    onehot[p.choices.index(v)] = 1.0
                feats.append(onehot)
        return np.concatenate(feats)

    # -- cost model and network -------------------------------------------------------------
    def macs(self, cfg: Mapping) -> int:
        return sum(b.macs() for b in self.blocks(self.validate(cfg)))

    def params_count(self, cfg: Mapping) -> int:
        return sum(b.params() for b in self.blocks(self.validate(cfg)))

    def peak_activation_bytes(self, cfg: Mapping, bytes_per_element: int = 1) -> int:
        """Peak activation memory of layer-by-layer execution (int8: 1 byte per element)."""
        return peak_activation_elements(self.blocks(self.validate(cfg))) * bytes_per_element

    def build(self, cfg: Mapping, seed: int = 0) -> nn.Module:
        """The sub-network as an nn.Module in eval mode, weights drawn from `seed`."""
        cfg = self.validate(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_network(self.blocks(cfg))
            calibrate_batchnorm(model, self.example_input(cfg, batch=4, seed=seed + 1))
        return model.eval()

    def example_input(self, cfg: Mapping, batch: int = 1, seed: int = 0) -> torch.Tensor:
        shape = (batch, *self.input_shape(self.validate(cfg))[1:])
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=gen)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "genes": self.n_genes,
            "params": {p.name: {"choices": list(p.choices), "length": p.length} for p in self.params},
        }


# -- config (de)serialisation ---------------------------------------------------------------
def config_to_json(cfg: Mapping) -> str:
    return json.dumps(dict(cfg), sort_keys=True)


def load_configs(path: str | Path, space: SearchSpace | None = None) -> list[Config]:
    """Configs from a JSON-lines file (one per line, blank lines skipped), each validated against
    `space` when given; an error names the file and the line. A line is a config, or an object
    with the config under "config" (what `hwnas sample` prints, with its MACs and hash)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configs file {path}: {exc.strerror}") from None
    configs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                cfg = load_config(line)
                if isinstance(cfg, dict) and "config" in cfg:
                    cfg = cfg["config"]
                configs.append(space.validate(cfg) if space is not None else cfg)
            except HwnasError as exc:  # validation raises ConfigError or UnknownNameError: one kind here
                raise ConfigError(f"{path} line {n}: {exc}") from None
    return configs


def load_config(text: str) -> Config | str | list:
    """Parse a config from JSON text, or from a file when `text` is ``@path``. Text that starts
    with ``|`` is a NAS-Bench-201 architecture string, a JSON list a BLOX arch vector: both are
    returned as they are for their space to validate."""
    if text.lstrip().startswith("|"):
        return text.strip()
    source = "config"
    if text.startswith("@"):
        path = Path(text[1:])
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(cfg, dict | list):
        raise ConfigError(f"{source}: a config must be a JSON object, got {type(cfg).__name__}")
    return cfg  # a list is a BLOX arch vector, for its space to validate (others refuse it by name)
