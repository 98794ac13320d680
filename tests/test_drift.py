"""Drift-proof measurement: a sentinel measured at intervals, its reading stored beside every
measurement, and latencies corrected by it when read (`--correct-drift`)."""

from __future__ import annotations

import re
import statistics

import pytest
from click.testing import CliRunner

from hwnas_deploy.cli import cli
from hwnas_deploy.devices import load_profile
from hwnas_deploy.errors import ConfigError
from hwnas_deploy.measurement import Measurer, SubNetwork
from hwnas_deploy.measurement import drift as drift_module
from hwnas_deploy.measurement.drift import corrected_ms, sentinel_for
from hwnas_deploy.predictors import from_store
from hwnas_deploy.profiling import profile
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store


def test_every_measurement_stores_the_sentinel_reading_beside_it_and_is_corrected_by_it(tmp_path, monkeypatch):
    sp = get_space("nb201")
    nets = [SubNetwork(sp, c) for c in sp.sample_unique(4, 11)]
    sentinel = sentinel_for(sp)
    assert sentinel.config_hash == sentinel_for("nb201").config_hash  # the same in every run
    assert sentinel.config_hash not in {n.config_hash for n in nets}
    monkeypatch.setattr(drift_module, "SHARE", 0.0)  # a reading before every job, however long one takes
    with Store(str(tmp_path / "s.sqlite")) as store, Measurer("local-cpu", store, progress=False) as m:
        report = m.measure(nets, "onnxruntime", sentinel=sentinel, sentinel_every_s=1e-9)  # before every job
        rows = store.measurements(device="local-cpu", latest_only=False)[::-1]  # oldest first
        readings = store.measurements(config_hash=sentinel.config_hash, latest_only=False, sentinels=True)[::-1]
        data = from_store(store, "local-cpu", "nb201", "onnxruntime", correct_drift=True)
        raw = from_store(store, "local-cpu", "nb201", "onnxruntime")
        corrected, n_corrected = corrected_ms(store, rows)

    # the sentinel's readings are rows of their own, numbered in one run, and not a network's rows
    assert [r["config_hash"] for r in rows] == report.measured == [n.config_hash for n in nets]
    assert [r["details"]["n"] for r in readings] == [0, 1, 2, 3] and len({r["details"]["run"] for r in readings}) == 1
    assert report.sentinel == {"local-cpu": [r["median_ms"] for r in readings]}
    assert re.search(r" of 4; drift: the sentinel's 4 readings spread \d+\.\d %$", report.line())
    # each measurement carries the reading taken just before it
    for i, r in enumerate(rows):
        drift = r["details"]["drift"]
        assert (drift["n"], drift["ms"], drift["config_hash"]) == (i, readings[i]["median_ms"], sentinel.config_hash)
        assert drift["run"] == readings[i]["details"]["run"] and drift["age_s"] >= 0
    # corrected = measured x (the sentinel's median) / (its reading at the time: interpolated between
    # the one before and the one after, by time; the last has none after it)
    ref = statistics.median(r["median_ms"] for r in readings)
    expected = []
    for i, r in enumerate(rows):
        at, ms = readings[i]["details"]["at"], readings[i]["median_ms"]
        if i + 1 < len(readings):
            at2, ms2 = readings[i + 1]["details"]["at"], readings[i + 1]["median_ms"]
            ms += min(r["details"]["drift"]["age_s"] / (at2 - at), 1.0) * (ms2 - ms)
        expected.append(r["median_ms"] * ref / ms)
    assert n_corrected == 4 and corrected == pytest.approx(expected, rel=1e-12)
    assert corrected != pytest.approx([r["median_ms"] for r in rows], rel=1e-6)  # it changed something
    by_hash = {sp.config_hash(c): y for c, y in zip(data.configs, data.y, strict=True)}
    assert by_hash == pytest.approx({r["config_hash"]: v for r, v in zip(rows, corrected, strict=True)}, rel=1e-12)
    assert "drift-corrected (4 of 4 rounds had a sentinel reading)" in data.source
    assert sorted(raw.y) == sorted(r["median_ms"] for r in rows)  # without the flag: what was measured


def test_the_sentinel_interval_comes_from_the_device_and_a_short_run_reads_it_once(tmp_path):
    assert load_profile("local-cpu").sentinel_every_s == 5.0
    assert load_profile("pixel4-a76").sentinel_every_s == 60.0  # a reading costs a phone an upload
    assert load_profile("qemu-m7").sentinel_every_s == 0.0  # instruction counts do not drift
    assert load_profile("sim-android").sentinel_every_s == 0.0  # a twin of this host
    with Measurer("qemu-m7", artifacts_dir=tmp_path / "a", progress=False) as m:
        assert m.plan("firmware", sentinel=sentinel_for("mcu-mbnet")).sentinel_every_s == 0.0
        with pytest.raises(ConfigError, match=r"--sentinel-every\) -1: allowed: seconds >= 0"):
            m.plan("firmware", sentinel=sentinel_for("mcu-mbnet"), sentinel_every_s=-1)
    with Store(str(tmp_path / "s.sqlite")) as store:
        report = profile("local-cpu", "nb201", 2, "onnxruntime", store, seed=4, progress=False)
        assert len(report.sentinel["local-cpu"]) == 1 and len(report.measured) == 2
        assert len(store.measurements(latest_only=False)) == 2
        assert len(store.measurements(latest_only=False, sentinels=True)) == 3
    # however short the interval, a reading waits 10x as long as the last one took
    with Store(str(tmp_path / "t.sqlite")) as store, Measurer("local-cpu", store, progress=False) as m:
        nets = [SubNetwork("nb201", c) for c in get_space("nb201").sample_unique(6, 8)]
        report = m.measure(nets, "onnxruntime", sentinel=sentinel_for("nb201"), sentinel_every_s=1e-9)
        readings = store.measurements(latest_only=False, sentinels=True, config_hash=sentinel_for("nb201").config_hash)
    readings = readings[::-1]
    assert 1 <= len(report.sentinel["local-cpu"]) == len(readings) < 6
    for a, b in zip(readings, readings[1:]):
        assert b["details"]["at"] - a["details"]["at"] >= 10 * a["details"]["took_s"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: server\nruntimes: [onnxruntime]\nmeasurement: {sentinel_every_s: -5}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: measurement.sentinel_every_s is -5; allowed: seconds >= 0"):
        load_profile(bad)


def test_a_sentinel_that_cannot_be_measured_is_noted_and_the_run_goes_on_unstamped(tmp_path):
    sp = get_space("nb201")
    nets = [SubNetwork(sp, c) for c in sp.sample_unique(2, 12)]
    with Store(str(tmp_path / "s.sqlite")) as store, Measurer("local-cpu", store, progress=False) as m:
        report = m.measure(nets, "onnxruntime", sentinel=_Unexportable(), sentinel_every_s=1e-9)
        rows = store.measurements(latest_only=False, sentinels=True)
    assert sorted(report.measured) == sorted(n.config_hash for n in nets) and report.sentinel == {}
    assert len(rows) == 2 and all("drift" not in r["details"] for r in rows)
    assert len(report.lab_events) == 1 and "not measured" in report.lab_events[0]


class _Unexportable(SubNetwork):
    """A network whose export fails (as a model a format cannot reach does)."""

    def __init__(self):
        self.space, self.config_hash, self.config = "nb201", "f" * 16, {"unexportable": True}

    def export(self, fmt, out_dir, *, batch=1, target="host"):
        from hwnas_deploy.errors import ExportError

        raise ExportError(f"cannot export to {fmt}")


def test_the_cli_takes_the_interval_and_the_correction(tmp_path):
    runner = CliRunner()
    db = str(tmp_path / "s.sqlite")
    out = runner.invoke(cli, ["profile", "--device", "local-cpu", "--space", "nb201", "--samples", "3",
                              "--runtime", "onnxruntime", "--db", db, "--sentinel-every", "0", "--quiet"])
    assert out.exit_code == 0, out.output
    assert "sentinel" not in out.output
    with Store(db) as store:
        assert all("drift" not in r["details"] for r in store.measurements(latest_only=False, sentinels=True))
    bad = runner.invoke(cli, ["profile", "--device", "local-cpu", "--space", "nb201", "--runtime", "onnxruntime",
                              "--db", db, "--sentinel-every", "-1"])
    assert bad.exit_code == 2 and "--sentinel-every" in bad.output
    wrong = runner.invoke(cli, ["predictor", "eval", "--space", "nb201", "--csv", db, "--target", "x",
                                "--correct-drift", "--train-size", "2"])
    assert wrong.exit_code == 2 and "--correct-drift and --runtime-version go with --db" in wrong.output
    ok = runner.invoke(cli, ["predictor", "fit", "--space", "nb201", "--db", db, "--device", "local-cpu",
                             "--runtime", "onnxruntime", "--correct-drift", "--estimator", "macs",
                             "--out", str(tmp_path / "p.json")])
    assert ok.exit_code == 0 and "fitted on 3 rows" in ok.output


def test_a_lut_built_with_drift_correction_scales_each_block_by_the_reading_beside_it(tmp_path, monkeypatch):
    from hwnas_deploy.errors import PredictorError
    from hwnas_deploy.predictors.lut import build_lut

    sp = get_space("nb201")
    monkeypatch.setattr(drift_module, "SHARE", 0.0)
    raw: dict[str, float] = {}
    with Store(str(tmp_path / "s.sqlite")) as store:
        lut = build_lut("local-cpu", "nb201", "onnxruntime", sp.sample_unique(1, 5), tmp_path / "lut.json",
                        store=store, progress=False, sentinel_every_s=1e-9, correct_drift=True,
                        on_block=raw.__setitem__)
        readings = store.measurements(config_hash=sentinel_for(sp).config_hash, latest_only=False, sentinels=True)
        blocks = store.measurements(space="nb201-block")
    assert len(readings) == len(blocks) == len(lut.entries) == len(raw) >= 3  # one reading before each block
    ref = statistics.median(r["median_ms"] for r in readings)
    for r in blocks:
        key = r["config"]["block"]
        assert lut.entries[key] == pytest.approx(raw[key] * ref / r["details"]["drift"]["ms"], rel=1e-12)
    with pytest.raises(PredictorError, match="local-cpu reads no drift sentinel .* give --sentinel-every"):
        build_lut("local-cpu", "nb201", "onnxruntime", sp.sample_unique(1, 6), tmp_path / "lut.json",
                  progress=False, sentinel_every_s=0, correct_drift=True)
