from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.measure import MeasureSettings, measure, median_ci_rel, summarize


def test_summary_statistics_on_known_samples():
    samples = [10.0] * 10 + [11.0] * 10 + [12.0] * 10
    s = summarize(samples)
    assert s.median_ms == 11.0 and s.min_ms == 10.0 and s.n == 30 and s.n_outliers == 0
    assert s.mean_ms == pytest.approx(11.0)
    assert s.p90_ms == pytest.approx(12.0)
    assert s.iqr_ms == pytest.approx(2.0)
    assert s.samples_ms == samples


def test_far_outliers_are_left_out_of_the_summary_but_kept_raw():
    rng = np.random.default_rng(0)
    samples = list(5 + 0.01 * rng.standard_normal(50)) + [50.0, 80.0]
    s = summarize(samples)
    assert s.n == 52 and s.n_outliers == 2
    assert s.mean_ms == pytest.approx(5, abs=0.01)
    assert 80.0 in s.samples_ms


def test_median_confidence_interval_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small = np.sort(10 + rng.standard_normal(20))
    large = np.sort(10 + rng.standard_normal(2000))
    assert median_ci_rel(large) < median_ci_rel(small) / 5
    assert math.isinf(median_ci_rel(np.array([1.0])))
    # few samples: the half-range; a deterministic device converges at once
    assert median_ci_rel(np.array([1.0, 2.0])) == pytest.approx(1 / 3)
    assert median_ci_rel(np.array([5.0, 5.0, 5.0])) == 0.0
    assert summarize([5.0, 5.0, 5.0]).converged


def test_stable_function_stops_early_noisy_one_runs_to_the_cap():
    calls = {"n": 0}

    def stable():
        calls["n"] += 1
        time.sleep(0.001)

    s = measure(stable, MeasureSettings(warmup=2, min_repeats=10, max_repeats=400, target_ci=0.05))
    assert s.converged and s.n < 400 and calls["n"] == s.n + 2

    rng = np.random.default_rng(2)

    def noisy():
        time.sleep(float(rng.choice([0.0002, 0.004])))

    s = measure(noisy, MeasureSettings(warmup=0, min_repeats=10, max_repeats=40, target_ci=0.001))
    assert s.n == 40 and not s.converged


def test_time_budget_ends_repeats_but_not_before_the_minimum():
    s = measure(lambda: time.sleep(0.01), MeasureSettings(warmup=0, min_repeats=8, max_repeats=1000,
                                                          target_ci=1e-9, time_budget_s=0.05))
    assert 8 <= s.n <= 12


@pytest.mark.parametrize("field, value", [("min_repeats", 1), ("target_ci", 0), ("warmup", -1),
                                          ("time_budget_s", 0)])
def test_settings_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        MeasureSettings(**{field: value})
    with pytest.raises(ConfigError, match="unknown setting"):
        MeasureSettings.from_mapping({"repeats": 3})
