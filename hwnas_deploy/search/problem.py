"""The search problem: integer genes of a space -> objectives and constraints, via pymoo.

Genes decode to canonical configs (`SearchSpace.from_genes`), so two gene vectors that differ
only in genes a shallow stage does not use are one network: each distinct network is evaluated
once and remembered (`evaluated`), whatever the algorithm proposes again. A network that breaks
a constraint on a count (sram, flash, ...) is never measured: its measured objectives are
infinite without asking the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymoo.core.problem import Problem

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.search.objectives import COUNTS, Constraint, Objective, minimised
from hwnas_deploy.spaces import SearchSpace


class SubnetProblem(Problem):
    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
                 allowed: Sequence[Sequence[int]] | None = None):
        """allowed: per gene, the choice indices a reduced space keeps (search/reduction.py)."""
        if not objectives:
            raise ConfigError("a search needs at least one objective")
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ConfigError(f"objective names must differ: {names}")
        for c in constraints:
            if c.name not in names and c.name not in COUNTS:
                raise ConfigError(f"constraint on {c.name!r}: not an objective ({', '.join(names)}) nor a count "
                                  f"({', '.join(COUNTS)})")
        xl, xu = space.gene_bounds()
        if allowed is not None:
            if len(allowed) != len(xu) or any(not a or min(a) < 0 or max(a) > u for a, u in zip(allowed, xu,
                                                                                               strict=False)):
                raise ConfigError(f"a reduced space needs, for each of the {len(xu)} genes, a non-empty list of "
                                  "choice indices within the gene's range")
            xu = np.asarray([len(a) - 1 for a in allowed])
        self.allowed = [list(a) for a in allowed] if allowed is not None else None
        super().__init__(n_var=space.n_genes, n_obj=len(objectives), n_ieq_constr=len(constraints), xl=xl, xu=xu,
                         vtype=int)
        self.space, self.objectives, self.constraints = space, list(objectives), list(constraints)
        self.extra_counts = [c.name for c in constraints if c.name not in names]  # constrained, not optimised
        self.evaluated: dict[str, dict] = {}  # config hash -> {"config": ..., name: value, ...}
        measured = {o.name for o in objectives if o.measured}
        self.count_constraints = [c for c in constraints if c.name in COUNTS and c.name not in measured]

    def cheap_ok(self, cfg: dict) -> bool:
        """Whether the network meets every constraint on a count (known without measuring)."""
        return all(c.violation(COUNTS[c.name](self.space, cfg)) <= 0 for c in self.count_constraints)

    def values(self, configs: Sequence[dict]) -> list[dict]:
        """Every objective and constrained count of each config, computing only unseen networks."""
        hashes = [self.space.config_hash(c) for c in configs]
        new = {}
        for h, c in zip(hashes, configs, strict=True):
            if h not in self.evaluated and h not in new:
                new[h] = c
        if new:
            todo = list(new.values())
            rows = [{"config": c} for c in todo]
            ok = [self.cheap_ok(c) for c in todo]
            for o in self.objectives:
                subset = [c for c, fine in zip(todo, ok, strict=True) if fine] if o.measured else todo
                values = iter(o.evaluate(subset) if subset else ())
                for row, fine in zip(rows, ok, strict=True):
                    row[o.name] = float(next(values)) if fine or not o.measured else float("inf")
            for name in self.extra_counts:
                for row in rows:
                    row[name] = COUNTS[name](self.space, row["config"])
            for h, row in zip(new, rows, strict=True):
                self.evaluated[h] = row
        return [self.evaluated[h] for h in hashes]

    def decode(self, x: np.ndarray) -> list[dict]:
        rows = np.rint(np.atleast_2d(x)).astype(int)
        if self.allowed is not None:
            rows = np.asarray([[a[v] for a, v in zip(self.allowed, row, strict=True)] for row in rows])
        return [self.space.from_genes(row) for row in rows]

    def encode(self, genes: np.ndarray) -> np.ndarray:
        """Space genes -> this problem's variables (the index within each gene's allowed list; a
        choice the reduction dropped maps to the nearest kept one)."""
        genes = np.atleast_2d(genes)
        if self.allowed is None:
            return genes
        return np.asarray([[int(np.argmin([abs(c - g) for c in a])) for a, g in zip(self.allowed, row, strict=True)]
                           for row in genes])

    def _evaluate(self, x, out, *args, **kwargs):
        rows = self.values(self.decode(x))
        out["F"] = minimised(rows, self.objectives)
        if self.constraints:
            out["G"] = np.asarray([[c.violation(r[c.name]) for c in self.constraints] for r in rows])
