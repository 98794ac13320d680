"""Algorithms by name, as pymoo objects (pymoo's split: problem, algorithm, termination).

nsga2 (default): integer SBX crossover with probability 0.9 and polynomial mutation of each gene
with probability 1 / population, as in Intel's DyNAS-T; agemoea: AGE-MOEA with the same
operators; unsga3: U-NSGA-III over Das-Dennis reference directions; random: random search, the
baseline every tactic must beat.
"""

from __future__ import annotations

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


def make_algorithm(name: str, pop_size: int, n_obj: int, sampling=None):
    """A pymoo algorithm; `sampling` (an array of genes) seeds the first population (resume)."""
    if name not in ALGORITHMS:
        raise UnknownNameError("algorithm", name, ALGORITHMS)
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
    return None  # random search is run by hwnas_deploy.search.run itself (pymoo's is single-objective)
