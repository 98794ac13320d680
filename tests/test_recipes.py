"""Recipes, tactics that count validations, and what a user takes out of a run folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.search import Objective, SubnetProblem, pareto_front, parse_constraint, parse_objective
from hwnas_deploy.search.recipe import Recipe, prepare, recipe_names
from hwnas_deploy.search.run_folder import knee, load_front, pick
from hwnas_deploy.spaces import get_space

from .conftest import DYNAST_DIR, REPO, run_cli


def test_shipped_recipes_are_valid(store):
    assert {"mcu-mbnet-qemu-m7", "ofa-mbv3-local-cpu"} <= set(recipe_names())
    mcu = prepare(Recipe.load("mcu-mbnet-qemu-m7"), store)
    assert [(o.name, o.maximise, o.measured) for o in mcu.objectives] == [("latency", False, True),
                                                                          ("params", True, False)]
    assert [(c.name, c.limit) for c in mcu.constraints] == [("sram", 327680), ("flash", 1048576)]
    ofa = Recipe.load(REPO / "search" / "ofa-mbv3-local-cpu.yaml")
    # relative paths are the recipe folder's: the DyNAS-T table beside this checkout
    assert ofa.objectives[0] == f"accuracy=table:{DYNAST_DIR.resolve()}"
    ofa_ready = prepare(ofa, store)
    acc = ofa_ready.objectives[0]
    assert acc.maximise and not acc.measured
    known = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224}
    assert 65 < acc.evaluate([known])[0] < 80  # top-1 %, ImageNet


BAD = [
    ({"objectives": ["macs"]}, "field 'space' is required"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "populaton": 8}, "unknown field 'populaton'"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "population": "fifty"}, "field 'population' must be an integer"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "population": 2}, "field 'population' must be at least 4"),
    ({"space": "mcu-mbnet", "objectives": ["macs", "flops"]}, "objectives[1]: objective 'flops'"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "constraints": ["sram<=1000"]},
     "constraints[0] 'sram<=1000' is impossible: the smallest sram of mcu-mbnet's sub-networks is"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "constraints": ["latency<=5"]},
     "constraints[0] 'latency<=5': 'latency' is not an objective"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "constraints": ["macs<5"]}, "constraints[0]: constraint 'macs<5'"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "tactic": "fast"}, "field 'tactic' is 'fast'; tactics: plain"),
    ({"space": "mcu-mbnet", "objectives": ["macs", "sram"], "tactic": "concurrent"},
     "tactic 'concurrent' needs an objective measured on a device"),
    ({"space": "mcu-mbnet", "objectives": ["latency=measure"]}, "measure on what?"),
    ({"space": "mcu-mbnet", "device": "pixel9", "objectives": ["macs"]}, "field 'device'"),
    ({"space": "mcu-mbnet", "device": "qemu-m7", "runtime": "tvm", "objectives": ["macs"]},
     "does not offer runtime 'tvm'"),
    ({"space": "mcu-mbnet", "device": "local-cpu", "runtime": "onnxruntime", "objectives": ["latency=measure"],
      "tactic": "full", "population": 8, "budget": 10}, "field 'budget' (10) must cover a population (8) plus"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "export": {"formats": ["hef"]}}, "'export.formats' has 'hef'"),
    ({"space": "nas-bench", "objectives": ["macs"]}, "field 'space'"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "estimator": "xgb"}, "field 'estimator': unknown estimator 'xgb'"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "estimator": ["gp"]}, "field 'estimator' must be a string"),
    ({"space": "mcu-mbnet", "device": "local-cpu", "runtime": "onnxruntime", "objectives": ["latency=measure", "macs"],
      "tactic": "concurrent", "population": 8, "budget": 16, "estimator": {"macs": "gp"}},
     "field 'estimator': 'macs' is not a measured objective (measured: latency)"),
    ({"space": "mcu-mbnet", "objectives": ["macs"], "estimator": "kernels"},
     "field 'estimator': 'kernels' is not refitted from validations"),
]


@pytest.mark.parametrize("data,message", BAD, ids=[m[:40] for _, m in BAD])
def test_an_invalid_recipe_is_refused_naming_the_field(data, message, store):
    with pytest.raises(ConfigError) as err:
        prepare(Recipe.from_dict(data, "r.yaml"), store)
    assert message in str(err.value) and str(err.value).startswith("r.yaml")


def test_an_estimator_per_measured_objective_is_accepted(store):
    data = {"space": "mcu-mbnet", "device": "local-cpu", "runtime": "onnxruntime", "tactic": "concurrent",
            "objectives": ["latency=measure", "macs"], "population": 8, "budget": 16,
            "estimator": {"latency": "gp"}}
    ready = prepare(Recipe.from_dict(data, "r.yaml"), store)
    assert ready.recipe.estimator == {"latency": "gp"}


def test_an_invalid_recipe_file_runs_nothing(tmp_path):
    (tmp_path / "r.yaml").write_text("space: mcu-mbnet\nobjectives: [latency=measure:local-cpu/onnxruntime]\n"
                                     "constraints: [flash<=-1]\n")
    out = run_cli("search", "r.yaml", "--db", "s.sqlite", "--out", "run", cwd=tmp_path)
    assert out.returncode == 2 and "r.yaml: constraints[0] 'flash<=-1' is impossible" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()
    (tmp_path / "y.yaml").write_text("space: [mcu-mbnet\n")
    out = run_cli("search", "y.yaml", "--out", "run", cwd=tmp_path)
    assert out.returncode == 2 and "y.yaml: not valid YAML" in out.stderr
    out = run_cli("search", "no-such-recipe", "--out", "run", cwd=tmp_path)
    assert out.returncode == 2 and "no recipe 'no-such-recipe'; recipes: mcu-mbnet-qemu-m7" in out.stderr


def test_a_bad_warm_start_file_is_refused_naming_the_field_and_line(tmp_path, store):
    sp = get_space("mcu-mbnet")
    (tmp_path / "warm.jsonl").write_text(json.dumps(sp.sample(0)) + "\n" + json.dumps({"ks": [3]}) + "\n")
    data = {"space": "mcu-mbnet", "objectives": ["macs"], "tactic": "warm-start", "warm_start": "warm.jsonl"}
    with pytest.raises(ConfigError, match=r"^r.yaml: field 'warm_start': .*warm.jsonl line 2: "):
        prepare(Recipe.from_dict({**data, "warm_start": str(tmp_path / "warm.jsonl")}, "r.yaml"), store)
    (tmp_path / "warm.jsonl").write_text(json.dumps(sp.sample(0)) + "\n")
    assert len(prepare(Recipe.from_dict({**data, "warm_start": str(tmp_path / "warm.jsonl")}, "r.yaml"),
                       store).warm) == 1


def _counted_sram(sp, seen):
    def evaluate(configs):
        seen.extend(sp.config_hash(c) for c in configs)
        return np.asarray([float(sp.peak_activation_bytes(c, 1)) for c in configs])

    return Objective("sram", False, evaluate, "sram", measured=True)


def test_a_network_breaking_a_count_constraint_is_never_measured():
    sp = get_space("mcu-mbnet")
    seen = []
    problem = SubnetProblem(sp, [_counted_sram(sp, seen), parse_objective("macs", sp)],
                            [parse_constraint("flash<=800000")])
    configs = sp.sample_unique(30, 0)
    rows = problem.values(configs)
    small = [sp.config_hash(c) for c in configs if sp.params_count(c) <= 800000]
    assert 0 < len(small) < 30 and seen == small  # only the fitting ones reached the "device"
    assert all(np.isinf(r["sram"]) == (r["flash"] > 800000) for r in rows)


def test_full_tactic_spends_exactly_its_budget_and_beats_random():
    """`full` on DyNAS-T accuracy (cheap) and sram (measured, counted): budget - population
    validations train the predictor, the long search's best population is validated last."""
    from hwnas_deploy.predictors import Predictor, from_csv
    from hwnas_deploy.search.tactics import full

    sp = get_space("ofa-mbv3-w1.0")
    data = from_csv(DYNAST_DIR, sp.name, "Top-1 Acc (%)")
    model = Predictor("ridge").fit(data.configs[:300], data.y[:300], sp.name, "accuracy")
    acc = Objective("accuracy", True, model.predict, "ridge")
    seen = []
    sram = _counted_sram(sp, seen)
    result = full(sp, [sram, acc], budget=40, pop_size=10, generations=40, estimator="ridge", seed=1, progress=False)
    assert len(seen) == len(set(seen)) == result.evaluations == 40
    assert [h["evaluations"] for h in result.history] == [30, 40]
    assert [len(b) for b in result.populations] == [30, 10]
    validated_last = {sp.config_hash(r["config"]) for r in result.populations[1]}
    assert validated_last & {sp.config_hash(r["config"]) for r in result.front}  # the search's picks made the front
    rng = np.random.default_rng(1)
    rand = [sp.sample(rng) for _ in range(40)]
    rand_rows = [{"config": c, "sram": float(sp.peak_activation_bytes(c, 1)), "accuracy": float(model.predict([c])[0])}
                 for c in rand]
    objs = [sram, acc]
    f = [np.asarray([[r["sram"], -r["accuracy"]] for r in fr]) for fr in (result.front, pareto_front(rand_rows, objs))]
    lo, span = np.vstack(f).min(0), np.ptp(np.vstack(f), 0)
    from pymoo.indicators.hv import HV

    hv = HV(ref_point=np.full(2, 1.1))
    hv_full, hv_rand = (float(hv((x - lo) / span)) for x in f)
    assert hv_full > 1.1 * hv_rand, (hv_full, hv_rand)


def test_knee_and_pick():
    from hwnas_deploy.search.run_folder import RunFront

    sp = get_space("mcu-mbnet")
    # the third network's hash starts with 6 digits: a prefix that reads as a number is still a prefix
    digits = next(c for c in (sp.sample(i) for i in range(1000)) if sp.config_hash(c)[:6].isdigit())
    objectives = [{"name": "latency", "maximise": False}, {"name": "acc", "maximise": True}]
    rows = [{"latency": 1.0, "acc": 50.0, "config": sp.sample(1001)},
            {"latency": 2.0, "acc": 75.0, "config": sp.sample(1002)},
            {"latency": 10.0, "acc": 80.0, "config": digits}]
    run = RunFront(REPO, "mcu-mbnet", objectives, rows)
    assert knee(run) == 1  # (0.11, 0.17) from the ideal point; the ends are 1.0 away
    assert pick(run, "all") == [0, 1, 2] and pick(run, "2") == [2]
    assert pick(run, sp.config_hash(digits)[:6]) == [2]
    with pytest.raises(ConfigError, match="has 3 networks"):
        pick(run, "7")


def test_recipe_run_front_export_and_deploy_from_the_cli(tmp_path):
    """A recipe measured on local-cpu: `hwnas search RECIPE` writes the run folder and exports
    the knee; `hwnas front`, `hwnas export --run --pick` and `hwnas deploy --run` take it from
    there; options override the recipe (here the device, and a constraint)."""
    (tmp_path / "r.yaml").write_text(
        "space: mcu-mbnet\ndevice: qemu-m7\nruntime: firmware\nobjectives: [latency=measure, max:params]\n"
        "constraints: [sram<=327680]\ntactic: full\npopulation: 4\nbudget: 10\ngenerations: 20\n"
        "estimator: costs\nexport: {pick: knee, formats: [onnx]}\n")
    args = ["search", "r.yaml", "--device", "local-cpu", "--runtime", "onnxruntime", "--constraint", "flash<=600000",
            "--db", "s.sqlite", "--out", "run", "--quiet"]
    out = run_cli(*args, cwd=tmp_path, check=True).stdout
    assert out.startswith("10 networks validated; front of") and "knee" in out
    data = json.loads((tmp_path / "run" / "front.json").read_text())
    assert data["recipe"]["device"] == "local-cpu" and data["recipe"]["constraints"] == ["flash<=600000"]
    assert data["front"] and all(r["flash"] <= 600000 for r in data["front"])
    front = load_front(tmp_path / "run")
    sp = get_space("mcu-mbnet")
    k = knee(front)
    knee_hash = sp.config_hash(front.front[k]["config"])
    assert [p.name for p in (tmp_path / "run" / "artifacts").glob("*.onnx")] == [f"mcu-mbnet-{knee_hash}-b1.onnx"]
    listed = run_cli("front", "--run", "run", cwd=tmp_path, check=True).stdout
    assert knee_hash in listed and len(listed.strip().splitlines()) == 2 + len(front.front)
    exported = run_cli("export", "--run", "run", "--pick", knee_hash[:8], "--format", "tflite-int8,blob", "--out", "x",
                       cwd=tmp_path, check=True).stdout
    assert [json.loads(line)["format"] for line in exported.splitlines()] == ["tflite-int8", "blob"]
    deployed = run_cli("deploy", "--run", "run", "--pick", "0", "--device", "local-cpu", "--runtime", "onnxruntime",
                       "--db", "s.sqlite", "--quiet", cwd=tmp_path, check=True).stdout
    assert sp.config_hash(front.front[0]["config"]) in deployed
    from hwnas_deploy.store import Store

    with Store(str(tmp_path / "s.sqlite")) as s:  # the front's value is the stored measurement
        row = next(r for r in s.measurements(device="local-cpu", space="mcu-mbnet")
                   if r["config_hash"] == sp.config_hash(front.front[0]["config"]))
        assert row["median_ms"] == pytest.approx(front.front[0]["latency"])
    again = run_cli(*args, cwd=tmp_path, check=True).stdout  # the store answers: nothing measured twice
    assert again.splitlines()[0] == out.splitlines()[0]
    bad = run_cli("export", "--run", "run", "--pick", "zzzz", "--format", "onnx", cwd=tmp_path)
    assert bad.returncode == 2 and "--pick 'zzzz': no networks of the front match" in bad.stderr


def test_deploy_the_knee_on_the_cortex_m7_twin(tmp_path):
    """`hwnas deploy --device qemu-m7`: the knee of a front exported as a firmware blob, uploaded
    over the serial line, checked bit-exact against the host kernels, and measured. (NAS-Bench-201
    cells under 150 KB of flash: the twin's UART takes a minute for an mcu-mbnet network's 600 KB.)"""
    env = {"HWNAS_SIM_DIR": str(tmp_path / "sim")}
    os.environ.update(env)
    try:
        run_cli("search", "--space", "nb201", "--objective", "macs", "--objective", "max:params", "--constraint",
                "sram<=327680", "--constraint", "flash<=150000", "--pop", "8", "--generations", "3", "--out", "run",
                "--quiet", cwd=tmp_path, check=True)
        run_cli("sim", "start", "qemu-m7", cwd=tmp_path, check=True)
        out = run_cli("deploy", "--run", "run", "--device", "qemu-m7", "--db", "s.sqlite", "--quiet", cwd=tmp_path,
                      timeout=900, check=True).stdout
    finally:
        run_cli("sim", "stop", "qemu-m7", cwd=tmp_path)
        for k in env:
            os.environ.pop(k, None)
    assert "bit-exact" in out
    front = load_front(tmp_path / "run")
    knee_hash = get_space("nb201").config_hash(front.front[knee(front)]["config"])
    assert sorted(p.name for p in (tmp_path / "run" / "artifacts").iterdir() if p.suffix == ".hwnb") == [
        f"nb201-{knee_hash}-b1.hwnb"]
    from hwnas_deploy.store import Store

    with Store(str(tmp_path / "s.sqlite")) as s:  # deployed with its real weights, as it would ship
        (row,) = s.measurements(device="qemu-m7")
    assert row["config_hash"] == knee_hash and row["details"]["weights"] == "real"
    assert row["details"]["output_check"]["cosine_vs_onnxruntime"] > 0.5


def test_a_killed_concurrent_run_resumes_from_the_store(tmp_path):
    """`concurrent` keeps its measurements in the store as it goes: killed after its first
    population and started again with the same seed, it draws the same networks, the store answers
    them, and only the rest of the budget is measured."""
    from hwnas_deploy.search.tactics import concurrent
    from hwnas_deploy.store import Store

    sp = get_space("mcu-mbnet")
    with Store(str(tmp_path / "s.sqlite")) as store:
        latency = parse_objective("latency=measure:local-cpu/onnxruntime", sp, store)
        calls = []

        def dying(configs):
            if calls:
                raise KeyboardInterrupt  # the second population: the process is killed
            calls.append(len(configs))
            return latency.evaluate(configs)

        killed = Objective("latency", False, dying, latency.source, measured=True)
        with pytest.raises(KeyboardInterrupt):
            concurrent(sp, [killed, parse_objective("sram", sp)], budget=8, pop_size=4, inner_generations=3,
                       estimator="ridge", seed=3, progress=False)
        assert calls == [4] and len(store.measurements(device="local-cpu", latest_only=False)) == 4
        result = concurrent(sp, [latency, parse_objective("sram", sp)], budget=8, pop_size=4, inner_generations=3,
                            estimator="ridge", seed=3, progress=False)
        rows = store.measurements(device="local-cpu", latest_only=False)
        assert result.evaluations == 8 and len(rows) == 8  # the first four were not measured again
        first = {sp.config_hash(r["config"]) for r in result.populations[0]}
        assert first <= {r["config_hash"] for r in rows}
