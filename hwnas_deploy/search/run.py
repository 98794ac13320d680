"""Run a search: generations of an algorithm on a SubnetProblem, with a resumable checkpoint.

After every generation the checkpoint (JSON, checksummed; no pickles) holds every network
evaluated with its values, and each generation's population; where generations take less than
ten times the write itself (a search on counts or predictors, thousands of networks), it is
written at most once a second and after the last generation, so that writing stays a tenth of
the run (a kill then loses at most a second of proposals, which replaying redoes at no cost). A killed search started again with
the same checkpoint replays the algorithm from its seed: every network it proposes again is
answered from the checkpoint, so nothing is evaluated twice, and the run continues exactly as an
uninterrupted one would (same seed, same proposals, same front). Replaying costs the algorithm's
own bookkeeping (milliseconds a generation), never an evaluation. The result is the non-dominated
set of every feasible network evaluated (not only the last population), and the hypervolume of
that set after each generation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from tqdm import tqdm

from hwnas_deploy import datafile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.search.algorithms import make_algorithm
from hwnas_deploy.search.objectives import Constraint, Objective, minimised
from hwnas_deploy.search.problem import SubnetProblem
from hwnas_deploy.spaces import SearchSpace

FORMAT, VERSION = "hwnas-search-checkpoint", 2  # 2: replayed on resume, populations kept


@dataclass
class SearchResult:
    front: list[dict]  # {"config", objective values...}, sorted by the first objective
    evaluations: int  # distinct networks evaluated
    history: list[dict] = field(default_factory=list)  # per generation: gen, evaluations, hypervolume
    populations: list[list[dict]] = field(default_factory=list)  # per generation (tactics: per batch measured)


def pareto_front(rows: Sequence[dict], objectives: Sequence[Objective],
                 constraints: Sequence[Constraint] = ()) -> list[dict]:
    feasible = [r for r in rows if all(r[c.name] <= c.limit for c in constraints)
                and all(np.isfinite(r[o.name]) for o in objectives)]  # inf: could not be measured
    if not feasible:
        return []
    f = minimised(feasible, objectives)
    front = NonDominatedSorting().do(f, only_non_dominated_front=True)
    return sorted((feasible[i] for i in front), key=lambda r: r[objectives[0].name])


class _Hypervolume:
    """Hypervolume of the front in objectives normalised by the first generation's range (fixed
    afterwards, so values compare across generations and runs with the same first generation)."""

    def __init__(self, f0: np.ndarray):
        f0 = f0[np.all(np.isfinite(f0), axis=1)]
        lo = f0.min(0) if len(f0) else np.zeros(f0.shape[1])
        span = f0.max(0) - lo if len(f0) else np.ones(f0.shape[1])
        self.lo = np.asarray(lo, dtype=float)
        self.span = np.where(np.asarray(span, dtype=float) > 0, span, 1.0)
        self.hv = HV(ref_point=np.full(len(self.lo), 1.1))

    def __call__(self, f: np.ndarray) -> float:
        return float(self.hv((f - self.lo) / self.span)) if len(f) else 0.0

    def distance(self, f: np.ndarray, reference: np.ndarray) -> float:
        """Generational distance: mean distance of the front's points to the nearest reference point."""
        from pymoo.indicators.gd import GD

        return float(GD((reference - self.lo) / self.span)((f - self.lo) / self.span)) if len(f) else float("inf")


def warm_population(space: SearchSpace, configs: Sequence[dict], pop_size: int, seed: int) -> np.ndarray:
    """Genes of a first population: the given configs (an earlier run's front: another device,
    other settings), distinct and at most pop_size, then random networks to fill it."""
    genes, seen = [], set()
    for cfg in configs:
        h = space.config_hash(cfg)
        if h not in seen and len(genes) < pop_size:
            seen.add(h)
            genes.append(space.genes(space.canonical(cfg)))
    rng = np.random.default_rng(seed)
    while len(genes) < pop_size:
        cfg = space.sample(rng)
        if space.config_hash(cfg) not in seen:
            seen.add(space.config_hash(cfg))
            genes.append(space.genes(cfg))
    return np.vstack(genes)


def search(space: SearchSpace, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
           algorithm: str = "nsga2", pop_size: int = 50, generations: int = 20, seed: int = 0,
           checkpoint: str | Path | None = None, progress: bool = True,
           warm_start: Sequence[dict] | None = None, allowed: Sequence[Sequence[int]] | None = None,
           reference: Sequence[dict] | None = None) -> SearchResult:
    """`warm_start`: configs that make the first population (the rest random), e.g. the front
    of an earlier search on another device; ignored when resuming from a checkpoint.
    `allowed`: a reduced space (per gene, the choice indices kept; `search/reduction.py`).
    `reference`: a reference front (rows with the objectives' values, e.g. a long run's front.json):
    the history then also holds the generational distance to it, in the hypervolume's normalisation."""
    if pop_size < 4 or generations < 1:
        raise ConfigError(f"pop_size must be >= 4 and generations >= 1, got {pop_size} and {generations}")
    problem = SubnetProblem(space, objectives, constraints, allowed)
    warm_hashes = sorted(space.config_hash(c) for c in warm_start or [])
    spec = {"space": space.name, "objectives": [o.source for o in objectives],
            "constraints": [f"{c.name}<={c.limit}" for c in constraints], "algorithm": algorithm,
            "pop_size": pop_size, "seed": seed, "allowed": problem.allowed,
            "warm_start": datafile.digest({"hashes": warm_hashes}) if warm_hashes else None}
    done, counts = 0, []
    if checkpoint and Path(checkpoint).exists():
        state = datafile.read(checkpoint, FORMAT, VERSION, "search checkpoint")
        if state["spec"] != spec:
            raise ConfigError(f"{checkpoint}: a checkpoint of another search ({state['spec']}); use a new file")
        problem.evaluated = dict(state["evaluated"])
        done = state["generation"]
        counts = [h["evaluations"] for h in state["history"]]  # evaluated, in order, by each generation
    first = problem.encode(warm_population(space, warm_start, pop_size, seed)) if warm_start else None

    algo = make_algorithm(algorithm, pop_size, len(objectives), sampling=first)
    algo.setup(problem, termination=("n_gen", generations), seed=seed, verbose=False)
    history, populations, hv = [], [], None
    front, seen = [], 0  # the front of the first `seen` rows evaluated: each generation adds its new rows
    last_write, write_s = time.monotonic(), 0.0
    bar = tqdm(total=generations, disable=not progress, unit="gen", desc=f"{algorithm} {space.name}")
    try:
        for gen in range(generations):
            if done and gen in (0, done):
                bar.set_postfix_str("replaying the checkpoint" if gen == 0 else "")
            started = time.monotonic()
            algo.next()
            population = algo.pop.get("X").astype(int)
            pop_rows = problem.values(problem.decode(population))
            rows = list(problem.evaluated.values())
            if gen < done:
                rows = rows[: counts[gen]]
            # the non-dominated set of all rows is that of the previous front plus the new rows
            front = pareto_front(front + rows[seen:], objectives, constraints)
            seen = len(rows)
            if hv is None:
                hv = _Hypervolume(minimised(rows, objectives))
            history.append({"generation": gen + 1, "evaluations": len(rows),
                            "hypervolume": hv(minimised(front, objectives))})
            populations.append(pop_rows)
            if reference:
                history[-1]["gd"] = hv.distance(minimised(front, objectives), minimised(reference, objectives))
            now = time.monotonic()
            cheap = now - started < 10 * write_s and now - last_write < 1.0
            if checkpoint and gen + 1 > done and (gen + 1 == generations or not cheap):
                datafile.write(checkpoint, {
                    "format": FORMAT, "version": VERSION, "spec": spec, "generation": gen + 1,
                    "evaluated": problem.evaluated, "history": history,
                    "populations": [[space.config_hash(r["config"]) for r in p] for p in populations]})
                last_write, write_s = time.monotonic(), time.monotonic() - now
            bar.update(1)
    finally:
        bar.close()
    rows = list(problem.evaluated.values())
    return SearchResult(pareto_front(rows, objectives, constraints), len(rows), history, populations)


def plot_result(result: SearchResult, objectives: Sequence[Objective], path: str | Path) -> Path:
    """Three panels: the front on the first two objectives; the hypervolume against the networks
    evaluated (for tactics: measured); each generation's population, coloured by generation."""
    from hwnas_deploy.report.figures import new_figure, save_figure

    fig, (ax0, ax1, ax2) = new_figure(1, 3, figsize=(15, 4.2))
    two = len(objectives) >= 2
    a, b = (objectives[0].name, objectives[1].name) if two else (objectives[0].name, None)
    if two and result.front:
        ax0.plot([r[a] for r in result.front], [r[b] for r in result.front], "o-", ms=4)
        ax0.set_xlabel(a)
        ax0.set_ylabel(b)
    ax0.set_title(f"front: {len(result.front)} networks")
    ax1.plot([h["evaluations"] for h in result.history], [h["hypervolume"] for h in result.history], "o-", ms=3)
    ax1.set_xlabel("networks evaluated")
    ax1.set_ylabel("hypervolume (normalised)")
    ax1.set_title("hypervolume")
    if two and result.populations:
        import matplotlib as mpl

        cmap, n = mpl.colormaps["viridis"], len(result.populations)
        for g, pop in enumerate(result.populations):
            pts = [(r[a], r[b]) for r in pop if np.isfinite(r[a]) and np.isfinite(r[b])]
            if pts:
                x, y = zip(*pts, strict=True)
                ax2.scatter(x, y, s=8, color=cmap(g / max(1, n - 1)), alpha=0.7)
        fig.colorbar(mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(1, max(2, n)), cmap=cmap), ax=ax2,
                     label="generation")
        ax2.set_xlabel(a)
        ax2.set_ylabel(b)
    ax2.set_title("population by generation")
    return save_figure(fig, path)


def html_report(result: SearchResult, objectives: Sequence[Objective], png: str | Path, path: str | Path,
                title: str) -> Path:
    """One page: the plot, the front (values and config hashes) and the hypervolume history."""
    import html

    from hwnas_deploy.spaces import config_to_json

    names = [o.name for o in objectives]
    head = "".join(f"<th>{html.escape(n)}{' (max)' if o.maximise else ''}</th>" for n, o in zip(names, objectives,
                                                                                                   strict=True))
    front = "".join(
        "<tr>" + "".join(f"<td>{r[n]:.6g}</td>" for n in names)
        + f"<td><code>{html.escape(config_to_json(r['config']))}</code></td></tr>" for r in result.front)
    hist = "".join(f"<tr><td>{h.get('generation', h.get('iteration'))}</td><td>{h['evaluations']}</td>"
                   f"<td>{h['hypervolume']:.4f}</td></tr>" for h in result.history)
    page = f"""<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}code{{font-size:75%}}</style>
<h1>{html.escape(title)}</h1>
<p>{result.evaluations} networks evaluated; {len(result.front)} on the front.</p>
<img src="{html.escape(Path(png).name)}" alt="front and hypervolume">
<h2>Front</h2><table><tr>{head}<th>config</th></tr>{front}</table>
<h2>Hypervolume</h2><table><tr><th>step</th><th>evaluated</th><th>hypervolume</th></tr>{hist}</table>
"""
    path = Path(path)
    path.write_text(page)
    return path
