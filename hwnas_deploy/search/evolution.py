"""Multi-objective regularized (aging) evolution with non-dominated sorting.

Regularized evolution (Real et al., AAAI 2019): a population of `population` networks; each
step draws `sample` of them, mutates the best one in one gene and adds the child, retiring the
oldest. With several objectives "best" is the sample's first by non-dominated rank, then by
crowding distance (as NSGA-II ranks), which is the search the BLOX pruning study runs. The
initial random networks count as the first evolutions. Networks already evaluated are never
evaluated again: a repeated child is mutated anew.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hwnas_deploy.errors import ConfigError


@dataclass
class EvolutionResult:
    genes: np.ndarray  # evaluations x genes, in evaluation order
    F: np.ndarray  # evaluations x objectives (minimised)

    def front_after(self, n: int) -> np.ndarray:
        """Objectives of the non-dominated networks among the first `n` evaluations."""
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        F = self.F[:n]
        return F[NonDominatedSorting().do(F, only_non_dominated_front=True)]


def _best(F: np.ndarray) -> int:
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    fronts = NonDominatedSorting().do(F)
    first = np.asarray(fronts[0])
    if len(first) == 1:
        return int(first[0])
    crowding = calc_crowding_distance(F[first])
    return int(first[int(np.argmax(crowding))])


def regularized_evolution(evaluate: Callable[[np.ndarray], Sequence[float]], allowed: Sequence[Sequence[int]],
                          evaluations: int, *, population: int = 10, sample: int = 5,
                          seed: int = 0) -> EvolutionResult:
    """`evaluate(genes)` -> objectives to minimise; `allowed[g]` the values gene g may take."""
    if not 2 <= sample <= population:
        raise ConfigError(f"regularized evolution: sample ({sample}) must be in 2..population ({population})")
    allowed = [list(a) for a in allowed]
    if any(not a for a in allowed):
        raise ConfigError("regularized evolution: every gene needs at least one allowed value")
    size = int(np.prod([len(a) for a in allowed], dtype=np.float64))
    evaluations = min(evaluations, size)
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    genes, objectives = [], []

    def add(g: tuple[int, ...]) -> None:
        seen.add(g)
        genes.append(g)
        objectives.append(np.asarray(evaluate(np.asarray(g)), dtype=np.float64))

    alive: deque[int] = deque()
    while len(genes) < min(population, evaluations):
        g = tuple(int(rng.choice(a)) for a in allowed)
        if g not in seen:
            add(g)
            alive.append(len(genes) - 1)
    mutable = [i for i, a in enumerate(allowed) if len(a) > 1]
    while len(genes) < evaluations:
        pick = rng.choice(len(alive), size=min(sample, len(alive)), replace=False)
        members = [alive[i] for i in pick]
        parent = genes[members[_best(np.vstack([objectives[m] for m in members]))]]
        child = parent
        for _ in range(100):
            child = list(parent)
            g = int(rng.choice(mutable))
            child[g] = int(rng.choice([v for v in allowed[g] if v != parent[g]]))
            child = tuple(child)
            if child not in seen:
                break
        while child in seen:  # the parent's neighbourhood is exhausted: a fresh network
            child = tuple(int(rng.choice(a)) for a in allowed)
        add(child)
        alive.append(len(genes) - 1)
        if len(alive) > population:
            alive.popleft()
    return EvolutionResult(np.asarray(genes, dtype=np.int64), np.vstack(objectives))
