"""Algorithms by name, as pymoo objects (pymoo's split: problem, algorithm, termination).

nsga2 (default): integer SBX crossover with probability 0.9 and polynomial mutation of each gene
with probability 1 / population, as in Intel's DyNAS-T; agemoea: AGE-MOEA with the same
operators; unsga3: U-NSGA-III over Das-Dennis reference directions; random: random search, the
baseline every tactic must beat.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.population import Population
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling

from hwnas_deploy.errors import UnknownNameError

ALGORITHMS = {
    "nsga2": "NSGA-II (SBX 0.9, per-gene mutation 1/population)",
    "agemoea": "AGE-MOEA (adaptive geometry estimation; pymoo's needs numba)",
    "unsga3": "U-NSGA-III (Das-Dennis reference directions)",
    "random": "random search (baseline)",
}


class RandomSearch:
    """Random search with a pymoo algorithm's interface (`setup`, `next`, `pop`); pymoo's own is
    single-objective. Each generation is `pop_size` networks drawn uniformly (the first one is
    `sampling` when given); the search loop evaluates them as it does any population."""

    def __init__(self, pop_size: int, sampling=None):
        self.pop_size, self.sampling = pop_size, sampling

    def setup(self, problem, termination=None, seed: int = 0, verbose: bool = False) -> RandomSearch:
        self.problem, self.rng, self.n_gen, self.pop = problem, np.random.default_rng(seed), 0, None
        return self

    def next(self) -> None:
        if self.n_gen == 0 and self.sampling is not None:
            x = np.asarray(self.sampling)
        else:
            x = np.vstack([self.rng.integers(0, self.problem.xu + 1) for _ in range(self.pop_size)])
        self.n_gen += 1
        self.pop = Population.new("X", x)


def make_algorithm(name: str, pop_size: int, n_obj: int, sampling=None):
    """A pymoo algorithm; `sampling` (an array of genes) seeds the first population (resume)."""
    if name not in ALGORITHMS:
        raise UnknownNameError("algorithm", name, ALGORITHMS)
    if name == "random":
        return RandomSearch(pop_size, sampling)
    sampling = IntegerRandomSampling() if sampling is None else sampling
    ops = dict(
        sampling=sampling,
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, prob_var=1.0 / pop_size, eta=3.0, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        return NSGA2(pop_size=pop_size, **ops)
    if name == "agemoea":
        from pymoo.algorithms.moo.age import AGEMOEA

        return AGEMOEA(pop_size=pop_size, **ops)
    if name == "unsga3":
        from pymoo.algorithms.moo.unsga3 import UNSGA3
        from pymoo.util.ref_dirs import get_reference_directions

        ref = get_reference_directions("das-dennis", n_obj, n_partitions=max(4, 12 if n_obj == 2 else 6))
        return UNSGA3(ref_dirs=ref, pop_size=pop_size, **ops)
    raise AssertionError(f"algorithm {name!r} is listed but not built")  # a new entry of ALGORITHMS
