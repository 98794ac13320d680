"""Hardware-aware search over a space's sub-networks: problem, algorithms, objectives, runs."""

from hwnas_deploy.search.algorithms import ALGORITHMS, make_algorithm
from hwnas_deploy.search.objectives import Constraint, Objective, parse_constraint, parse_objective
from hwnas_deploy.search.problem import SubnetProblem
from hwnas_deploy.search.run import SearchResult, pareto_front, search

__all__ = [
    "ALGORITHMS", "Constraint", "Objective", "SearchResult", "SubnetProblem", "make_algorithm", "pareto_front",
    "parse_constraint", "parse_objective", "search",
]
