"""What the MobileNet-style spaces share: square inputs, stages of up to MAX_DEPTH blocks."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces.base import Config, SearchSpace

MAX_DEPTH = 4
N_STAGES = 5


class StagedMobileNetSpace(SearchSpace):
    """Per-block genes `ks`/`e` (N_STAGES x MAX_DEPTH), stage depths `d`, resolution `r`."""

    def input_shape(self, cfg: Mapping) -> tuple[int, int, int, int]:
        return (1, 3, cfg["r"], cfg["r"])

    def max_config(self) -> Config:
        """The largest sub-network: every gene at its largest choice (a supernet's shape)."""
        return {p.name: (max(p.choices) if p.length == 1 else [max(p.choices)] * p.length) for p in self.params}

    def block_slots(self, cfg: Mapping) -> list[int]:
        """For each block of `cfg`, its index among the blocks of `max_config()`: stem and first
        block, then the first d[s] blocks of each stage (depth by prefix), the final blocks."""
        n_max = 2 + N_STAGES * MAX_DEPTH
        stages = [2 + s * MAX_DEPTH + i for s, d in enumerate(cfg["d"]) for i in range(d)]
        tail = len(self.blocks(cfg)) - 2 - len(stages)
        return [0, 1, *stages, *range(n_max, n_max + tail)]

    def unused_genes(self, cfg: Config) -> dict[str, list[int]]:
        unused = [s * MAX_DEPTH + i for s, d in enumerate(cfg["d"]) for i in range(d, MAX_DEPTH)]
        return {"ks": unused, "e": unused}

    def covering_configs(self, fixed: Mapping) -> list[Config]:
        """Configs whose blocks together are every distinct block of the space once its scalar
        genes are `fixed` (e.g. {"r": 128, "w": 0.5}): a LUT built on them covers every
        sub-network at that resolution (and width). A stage's first block (its stride, the
        previous stage's width in) differs from the blocks after it, which are all alike, and
        depth only says how many there are: every stage at full depth, each (ks, e) pair once at
        the first block and once among the others, P pairs in P configs."""
        scalars = [p for p in self.params if not p.is_vector]
        unknown = sorted(set(fixed) - {p.name for p in scalars})
        missing = [p.name for p in scalars if p.name not in fixed]
        if unknown or missing:
            raise ConfigError(f"{self.name}: covering every block fixes exactly the scalar genes "
                              f"{', '.join(p.name for p in scalars)} (got {', '.join(map(str, fixed)) or 'none'})")
        pairs = list(itertools.product(self.param("ks").choices, self.param("e").choices))
        rest = MAX_DEPTH - 1
        configs = []
        for k in range(len(pairs)):
            genes = [pairs[k], *(pairs[(k * rest + j) % len(pairs)] for j in range(rest))] * N_STAGES
            configs.append(self.validate({**dict(fixed), "d": [max(self.param("d").choices)] * N_STAGES,
                                          "ks": [g[0] for g in genes], "e": [g[1] for g in genes]}))
        return configs
