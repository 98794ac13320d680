"""Differentiable latency-aware search: the mixed forward is the sub-network, the LUT expectation
is the LUT, one run gives a family across budgets, runs resume exactly, bad input is refused.
The LUT is measured on this machine (local-cpu, onnxruntime) for the run's blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.predictors.lut import LatencyLUT, build_lut
from hwnas_deploy.search.differentiable import (
    CostTables,
    DifferentiableSettings,
    MixedSupernet,
    family,
    lut_configs,
    train_differentiable,
)
from hwnas_deploy.spaces import get_space
from hwnas_deploy.supernet import ElasticSupernet, load_dataset, space_for
from tests.conftest import run_cli

R, W = 64, 0.35
TINY = dict(epochs=3, warmup_epochs=1, batch_size=32, train_limit=256)


@pytest.fixture(scope="module")
def lut_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    build_lut("local-cpu", "mcu-mbnet", "onnxruntime", lut_configs(get_space("mcu-mbnet"), R, W), path,
              progress=False)
    return path


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def tiny_run(lut_path, digits, tmp_path_factory):
    """One uninterrupted TINY run: the family test reads it, the resume test compares with it."""
    return train_differentiable(DifferentiableSettings(**TINY), lut_path, tmp_path_factory.mktemp("tiny") / "run.pt",
                                progress=False, data=digits)


def _largest():
    return {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "w": W, "r": R}


def _random_choice(rng):
    ki, ei, di = rng.integers(3, size=20), rng.integers(3, size=20), rng.integers(3, size=5)
    cfg = {"ks": [(3, 5, 7)[i] for i in ki], "e": [(3, 4, 6)[i] for i in ei], "d": [(2, 3, 4)[i] for i in di],
           "w": W, "r": R}
    onehot = [F.one_hot(torch.as_tensor(v), 3).float() for v in (ki, ei, di)]
    return cfg, onehot


def test_one_hot_choices_run_the_extracted_subnetwork_and_cost_what_the_lut_says(lut_path):
    space = space_for("mcu-mbnet", 10)
    supernet = ElasticSupernet(space, seed=3).train()
    mixed = MixedSupernet(supernet, R, W)
    lut = LatencyLUT.load(lut_path)
    costs = CostTables(space, lut, R, W)
    registry = get_space("mcu-mbnet")
    rng = np.random.default_rng(0)
    x = torch.randn(6, 3, R, R)
    for _ in range(3):
        cfg, onehot = _random_choice(rng)
        sub = supernet.extract(cfg).train()
        for m in sub.modules():  # batch statistics, as the supernet trains
            if isinstance(m, torch.nn.BatchNorm2d):
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
        with torch.no_grad():
            assert torch.allclose(mixed(x, *onehot), sub(x), atol=1e-5)
        lat, params = costs.expected(*onehot)
        assert float(lat) == pytest.approx(float(lut.predict([registry.canonical(cfg)])[0]), rel=1e-5)
        assert float(params) == pytest.approx(registry.params_count(cfg), rel=1e-6)
    smallest = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": W, "r": R}
    largest = _largest()
    # the tables hold float32 (the relaxation's dtype): their sums round within a few 1e-8 of the LUT's float64 sum
    assert costs.min_lat <= float(lut.predict([registry.canonical(smallest)])[0]) * (1 + 1e-6)
    assert costs.max_lat >= float(lut.predict([registry.canonical(largest)])[0]) * (1 - 1e-6)
    assert costs.min_cost == registry.params_count(smallest) and costs.max_cost == registry.params_count(largest)


def test_one_run_gives_a_family_whose_latency_falls_with_the_budget(tiny_run, lut_path):
    result = tiny_run
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["searching"] for r in result.history] == [False, True, True]
    rows = family(result.checkpoint, budgets=7)
    assert len(rows) == 7 and [r["budget"]["latency"] for r in rows] == pytest.approx(np.linspace(0, 1, 7), abs=1e-4)
    expected = [r["expected_ms"] for r in rows]
    assert all(b < a for a, b in zip(expected, expected[1:], strict=False)), expected  # strictly tighter, strictly faster
    # (the discretised networks, each choice's argmax, follow only roughly after 3 tiny epochs: all lie
    # near the smallest, within the LUT's noise; tools/bench_differentiable.py reports them on a full run)
    assert max(r["lut_ms"] for r in rows) < LatencyLUT.load(lut_path).predict([_largest()])[0]
    sp = get_space("mcu-mbnet")
    for r in rows:
        assert r["config"]["r"] == R and r["config"]["w"] == W
        assert r["lut_ms"] == pytest.approx(float(LatencyLUT.load(lut_path).predict([r["config"]])[0]))
        assert r["params"] == sp.params_count(r["config"])
    # a point with all weight on complexity expects fewer parameters than the free point
    free, lean = family(result.checkpoint, points=[(0, 0, 1), (0, 1, 0)])
    assert lean["expected_params"] < free["expected_params"]
    with pytest.raises(ConfigError, match="non-negative weights .*summing to 1"):
        family(result.checkpoint, points=[(0.5, 0.6, 0)])


def test_a_stopped_run_resumes_exactly(lut_path, digits, tiny_run, tmp_path):
    straight = tiny_run

    class Killed(Exception):
        pass

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train_differentiable(DifferentiableSettings(**TINY), lut_path, tmp_path / "b.pt", progress=False,
                             data=digits, on_epoch=kill_after_two)
    resumed = train_differentiable(DifferentiableSettings(**TINY), lut_path, tmp_path / "b.pt", progress=False,
                                   data=digits)
    assert resumed.resumed_from == 2 and resumed.epochs_done == 3
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for key in ("state", "hypernetwork"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert [r["family_ms"] for r in a["history"]] == [r["family_ms"] for r in b["history"]]
    with pytest.raises(ConfigError, match="kappa: 10.0 -> 1.0"):
        train_differentiable(DifferentiableSettings(**{**TINY, "kappa": 1.0}), lut_path, tmp_path / "b.pt",
                             progress=False, data=digits)


@pytest.mark.parametrize("change, message", [
    ({"warmup_epochs": 3}, r"warmup_epochs=3: 0 <= warmup_epochs < epochs \(3\)"),
    ({"complexity": "flops"}, r"complexity='flops': one of \['params', 'macs'\]"),
    ({"tau_end": 9.0}, r"tau_end=9.0: 0 < tau_end <= tau_start"),
])
def test_bad_settings_are_refused_by_name(change, message):
    with pytest.raises(ConfigError, match=message):
        DifferentiableSettings(**{**TINY, **change})


def test_a_resolution_outside_the_space_or_a_lut_without_the_blocks_is_refused(lut_path, digits, tmp_path):
    with pytest.raises(ConfigError, match=r"w=0.3 is not a choice of mcu-mbnet \(\[0.35, 0.5, 0.75, 1.0\]\)"):
        train_differentiable(DifferentiableSettings(**{**TINY, "width": 0.3}), lut_path, tmp_path / "x.pt",
                             progress=False, data=digits)
    with pytest.raises(ConfigError, match=r"lacks \d+ block\(s\) of mcu-mbnet at r=80, w=0.35.*hwnas lut build"):
        train_differentiable(DifferentiableSettings(**{**TINY, "resolution": 80}), lut_path, tmp_path / "y.pt",
                             progress=False, data=digits)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_cli_runs_measures_and_the_family_exports_from_its_run_folder(lut_path, tmp_path):
    out = run_cli("differentiable", "--lut", str(lut_path), "--out", "run", "--epochs", "2", "--warmup-epochs", "1",
                  "--train-limit", "128", "--budgets", "5", "--device", "local-cpu", "--runtime", "onnxruntime",
                  "--db", "db.sqlite", "--quiet", cwd=tmp_path, check=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.strip() and ln.strip()[0].isdigit()]
    assert len(lines) == 5
    front = json.loads((tmp_path / "run/front.json").read_text())
    assert front["tactic"] == "differentiable" and len(front["front"]) == 5
    assert [o["name"] for o in front["objectives"]] == ["accuracy", "latency", "measured_ms"]
    from hwnas_deploy.artifact import sha256_file
    from hwnas_deploy.store import MeasurementKey, Store

    sp = get_space("mcu-mbnet")
    with Store(tmp_path / "db.sqlite") as store:
        for row in front["front"]:  # every architecture measured on the device, through the store
            stored = store.latest(MeasurementKey("local-cpu", "mcu-mbnet", sp.config_hash(row["config"]),
                                                 "onnxruntime", 1, 1))
            assert stored is not None and row["measured_ms"] == stored["median_ms"] > 0
            # the accuracy is the trained supernet's estimate on the test split, as cached in the store
            source = f"supernet:{sha256_file(tmp_path / 'run/supernet.pt')}"
            assert row["accuracy"] == store.score(source, "mcu-mbnet", sp.config_hash(row["config"]), "test_accuracy")
    assert (tmp_path / "run/family.png").stat().st_size > 10_000
    exported = run_cli("export", "--run", "run", "--pick", "0", "--format", "onnx", cwd=tmp_path, check=True)
    assert ".onnx" in exported.stdout
