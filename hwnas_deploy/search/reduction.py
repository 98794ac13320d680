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
- `block_efficiency`: the same ranking on the blocks themselves, as the poster ranks BLOX's 45
  blocks: a choice's own blocks (those that change when only this gene changes) scored by
  their parameters (or MACs: how well the block uses the device) per LUT latency on the device;
  `random_pruning` keeps as many choices, drawn at random (the study's control).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces import SearchSpace

if TYPE_CHECKING:
    from hwnas_deploy.predictors.lut import LatencyLUT


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
    _check_share(share)
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


def _check_share(share: float) -> None:
    if not 0 <= share < 1:
        raise ConfigError(f"the pruned share must be in [0, 1), got {share}")


def _dropped(share: float, n: int) -> int:
    """How many of n choices a share prunes: rounded half up (0.7 * 45 = 31.5 -> 32), one kept."""
    return min(math.floor(share * n + 0.5 + 1e-9), n - 1)


CAPACITY = ("params", "macs")


def block_scores(space: SearchSpace, lut: LatencyLUT, seed: int = 0, capacity: str = "params") -> list[np.ndarray]:
    """Per gene, each choice's parameters (or MACs) per millisecond over the blocks it alone
    decides (inf where it decides none: nothing to prune). The other genes are held at one random
    network's values; the LUT must hold every block of the gene's choices."""
    if capacity not in CAPACITY:
        raise ConfigError(f"capacity {capacity!r} is not one of {', '.join(CAPACITY)}")
    base = space.genes(space.sample(np.random.default_rng(seed)))
    out = []
    for g, n in enumerate(_gene_choices(space)):
        per_choice = []
        for v in range(n):
            genes = base.copy()
            genes[g] = v
            per_choice.append(space.blocks(space.from_genes(genes)))
        common = set.intersection(*({b.key() for b in blocks} for blocks in per_choice))
        scores = []
        for blocks in per_choice:
            own = [b for b in blocks if b.key() not in common]
            if not own:
                scores.append(np.inf)
                continue
            missing = [b.key() for b in own if b.key() not in lut.entries]
            if missing:
                raise ConfigError(f"the LUT of {lut.device} has no entry for block {missing[0]}")
            work = sum(b.params() if capacity == "params" else b.macs() for b in own)
            scores.append(work / sum(lut.entries[b.key()] for b in own))
        out.append(np.asarray(scores))
    return out


def block_efficiency(space: SearchSpace, lut: LatencyLUT, share: float, seed: int = 0,
                     capacity: str = "params") -> list[list[int]]:
    """Drop the least efficient `share` of each gene's choices, ranked by `block_scores`."""
    _check_share(share)
    allowed = []
    for scores in block_scores(space, lut, seed, capacity):
        n = len(scores)
        drop = _dropped(share, n)
        if drop == 0 or np.all(np.isinf(scores)):
            allowed.append(list(range(n)))
            continue
        order = np.argsort(scores, kind="stable")
        allowed.append(sorted(int(v) for v in order[drop:]))
    return allowed


def random_pruning(space: SearchSpace, share: float, seed: int = 0) -> list[list[int]]:
    """The control: as many choices kept per gene as `block_efficiency` keeps, drawn at random."""
    _check_share(share)
    rng = np.random.default_rng(seed)
    allowed = []
    for n in _gene_choices(space):
        keep = n - _dropped(share, n)
        allowed.append(sorted(int(v) for v in rng.choice(n, keep, replace=False)))
    return allowed
