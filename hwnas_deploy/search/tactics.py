"""Search tactics that spend real measurements carefully.

`concurrent` (ConcurrentNAS, as in Intel's DyNAS-T): measure a population on the device, fit a
predictor of the measured objective on everything measured so far, run a whole evolutionary
search on the predictor (the other objectives being cheap: counts, accuracy predictors), and
measure that search's best population next; stop when the budget of real measurements is spent.
The result is the front of the measured networks, in measured values, with the hypervolume after
each iteration against the number of measurements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.search.objectives import Constraint, Objective, minimised
from hwnas_deploy.search.run import SearchResult, _Hypervolume, pareto_front, search, warm_population
from hwnas_deploy.spaces import SearchSpace


def concurrent(space: SearchSpace, measured: Objective, cheap: Sequence[Objective], constraints: Sequence[Constraint] = (),
               budget: int = 100, pop_size: int = 20, inner_generations: int = 20, estimator: str = "gbt",
               seed: int = 0, warm_start: Sequence[dict] | None = None, progress: bool = True) -> SearchResult:
    from hwnas_deploy.predictors import Predictor

    if budget < pop_size or pop_size < 4:
        raise ConfigError(f"the budget ({budget}) must cover at least one population ({pop_size}, >= 4)")
    objectives = [measured, *cheap]
    rows: dict[str, dict] = {}  # measured networks, with every objective's value

    def measure(configs: Sequence[dict]) -> None:
        todo = [c for c in configs if space.config_hash(c) not in rows][: budget - len(rows)]
        if not todo:
            return
        values = {o.name: o.evaluate(todo) for o in objectives}
        for i, cfg in enumerate(todo):
            rows[space.config_hash(cfg)] = {"config": cfg, **{n: float(v[i]) for n, v in values.items()}}

    population = [space.from_genes(g) for g in warm_population(space, warm_start or [], pop_size, seed)]
    history, hv, it = [], None, 0
    while len(rows) < budget:
        before = len(rows)
        measure(population)
        done = list(rows.values())
        if hv is None:
            hv = _Hypervolume(minimised(done, objectives))
        history.append({"iteration": it + 1, "evaluations": len(done),
                        "hypervolume": hv(minimised(pareto_front(done, objectives, constraints), objectives))})
        if len(rows) >= budget:
            break
        usable = [r for r in done if np.isfinite(r[measured.name])]
        y = np.asarray([r[measured.name] for r in usable])
        pred = Predictor(estimator, log_target=bool(np.all(y > 0))).fit(
            [r["config"] for r in usable], y, space.name, target=measured.name)
        surrogate = Objective(measured.name, measured.maximise, pred.predict, f"{estimator} on {len(usable)}")
        inner = search(space, [surrogate, *cheap], constraints, "nsga2", pop_size, inner_generations,
                       seed=seed + 1000 * (it + 1), progress=False)
        fresh = [r["config"] for r in inner.front if space.config_hash(r["config"]) not in rows]
        # the predicted front first, then random networks if it is smaller than a population
        population = [space.from_genes(g) for g in warm_population(space, fresh, pop_size, seed + it + 1)]
        if len(rows) == before:  # nothing new could be measured
            break
        it += 1
    done = list(rows.values())
    return SearchResult(pareto_front(done, objectives, constraints), len(done), history)
