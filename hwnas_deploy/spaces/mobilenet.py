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

    def unused_genes(self, cfg: Config) -> dict[str, list[int]]:
        unused = [s * MAX_DEPTH + i for s, d in enumerate(cfg["d"]) for i in range(d, MAX_DEPTH)]
        return {"ks": unused, "e": unused}
