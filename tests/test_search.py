"""Search: NSGA-II against random search on a real accuracy predictor, duplicates, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymoo.indicators.hv import HV

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.predictors import Predictor, from_csv
from hwnas_deploy.search import Objective, SubnetProblem, parse_constraint, parse_objective, search
from hwnas_deploy.spaces import get_space

from .conftest import DYNAST_DIR, run_cli

SPACE = "ofa-mbv3-w1.0"


@pytest.fixture(scope="module")
def acc_predictor(tmp_path_factory):
    """Ridge on 200 rows of DyNAS-T's real ImageNet accuracies of OFA MobileNetV3 sub-networks."""
    data = from_csv(DYNAST_DIR, SPACE, "Top-1 Acc (%)")
    idx = np.random.default_rng(0).permutation(len(data))[:200]
    path = tmp_path_factory.mktemp("search") / "acc.json"
    Predictor("ridge").fit([data.configs[i] for i in idx], data.y[idx], SPACE, "accuracy").save(path)
    return path


def counting(space, name="macs"):
    """The MACs objective, counting the networks it is asked about."""
    seen = []

    def evaluate(configs):
        seen.extend(space.config_hash(c) for c in configs)
        return np.asarray([float(space.macs(c)) for c in configs])

    return Objective(name, False, evaluate, name), seen


def common_hv(fronts, objectives):
    """Hypervolume of each front in one normalisation (all fronts' bounds), minimisation form."""
    f = [np.asarray([[-r[o.name] if o.maximise else r[o.name] for o in objectives] for r in fr]) for fr in fronts]
    allf = np.vstack(f)
    lo, span = allf.min(0), np.ptp(allf, 0)
    hv = HV(ref_point=np.full(allf.shape[1], 1.1))
    return [float(hv((x - lo) / span)) for x in f]


def test_nsga2_beats_random_search_on_the_same_budget(acc_predictor):
    sp = get_space(SPACE)
    objectives = [parse_objective(f"accuracy=predictor:{acc_predictor}", sp), parse_objective("macs", sp)]
    assert objectives[0].maximise and not objectives[1].maximise
    runs = {a: search(sp, objectives, (), a, pop_size=24, generations=12, seed=1, progress=False)
            for a in ("nsga2", "random")}
    hv = dict(zip(runs, common_hv([r.front for r in runs.values()], objectives), strict=True))
    assert abs(runs["nsga2"].evaluations - runs["random"].evaluations) < 24  # the same budget
    assert hv["nsga2"] > hv["random"] * 1.05, hv  # measured: 1.025 vs 0.903 (1.13x)
    h = runs["nsga2"].history
    assert len(h) == 12 and all(b["hypervolume"] >= a["hypervolume"] - 1e-12 for a, b in zip(h, h[1:], strict=False))
    front = runs["nsga2"].front
    acc, macs = [r["accuracy"] for r in front], [r["macs"] for r in front]
    assert macs == sorted(macs) and acc == sorted(acc)  # a front: more MACs buy accuracy
    # generational distance to a reference front (here the run's own final front): 0 at the end
    again = search(get_space(SPACE), objectives, (), "nsga2", pop_size=24, generations=12, seed=1, progress=False,
                   reference=front)
    gd = [h["gd"] for h in again.history]
    assert gd[-1] == pytest.approx(0.0, abs=1e-12) and gd[0] > 0


@pytest.mark.parametrize("algorithm", ["agemoea", "unsga3"])
def test_other_algorithms_run_and_beat_random(acc_predictor, algorithm):
    sp = get_space(SPACE)
    objectives = [parse_objective(f"accuracy=predictor:{acc_predictor}", sp), parse_objective("macs", sp)]
    runs = [search(sp, objectives, (), a, pop_size=24, generations=12, seed=1, progress=False)
            for a in (algorithm, "random")]
    hv = common_hv([r.front for r in runs], objectives)
    assert hv[0] > hv[1], hv


def test_duplicates_are_evaluated_once_and_constraints_hold():
    sp = get_space(SPACE)
    macs, seen = counting(sp)
    problem = SubnetProblem(sp, [macs, Objective("params", False, lambda cs: np.asarray(
        [float(sp.params_count(c)) for c in cs]), "params")], [parse_constraint("macs<=300e6")])
    cfg = sp.canonical(sp.sample(3))
    genes = sp.genes(cfg)
    unused = sp.unused_genes(cfg)
    assert unused  # this config has genes its shallow stages ignore
    other = genes.copy()
    name, idx = next(iter(unused.items()))
    pos = sum(p.length for p in sp.params[: [p.name for p in sp.params].index(name)]) + idx[0]
    other[pos] = (other[pos] + 1) % (sp.gene_bounds()[1][pos] + 1)
    out = problem.evaluate(np.vstack([genes, other, genes]), return_as_dictionary=True)
    assert len(seen) == 1 and len(problem.evaluated) == 1 and out["F"].shape == (3, 2)
    assert np.all(out["G"][:, 0] == sp.macs(cfg) - 300e6)
    result = search(sp, [macs, parse_objective("params", sp)], [parse_constraint("macs<=300e6")], "nsga2",
                    pop_size=16, generations=4, seed=0, progress=False)
    assert result.front and all(r["macs"] <= 300e6 for r in result.front)
    assert len(seen) == len(set(seen))  # no network evaluated twice across the whole run


def test_a_killed_search_resumes_from_its_checkpoint(tmp_path):
    """Stopped after 3 of 6 generations and started again (a new process: nothing in memory), the
    search evaluates nothing twice and ends with the front an uninterrupted run finds."""
    sp = get_space("mcu-mbnet")
    ck = tmp_path / "ck.json"
    macs, seen = counting(sp)
    objs = [macs, parse_objective("sram", sp)]
    first = search(sp, objs, (), "nsga2", pop_size=12, generations=3, seed=5, checkpoint=ck, progress=False)
    n_first = len(seen)
    state = json.loads(ck.read_text())
    assert state["generation"] == 3 and len(state["evaluated"]) == first.evaluations == n_first
    assert len(state["populations"]) == 3 and all(len(p) == 12 for p in state["populations"])
    macs2, seen2 = counting(sp)
    resumed = search(sp, [macs2, objs[1]], (), "nsga2", pop_size=12, generations=6, seed=5, checkpoint=ck,
                     progress=False)
    assert [h["generation"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert resumed.history[:3] == first.history
    assert not set(seen2) & set(seen)  # nothing evaluated before was evaluated again
    assert resumed.evaluations == n_first + len(seen2) and seen2
    uninterrupted = search(sp, [parse_objective("macs", sp), objs[1]], (), "nsga2", pop_size=12, generations=6,
                           seed=5, progress=False)
    assert uninterrupted.history == resumed.history
    assert [r["config"] for r in uninterrupted.front] == [r["config"] for r in resumed.front]
    again = search(sp, [macs2, objs[1]], (), "nsga2", pop_size=12, generations=6, seed=5, checkpoint=ck,
                   progress=False)  # finished: a rerun replays and evaluates nothing
    assert len(seen2) == resumed.evaluations - n_first and again.history == resumed.history
    with pytest.raises(ConfigError, match="a checkpoint of another search"):
        search(sp, objs, (), "nsga2", pop_size=16, generations=6, seed=5, checkpoint=ck, progress=False)


def test_bad_specs_are_clear_errors(acc_predictor):
    sp = get_space("mcu-mbnet")
    with pytest.raises(ConfigError, match="expected NAME<=LIMIT"):
        parse_constraint("latency < 50")
    with pytest.raises(ConfigError, match="give one of macs, params, sram"):
        parse_objective("flops", sp)
    with pytest.raises(ConfigError, match="the predictor is for space 'ofa-mbv3-w1.0', the search for 'mcu-mbnet'"):
        parse_objective(f"accuracy=predictor:{acc_predictor}", sp)
    with pytest.raises(ConfigError, match="constraint on 'latency': not an objective"):
        SubnetProblem(sp, [parse_objective("macs", sp)], [parse_constraint("latency<=5")])


def test_cli_search_writes_front_plot_and_resumes(acc_predictor, tmp_path):
    args = ["search", "--space", SPACE, "--objective", f"accuracy=predictor:{acc_predictor}", "--objective", "macs",
            "--constraint", "macs<=400e6", "--pop", "12", "--generations", "3", "--out", "s", "--quiet"]
    out = run_cli(*args, cwd=tmp_path, check=True).stdout
    assert "networks evaluated; front of" in out
    front = json.loads((tmp_path / "s" / "front.json").read_text())
    assert front["front"] and all(r["macs"] <= 400e6 for r in front["front"]) and len(front["history"]) == 3
    assert (tmp_path / "s" / "front.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "s" / "report.html").read_text()
    assert '<img src="front.png"' in page and page.count("<tr>") == 1 + len(front["front"]) + 1 + 3
    more = run_cli(*[a if a != "3" else "5" for a in args], cwd=tmp_path, check=True)
    assert len(json.loads((tmp_path / "s" / "front.json").read_text())["history"]) == 5 and more.returncode == 0
    ref = run_cli(*[a if a != "s" else "g" for a in args], "--reference", "s/front.json", cwd=tmp_path, check=True)
    assert ref.returncode == 0 and all("gd" in h for h in json.loads((tmp_path / "g" / "front.json").read_text())[
        "history"])
    reduced = run_cli("search", "--space", SPACE, "--objective", "macs", "--objective", "params", "--pop", "8",
                      "--generations", "2", "--popdb", "s/checkpoint.json", "--prune", "0.3:macs", "--out", "r",
                      "--quiet", cwd=tmp_path, check=True)
    assert "reduced space:" in reduced.stderr and (tmp_path / "r" / "front.json").exists()
    bad = run_cli("search", "--space", SPACE, "--objective", "macs", "--prune", "most:macs", "--out", "b",
                  cwd=tmp_path)
    assert bad.returncode == 2 and "expected SHARE:OBJECTIVE" in bad.stderr


def test_a_lut_objective_and_its_constraint(tmp_path):
    """latency=lut:FILE: a LUT over every block the search can meet (here mcu-mbnet's, each block
    costed by its MACs: a table, as a measured one would be) drives the objective and constraint."""
    from hwnas_deploy.predictors.lut import LatencyLUT

    sp = get_space("mcu-mbnet")
    keys = {}
    for cfg in sp.sample_unique(400, 0):
        for b in sp.blocks(cfg):
            keys[b.key()] = 1e-6 * b.macs() + 0.01
    lut = LatencyLUT(sp.name, "table", "none", 1, 1, keys, (0.2, 1.0))
    lut.save(tmp_path / "lut.json")
    objective = parse_objective(f"latency=lut:{tmp_path / 'lut.json'}", sp)
    cfgs = sp.sample_unique(5, 0)
    np.testing.assert_allclose(objective.evaluate(cfgs), lut.predict(cfgs))
    cfg = cfgs[0]
    limit = float(lut.predict([cfg])[0])
    problem = SubnetProblem(sp, [objective, parse_objective("sram", sp)], [parse_constraint(f"latency<={limit}")])
    out = problem.evaluate(np.vstack([sp.genes(cfg)]), return_as_dictionary=True)
    assert out["G"][0, 0] == pytest.approx(0.0) and out["F"][0, 0] == pytest.approx(limit)


def test_warm_start_really_seeds_the_first_population(acc_predictor):
    """DyNAS-T's warm start was silently off; here the earlier front is what generation 1 evaluates
    first, and the run starts from its hypervolume rather than from a random population's."""
    sp = get_space(SPACE)
    acc = parse_objective(f"accuracy=predictor:{acc_predictor}", sp)
    earlier = search(sp, [acc, parse_objective("macs", sp)], (), "nsga2", pop_size=24, generations=10, seed=3,
                     progress=False)
    macs, seen = counting(sp)
    objectives = [acc, macs]
    warm = search(sp, objectives, (), "nsga2", pop_size=24, generations=1, seed=9, progress=False,
                  warm_start=[r["config"] for r in earlier.front])
    cold = search(sp, objectives, (), "nsga2", pop_size=24, generations=1, seed=9, progress=False)
    front_hashes = [sp.config_hash(r["config"]) for r in earlier.front][:24]
    assert seen[: len(front_hashes)] == front_hashes  # the first networks evaluated are the earlier front
    hv_warm, hv_cold = common_hv([warm.front, cold.front], objectives)
    assert hv_warm > hv_cold


def test_validated_search_measures_every_evaluation_on_the_device(tmp_path):
    """latency=measure:local-cpu/onnxruntime: each network the search evaluates is exported,
    measured with onnxruntime on this machine and stored; a rerun measures nothing again."""
    from hwnas_deploy.store import Store

    sp = get_space("mcu-mbnet")
    with Store(str(tmp_path / "s.sqlite")) as store:
        latency = parse_objective("latency=measure:local-cpu/onnxruntime", sp, store)
        objs = [latency, parse_objective("sram", sp)]
        result = search(sp, objs, (), "nsga2", pop_size=6, generations=2, seed=0, progress=False)
        rows = store.measurements(device="local-cpu", space="mcu-mbnet", runtime="onnxruntime")
        assert len(rows) == result.evaluations and result.evaluations >= 6
        stored = {r["config_hash"]: r["median_ms"] for r in rows}
        assert all(r["latency"] == stored[sp.config_hash(r["config"])] for r in result.front)
        again = search(sp, objs, (), "nsga2", pop_size=6, generations=2, seed=0, progress=False)
        assert len(store.measurements(device="local-cpu", space="mcu-mbnet", runtime="onnxruntime",
                                      latest_only=False)) == len(rows)
        assert [r["latency"] for r in again.front] == [r["latency"] for r in result.front]
    with pytest.raises(ConfigError, match="measurements need a store"):
        parse_objective("latency=measure:local-cpu/onnxruntime", sp)


def test_concurrent_spends_its_budget_better_than_random(acc_predictor):
    """ConcurrentNAS with 'sram' as the expensive objective (counted: the tactic may evaluate it
    only `budget` times) against the same number of random networks, on DyNAS-T accuracy."""
    from hwnas_deploy.search.tactics import concurrent

    sp = get_space(SPACE)
    acc = parse_objective(f"accuracy=predictor:{acc_predictor}", sp)
    seen = []

    def sram(configs):
        seen.extend(sp.config_hash(c) for c in configs)
        return np.asarray([float(sp.peak_activation_bytes(c, 1)) for c in configs])

    expensive = Objective("sram", False, sram, "sram", measured=True)
    result = concurrent(sp, [expensive, acc], budget=60, pop_size=12, inner_generations=10, estimator="ridge",
                        seed=2, progress=False)
    assert len(seen) == len(set(seen)) == result.evaluations == 60
    assert [h["evaluations"] for h in result.history] == [12, 24, 36, 48, 60]
    rng = np.random.default_rng(2)
    rand = [sp.sample(rng) for _ in range(60)]
    rand_rows = [{"config": c, "sram": float(sp.peak_activation_bytes(c, 1)),
                  "accuracy": float(acc.evaluate([c])[0])} for c in rand]
    from hwnas_deploy.search import pareto_front

    objs = [expensive, acc]
    hv_c, hv_r = common_hv([result.front, pareto_front(rand_rows, objs)], objs)
    assert hv_c > 1.15 * hv_r, (hv_c, hv_r)  # measured: 1.166 vs 0.867 (1.35x)


def test_cli_concurrent_measures_exactly_its_budget(tmp_path):
    from hwnas_deploy.store import Store

    out = run_cli("search", "--space", "mcu-mbnet", "--tactic", "concurrent", "--objective",
                  "latency=measure:local-cpu/onnxruntime", "--objective", "sram", "--budget", "8", "--pop", "4",
                  "--generations", "3", "--estimator", "ridge", "--db", "s.sqlite", "--out", "c", "--quiet",
                  cwd=tmp_path, check=True).stdout
    assert out.startswith("8 networks validated")
    with Store(str(tmp_path / "s.sqlite")) as store:
        assert len(store.measurements(device="local-cpu", space="mcu-mbnet", runtime="onnxruntime")) == 8
    bad = run_cli("search", "--space", "mcu-mbnet", "--tactic", "concurrent", "--objective", "macs", "--objective",
                  "sram", "--out", "d", cwd=tmp_path)
    assert bad.returncode == 2 and "tactic 'concurrent' needs an objective measured on a device" in bad.stderr


def test_popdb_keeps_what_earlier_populations_used_and_the_search_stays_inside():
    from hwnas_deploy.search.reduction import popdb

    sp = get_space("mcu-mbnet")
    earlier = sp.sample_unique(60, 1)
    for c in earlier:
        c["ks"][0] = 7  # every earlier network chose 7 for the first kernel
    allowed = popdb(sp, earlier, threshold=0.05)
    assert allowed[0] == [sp.param("ks").choices.index(7)]
    assert all(len(a) >= 2 for a in allowed[1:])  # the random genes keep their choices
    result = search(sp, [parse_objective("macs", sp), parse_objective("sram", sp)], (), "nsga2", pop_size=12,
                    generations=3, seed=0, progress=False, allowed=allowed)
    assert result.front and all(r["config"]["ks"][0] == 7 for r in result.front)
    with pytest.raises(ConfigError, match="PopDB needs at least 10 earlier networks"):
        popdb(sp, earlier[:5])


def test_efficiency_pruning_drops_the_least_efficient_choice_per_gene():
    from hwnas_deploy.search.reduction import efficiency

    sp = get_space("mcu-mbnet")

    def latency(configs):  # a device whose latency follows MACs, plus a fixed overhead
        return np.asarray([sp.macs(c) / 1e6 + 2.0 for c in configs])

    allowed = efficiency(sp, latency, share=0.34, samples=8, seed=0)
    n = [int(u) + 1 for u in sp.gene_bounds()[1]]
    assert all(1 <= len(a) <= k for a, k in zip(allowed, n, strict=True)) and any(len(a) < k for a, k in
                                                                                   zip(allowed, n, strict=True))
    # recompute one gene's ranking directly: the dropped choice is the least params per ms
    g = next(i for i, (a, k) in enumerate(zip(allowed, n, strict=True)) if len(a) < k)
    rng = np.random.default_rng(0)
    base = np.vstack([sp.genes(sp.sample(rng)) for _ in range(8)])
    scores = []
    for v in range(n[g]):
        genes = base.copy()
        genes[:, g] = v
        cfgs = [sp.from_genes(row) for row in genes]
        scores.append(np.mean([sp.params_count(c) for c in cfgs]) / np.mean(latency(cfgs)))
    assert sorted(set(range(n[g])) - set(allowed[g])) == sorted(np.argsort(scores)[: n[g] - len(allowed[g])])
    problem = SubnetProblem(sp, [parse_objective("macs", sp)], (), allowed)
    x = np.vstack([np.random.default_rng(s).integers(0, problem.xu + 1) for s in range(20)])
    starts = np.cumsum([0] + [p.length for p in sp.params])
    for cfg in problem.decode(x):
        genes = sp.genes(cfg)
        unused = {int(starts[[p.name for p in sp.params].index(name)]) + i
                  for name, idx in sp.unused_genes(cfg).items() for i in idx}
        assert all(genes[i] in allowed[i] for i in range(len(genes)) if i not in unused)


def test_the_hypervolume_gain_of_many_points_is_pymoos_difference():
    from hwnas_deploy.search.tactics import expected_gain_2d, hypervolume_gain_2d

    rng = np.random.default_rng(0)
    hv = HV(ref_point=np.full(2, 1.1))
    for _ in range(100):
        front, points = rng.random((int(rng.integers(0, 8)), 2)), rng.random((5, 2)) * 1.2 - 0.05
        base = hv(front) if len(front) else 0.0
        want = [hv(np.vstack([front, p[None]])) - base for p in points]
        assert hypervolume_gain_2d(front, points) == pytest.approx(want, abs=1e-12)
    # certain predictions: the expected gain is the gain; an uncertain one just behind the front gains
    front, mean = np.array([[0.2, 0.5]]), np.array([[0.3, 0.6], [0.1, 0.4]])
    assert expected_gain_2d(front, mean, np.zeros((2, 2))) == pytest.approx(hypervolume_gain_2d(front, mean))
    assert hypervolume_gain_2d(front, mean[:1])[0] == 0 < expected_gain_2d(front, mean[:1], np.array([[0, 0.1]]))[0]


def test_concurrent_with_expected_gain_uses_the_gaussian_process_spread(acc_predictor, monkeypatch):
    """With `gp` for the measured objective, batches are chosen on its standard deviation too: the
    spread is asked for every batch after the first, and the budget is spent exactly."""
    from hwnas_deploy.search import tactics

    sp = get_space(SPACE)
    acc = parse_objective(f"accuracy=predictor:{acc_predictor}", sp)
    seen, spreads = [], []

    def sram(configs):
        seen.extend(sp.config_hash(c) for c in configs)
        return np.asarray([float(sp.peak_activation_bytes(c, 1)) for c in configs])

    real_spread = tactics._spread

    def spy(surrogates, cands, objectives):
        out = real_spread(surrogates, cands, objectives)
        spreads.append(out)
        return out

    monkeypatch.setattr(tactics, "_spread", spy)
    expensive = Objective("sram", False, sram, "sram", measured=True)
    result = tactics.concurrent(sp, [expensive, acc], budget=36, pop_size=12, inner_generations=5, estimator="gp",
                                seed=2, progress=False, expected_gain=True)
    assert len(seen) == len(set(seen)) == result.evaluations == 36
    assert len(spreads) == 2 and all(s is not None and s.shape[1] == 2 for s in spreads)
    assert all(np.all(s[:, 0] > 0) and np.all(s[:, 1] == 0) for s in spreads)  # sram from the GP; accuracy exact


def test_a_cost_line_surrogate_is_fitted_on_the_target_itself():
    """A latency that is a plane in MACs and output elements is predicted exactly, at both ends of
    the space, by the `costs` surrogate of 12 validations (fitted to the latency's logarithm, as it
    was, the plane bent: 27 % high on the smallest networks of the tactics benchmark)."""
    from hwnas_deploy.predictors.features import featurize
    from hwnas_deploy.search.tactics import _extremes, _Validations

    sp = get_space(SPACE)

    def plane(configs):
        return 0.5 + featurize(SPACE, configs, "costs") @ np.array([2.0, 0.3])

    latency = Objective("latency", False, plane, "a plane", measured=True)
    val = _Validations(sp, [latency], (), 12, False, "test")
    val.validate(sp.sample_unique(12, 0))
    ends = _extremes(SubnetProblem(sp, [latency]))
    assert plane(ends)[1] > 5 * plane(ends)[0]
    assert val.surrogates("costs")[0].evaluate(ends) == pytest.approx(plane(ends), rel=1e-6)
