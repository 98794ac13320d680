"""Search tactics that spend real measurements carefully.

A *validation* is one network measured for real: every objective whose `measured` flag is set
(`NAME=measure:DEVICE/RUNTIME`, or a ground truth in a benchmark) is evaluated on it; the other
objectives are cheap (counts, accuracy predictors) and evaluated freely. Each tactic returns the
front of the validated networks in their real values, and the hypervolume after each batch
against the number of validations.

- `full`: validate a random sample (`budget - pop_size` networks), fit a predictor of each
  measured objective on it, run one long evolutionary search on the predictors, validate that
  search's best population (`pop_size` networks).
- `concurrent` (ConcurrentNAS, as in Intel's DyNAS-T): validate a population, refit the weak
  predictors on everything validated, run a whole evolutionary search on them, validate that
  search's best population next; stop when the budget of validations is spent. Small batches
  (10) and a Gaussian-process accuracy predictor (`gp`) reach a better front for the same
  budget than batches of 25 and ridge (tools/bench_tactics.py, BENCHMARKS.md).

(`validated`, every evaluation measured, is a plain `search` whose objectives measure.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.search.objectives import COUNTS, Constraint, Objective, minimised
from hwnas_deploy.search.problem import SubnetProblem
from hwnas_deploy.search.run import SearchResult, _Hypervolume, pareto_front, search
from hwnas_deploy.spaces import SearchSpace


class _Validations:
    """The networks validated so far, within the budget; history and batches for the report."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint],
                 budget: int, progress: bool, desc: str):
        self.space, self.objectives, self.constraints, self.budget = space, list(objectives), list(constraints), budget
        self.rows: dict[str, dict] = {}
        self.history: list[dict] = []
        self.batches: list[list[dict]] = []
        self.hv: _Hypervolume | None = None
        self.bar = tqdm(total=budget, disable=not progress, unit="net", desc=desc)

    def left(self) -> int:
        return self.budget - len(self.rows)

    def validate(self, configs: Sequence[dict]) -> int:
        """Measure the configs not validated yet (as many as the budget allows); how many were new."""
        todo, seen = [], set(self.rows)
        for cfg in configs:
            h = self.space.config_hash(cfg)
            if h not in seen and len(todo) < self.left():
                seen.add(h)
                todo.append(self.space.canonical(cfg))
        if not todo:
            return 0
        values = {o.name: np.asarray(o.evaluate(todo), dtype=float) for o in self.objectives}
        names = {o.name for o in self.objectives}
        for c in self.constraints:  # constrained counts that are not objectives
            if c.name not in names and c.name in COUNTS:
                values[c.name] = np.asarray([COUNTS[c.name](self.space, cfg) for cfg in todo])
        batch = [{"config": cfg, **{n: float(v[i]) for n, v in values.items()}} for i, cfg in enumerate(todo)]
        for row in batch:
            self.rows[self.space.config_hash(row["config"])] = row
        done = list(self.rows.values())
        if self.hv is None:
            self.hv = _Hypervolume(minimised(done, self.objectives))
        front = pareto_front(done, self.objectives, self.constraints)
        self.history.append({"iteration": len(self.history) + 1, "evaluations": len(done),
                             "hypervolume": self.hv(minimised(front, self.objectives))})
        self.batches.append(batch)
        self.bar.update(len(todo))
        return len(todo)

    def surrogates(self, estimator: str | Mapping[str, str]) -> list[Objective]:
        """The objectives with each measured one replaced by a predictor fitted on every validation
        (on the logarithm of a positive target, except a cost line: it is a plane in the value)."""
        from hwnas_deploy.predictors.predictor import COST_LINES, Predictor

        out = []
        for o in self.objectives:
            if not o.measured:
                out.append(o)
                continue
            usable = [r for r in self.rows.values() if np.isfinite(r[o.name])]  # inf: could not be measured
            if len(usable) < 3:
                raise ConfigError(f"only {len(usable)} of {len(self.rows)} validated networks have a finite "
                                  f"{o.name!r}: too few to fit a predictor")
            y = np.asarray([r[o.name] for r in usable])
            name = estimator if isinstance(estimator, str) else estimator.get(o.name, "gbt")
            # a cost line is a plane in the target itself: fitted to its logarithm it bends, and
            # overestimated the smallest networks' latency by 27 % (BENCHMARKS.md "Search tactics")
            log = bool(np.all(y > 0)) and name not in COST_LINES
            pred = Predictor(name, log_target=log).fit([r["config"] for r in usable], y, self.space.name,
                                                       target=o.name)
            out.append(Objective(o.name, o.maximise, pred.predict, f"{name} on {len(usable)} validations",
                                 std=pred.predict_std))
        return out

    def front_configs(self) -> list[dict]:
        """The validated front: where the next predictor search starts (real values, not predicted)."""
        return [r["config"] for r in pareto_front(list(self.rows.values()), self.objectives, self.constraints)]

    def result(self) -> SearchResult:
        self.bar.close()
        done = list(self.rows.values())
        return SearchResult(pareto_front(done, self.objectives, self.constraints), len(done), self.history,
                            self.batches)


def _random_configs(problem: SubnetProblem, n: int, rng: np.random.Generator, first: Sequence[dict] = (),
                    exclude: Sequence[str] = ()) -> list[dict]:
    """`first` (distinct, not excluded), then random networks of the (possibly reduced) space, n in
    all; only networks that meet the constraints on counts (the others would waste a validation)."""
    space = problem.space
    out, seen = [], set(exclude)
    for cfg in first:
        h = space.config_hash(cfg)
        if h not in seen and len(out) < n and problem.cheap_ok(cfg):
            seen.add(h)
            out.append(space.canonical(cfg))
    for _ in range(200 * n):
        if len(out) >= n:
            break
        cfg = problem.decode(rng.integers(0, problem.xu + 1))[0]
        if space.config_hash(cfg) not in seen:
            seen.add(space.config_hash(cfg))
            if problem.cheap_ok(cfg):
                out.append(cfg)
    return out


def _extremes(problem: SubnetProblem) -> list[dict]:
    """The smallest and the largest network of the (reduced) space: every choice at its first, then
    at its last value. Predictors extrapolate badly, so the first sample anchors both ends."""
    return problem.decode(np.vstack([problem.xl, problem.xu]))


def _check(objectives: Sequence[Objective], budget: int, pop_size: int, minimum: int) -> None:
    if not any(o.measured for o in objectives):
        raise ConfigError("the tactic needs at least one measured objective (NAME=measure:DEVICE/RUNTIME)")
    if pop_size < 4 or budget < minimum:
        raise ConfigError(f"the budget ({budget}) must be at least {minimum} validations with a population of "
                          f"{pop_size} (>= 4)")


def _spread(surrogates: Sequence[Objective], cands: Sequence[dict], objectives: Sequence[Objective]
            ) -> np.ndarray | None:
    """Per candidate and objective, the predictors' standard deviation (0 where a predictor has
    none); None when no predictor has one, or with other than two objectives."""
    if len(objectives) != 2:
        return None
    configs = [c["config"] for c in cands]
    cols = []
    for o in objectives:
        s = next((p for p in surrogates if p.name == o.name), None)
        std = s.std(configs) if s is not None and s.std is not None else None
        cols.append(np.zeros(len(cands)) if std is None else np.asarray(std, dtype=float))
    out = np.column_stack(cols)
    return out if np.any(out > 0) else None


def hypervolume_gain_2d(front: np.ndarray, points: np.ndarray, ref: float = 1.1) -> np.ndarray:
    """Hypervolume each point (minimised, normalised) adds to a 2-objective front, all at once:
    the area under the front's staircase and above the point, right of it, inside the box."""
    f = front[np.all(front < ref, axis=1)] if len(front) else front
    f = f[np.argsort(f[:, 0], kind="stable")] if len(f) else np.zeros((0, 2))
    xs, hs = [-np.inf], [ref]  # segment starts and the staircase height on each
    for x, y in f:
        if y < hs[-1]:
            xs.append(x)
            hs.append(y)
    starts, heights = np.asarray(xs), np.asarray(hs)
    ends = np.append(starts[1:], ref)
    a, b = points[..., 0:1], points[..., 1:2]
    width = np.clip(np.minimum(ends, ref) - np.maximum(starts, a), 0, None)
    return np.sum(width * np.clip(heights - b, 0, None), axis=-1)


def expected_gain_2d(front: np.ndarray, mean: np.ndarray, std: np.ndarray, samples: int = 16) -> np.ndarray:
    """Expected hypervolume improvement of each candidate with independent normal predictions
    (`mean`, `std`, minimised and normalised), averaged over fixed quantiles."""
    from scipy.stats import norm

    z = norm.ppf((np.arange(samples) + 0.5) / samples)
    uncertain = np.any(std > 0, axis=0)
    grid = np.stack(np.meshgrid(z if uncertain[0] else [0.0], z if uncertain[1] else [0.0], indexing="ij"),
                    -1).reshape(-1, 2)  # independent objectives: every pair of quantiles
    draws = mean[:, None, :] + std[:, None, :] * grid[None, :, :]  # candidates x draws x 2
    return hypervolume_gain_2d(front, draws).mean(axis=1)


def _next_batch(val: _Validations, inner: SearchResult, problem: SubnetProblem, n: int,
                rng: np.random.Generator, by_gain: bool = True,
                surrogates: Sequence[Objective] | None = None) -> list[dict]:
    """n networks the predictors expect to improve the validated front most (`by_gain`): greedily,
    the candidate (the inner search's front and last population) whose predicted values add the
    most hypervolume to the validated front plus the candidates already chosen; once none is
    expected to add any (or without `by_gain`), the rest spread evenly along the predicted front,
    then random networks. Spreading suits a single last batch (`full`): the gains are predicted,
    and a refit cannot correct a batch spent where the predictors were wrong."""
    space = problem.space
    seen, cands = set(val.rows), []
    for row in [*inner.front, *(inner.populations or [[]])[-1]]:
        h = space.config_hash(row["config"])
        if h not in seen and problem.cheap_ok(row["config"]) and all(np.isfinite(row[o.name])
                                                                      for o in val.objectives):
            seen.add(h)
            cands.append(row)
    hv = val.hv
    base = minimised(pareto_front(list(val.rows.values()), val.objectives, val.constraints), val.objectives)
    pred = minimised(cands, val.objectives) if cands else np.zeros((0, len(val.objectives)))
    feasible = [all(r[c.name] <= c.limit for c in val.constraints) for r in cands]
    spread = _spread(surrogates, cands, val.objectives) if surrogates and cands else None
    chosen: list[int] = []
    current = base
    while by_gain and len(chosen) < n and cands:
        if spread is not None:  # expected improvement over the predictive distribution
            gains = expected_gain_2d((current - hv.lo) / hv.span, (pred - hv.lo) / hv.span, spread / hv.span)
            gains = [g if i not in chosen and feasible[i] else -1.0 for i, g in enumerate(gains)]
        else:
            start = hv(current)
            gains = [hv(np.vstack([current, pred[i:i + 1]])) - start if i not in chosen and feasible[i] else -1.0
                     for i in range(len(cands))]
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            break
        chosen.append(best)
        current = np.vstack([current, pred[best:best + 1]])  # believed at its mean (kriging believer)
    picked = [cands[i]["config"] for i in chosen]
    fresh = [r["config"] for r in inner.front if space.config_hash(r["config"]) not in val.rows
             and r["config"] not in picked]
    left = n - len(picked)
    if len(fresh) > left > 0:
        fresh = [fresh[i] for i in np.unique(np.linspace(0, len(fresh) - 1, left).round().astype(int))]
    candidates = picked + fresh + [r["config"] for r in (inner.populations or [[]])[-1]]
    return _random_configs(problem, n, rng, candidates, exclude=list(val.rows))


def concurrent(space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
               budget: int = 100, pop_size: int = 20, inner_generations: int = 20,
               estimator: str | Mapping[str, str] = "gbt", seed: int = 0, warm_start: Sequence[dict] | None = None,
               allowed: Sequence[Sequence[int]] | None = None, progress: bool = True,
               inner_pop: int | None = None, expected_gain: bool = False) -> SearchResult:
    """`estimator`: the predictor refitted each iteration (one name, or one per measured objective);
    `inner_pop`: the predictor search's population [4 x pop_size: its front is what the next
    population is spread along, and a small population finds a poor front]; `expected_gain`:
    choose each batch by the expected hypervolume gain over the predictors' uncertainty (two
    objectives, a predictor with a standard deviation: `gp`) instead of the gain of the means."""
    _check(objectives, budget, pop_size, pop_size)
    problem = SubnetProblem(space, objectives, constraints, allowed)
    rng = np.random.default_rng(seed)
    val = _Validations(space, objectives, constraints, budget, progress, f"concurrent {space.name}")
    batch = _random_configs(problem, pop_size, rng, [*(warm_start or []), *_extremes(problem)])
    it = 0
    while val.left() > 0 and val.validate(batch):
        if val.left() == 0:
            break
        it += 1
        surrogates = val.surrogates(estimator)
        inner = search(space, surrogates, constraints, "nsga2", inner_pop or 4 * pop_size,
                       inner_generations, seed=seed + 1000 * it, progress=False, allowed=allowed,
                       warm_start=val.front_configs())
        batch = _next_batch(val, inner, problem, min(pop_size, val.left()), rng,
                            surrogates=surrogates if expected_gain else None)
    return val.result()


def full(space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
         budget: int = 100, pop_size: int = 20, generations: int = 100, estimator: str | Mapping[str, str] = "gbt",
         seed: int = 0, warm_start: Sequence[dict] | None = None, allowed: Sequence[Sequence[int]] | None = None,
         progress: bool = True, inner_pop: int | None = None) -> SearchResult:
    """`budget - pop_size` validations train the predictors; `pop_size` validate the search's result
    (spread along the front of a predictor search with population `inner_pop` [4 x pop_size])."""
    _check(objectives, budget, pop_size, pop_size + 4)
    problem = SubnetProblem(space, objectives, constraints, allowed)
    rng = np.random.default_rng(seed)
    val = _Validations(space, objectives, constraints, budget, progress, f"full {space.name}")
    val.validate(_random_configs(problem, budget - pop_size, rng, [*(warm_start or []), *_extremes(problem)]))
    inner = search(space, val.surrogates(estimator), constraints, "nsga2", inner_pop or 4 * pop_size, generations,
                   seed=seed + 1, progress=False, allowed=allowed)
    val.validate(_next_batch(val, inner, problem, val.left(), rng, by_gain=False))
    return val.result()
