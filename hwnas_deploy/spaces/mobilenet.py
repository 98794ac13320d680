"""What the MobileNet-style spaces share: square inputs, stages of up to MAX_DEPTH blocks."""

from __future__ import annotations

from collections.abc import Mapping

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
