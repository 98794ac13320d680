"""Search-space reduction before a search: which choices of each gene to keep.

Both return `allowed`: per gene, the choice indices kept (every gene keeps at least one), for
`search(..., allowed=...)`.

- `popdb`: PopDB's idea (populations of earlier runs as a database): cluster the networks of
  earlier runs' populations with HDBSCAN on their one-hot genes, and keep, per gene, the choices
  that at least `threshold` of the clustered networks use (noise points are ignored). Earlier
  searches have already learnt which choices good networks use.
- `efficiency`: hardware-efficiency pruning (as the Bosch search-space pruning poster): for each
  gene and choice, the mean parameters per mean latency of random networks with that choice
  (latency from the device's LUT or a predictor: any objective), and the least efficient `share`
  of each gene's choices dropped. A choice that buys no capacity for its cost on this device goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces import SearchSpace


def _gene_choices(space: SearchSpace) -> list[int]:
    return [int(u) + 1 for u in space.gene_bounds()[1]]


def popdb(space: SearchSpace, configs: Sequence[dict], threshold: float = 0.05,
          min_cluster_size: int = 5) -> list[list[int]]:
    from sklearn.cluster import HDBSCAN

    if len(configs) < 2 * min_cluster_size:
        raise ConfigError(f"PopDB needs at least {2 * min_cluster_size} earlier networks, got {len(configs)}")
    if not 0 < threshold < 1:
        raise ConfigError(f"PopDB threshold must be in (0, 1), got {threshold}")
    genes = np.vstack([space.genes(space.canonical(c)) for c in configs])
    onehot = np.vstack([space.encode(c) for c in configs])
    labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(onehot)
    kept = genes[labels >= 0] if np.any(labels >= 0) else genes  # all noise: use every network
    allowed = []
    for g, n in enumerate(_gene_choices(space)):
        freq = np.bincount(kept[:, g], minlength=n) / len(kept)
        keep = [int(v) for v in np.flatnonzero(freq >= threshold)]
        allowed.append(keep or [int(np.argmax(freq))])
    return allowed


def efficiency(space: SearchSpace, latency: Callable[[Sequence[dict]], np.ndarray], share: float = 0.25,
               samples: int = 24, seed: int = 0) -> list[list[int]]:
    if not 0 <= share < 1:
        raise ConfigError(f"the pruned share must be in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    base = np.vstack([space.genes(space.sample(rng)) for _ in range(samples)])
    allowed = []
    for g, n in enumerate(_gene_choices(space)):
        scores = []
        for v in range(n):
            genes = base.copy()
            genes[:, g] = v
            configs = [space.from_genes(row) for row in genes]
            params = np.mean([space.params_count(c) for c in configs])
            scores.append(params / float(np.mean(latency(configs))))
        scores = np.asarray(scores)
        drop = int(share * n)
        if drop == 0 or np.ptp(scores) <= 1e-9 * np.max(np.abs(scores)):  # an unused gene: nothing to rank
            allowed.append(list(range(n)))
            continue
        order = np.argsort(scores, kind="stable")  # least efficient first
        allowed.append(sorted(int(v) for v in order[drop:]))
    return allowed
