"""The measurement layer: networks in, measurements out; the store records and caches them."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.measurement import Measurer, ModuleNetwork, SubNetwork, measure
from hwnas_deploy.spaces import get_space
from hwnas_deploy.store import Store


def _tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval(), \
        torch.randn(1, 3, 8, 8)


def test_measurements_come_back_and_the_store_records_and_caches_them(tmp_path):
    sp = get_space("mcu-mbnet")
    nets = [SubNetwork(sp, c) for c in sp.sample_unique(2, 5)]
    with Store(str(tmp_path / "s.sqlite")) as store:
        with Measurer("local-cpu", store, progress=False) as m:
            first = m.measure(nets + nets[:1], "onnxruntime")  # a repeated network is measured once
            assert first.planned == 2 and sorted(first.measured) == sorted(n.config_hash for n in nets)
            rows = {r["config_hash"]: r for r in store.measurements(device="local-cpu")}
            for n in nets:
                got = first.results[n.config_hash]
                assert got.status == "measured" and got.median_ms == rows[n.config_hash]["median_ms"]
                assert got.artifact is not None and got.wall_s > 0 and first.median_ms(n) == got.median_ms
        with Measurer("local-cpu", store, progress=False) as again:
            cached = again.measure(nets, "onnxruntime")
            assert again.executor.driver is None  # all stored: the device was never opened
        assert cached.measured == [] and sorted(cached.skipped) == sorted(first.measured)
        assert {h: r.median_ms for h, r in cached.results.items()} == {h: r["median_ms"] for h, r in rows.items()}
        assert all(r.status == "stored" for r in cached.results.values())
        two = measure("local-cpu", nets[:1], "onnxruntime", store, progress=False, rounds=2)
        (result,) = two.results.values()  # one round stored, the second taken now; the median of both
        assert len(result.rounds_ms) == 2 and result.median_ms == pytest.approx(sum(result.rounds_ms) / 2)
        assert len(store.measurements(device="local-cpu", latest_only=False)) == 3


def test_a_users_module_is_measured_under_its_own_key_and_without_a_store_nothing_is_kept(tmp_path):
    net = ModuleNetwork("user", {"model": "tiny-conv", "input": [1, 3, 8, 8]}, _tiny)
    same = ModuleNetwork("user", {"input": [1, 3, 8, 8], "model": "tiny-conv"}, _tiny)
    assert net.config_hash == same.config_hash and len(net.config_hash) == 16  # content-keyed
    with Store(str(tmp_path / "s.sqlite")) as store:
        report = measure("local-cpu", [net], "onnxruntime", store, artifacts_dir=tmp_path / "a", progress=False)
        (row,) = store.measurements(space="user")
        assert row["config_hash"] == net.config_hash and row["config"] == net.config
        assert report.median_ms(net) == row["median_ms"]
    loose = measure("local-cpu", [net], "onnxruntime", None, artifacts_dir=tmp_path / "a", progress=False)
    assert loose.results[net.config_hash].status == "measured"  # no store: nothing skipped, nothing recorded
    with pytest.raises(ConfigError, match=r"rounds \(--rounds\) must be at least 1, got 0"):
        measure("local-cpu", [net], "onnxruntime", None, progress=False, rounds=0)


def test_an_artifact_made_by_other_code_is_exported_again(tmp_path, monkeypatch):
    """The artifacts folder is reused across runs only while the exporting code is the same: after
    an upgrade (here: another exporter digest in the record) the network is exported again."""
    import json

    from hwnas_deploy.artifact import exporter_digest
    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.measurement import Plan, cached_artifact

    net = ModuleNetwork("test", {"net": "tiny"}, _tiny)
    art = net.export("onnx", tmp_path)
    assert art.exporter == exporter_digest() and cached_artifact(tmp_path / art.path.split("/")[-1]) is not None
    record = json.loads(art.sidecar.read_text())
    art.sidecar.write_text(json.dumps({**record, "exporter": "an-older-release"}))
    assert cached_artifact(tmp_path / art.path.split("/")[-1]) is None
    from hwnas_deploy.measurement.plan import Job

    plan = Plan(load_profile("local-cpu"), "onnxruntime", 1, 1, tmp_path)
    again = plan.export(Job(plan.key(net), net))
    assert again.exporter == exporter_digest() and json.loads(art.sidecar.read_text())["exporter"] == again.exporter


def test_each_measurement_records_the_host_it_was_taken_on_and_show_lists_it(tmp_path):
    """Provenance: the driving host's load, CPUs (and governor and clock where the kernel exposes
    them) before and after, beside the device's facts; `hwnas show --rows --provenance`."""
    import os
    from importlib.metadata import version

    from click.testing import CliRunner

    from hwnas_deploy.cli import cli
    from hwnas_deploy.measurement.provenance import provenance_row

    sp = get_space("nb201")
    net = SubNetwork(sp, sp.sample_unique(1, 21)[0])
    db = str(tmp_path / "s.sqlite")
    with Store(db) as store:
        measure("local-cpu", [net], "onnxruntime", store, artifacts_dir=tmp_path / "a", progress=False,
                sentinel_every_s=0)
        (row,) = store.measurements()
    host = row["env"]["host"]
    for state in (host["start"], host["end"]):
        assert state["affinity"] == sorted(os.sched_getaffinity(0)) and state["load1"] >= 0
    flat = provenance_row(row)
    assert flat["version"] == f"onnxruntime {version('onnxruntime')}" and flat["config_hash"] == net.config_hash
    spans = [[int(x) for x in part.split("-")] for part in flat["cpus"].split(",")]
    assert [c for span in spans for c in range(span[0], span[-1] + 1)] == sorted(os.sched_getaffinity(0))
    assert flat["load"] == f"{host['start']['load1']:.2f}-{host['end']['load1']:.2f}"
    board = provenance_row({"runtime": "firmware", "env": {"device": {"firmware": "hwnas-fw 0.7.0", "core": "cortex-m7"},
                                                          "host": {"start": {"affinity": [0, 1, 2, 5, 7, 8]}}},
                            "details": {"weights": "generated", "drift": {"ms": 1.5}}})
    assert (board["version"], board["cpu"], board["cpus"], board["weights"], board["sentinel_ms"]) == (
        "hwnas-fw 0.7.0", "cortex-m7", "0-2,5,7-8", "generated", 1.5)
    out = CliRunner().invoke(cli, ["show", "--db", db, "--provenance"])
    assert out.exit_code == 0 and f"onnxruntime {version('onnxruntime')}" in out.output
    assert out.output.splitlines()[0].split()[:5] == ["device", "config_hash", "runtime", "median_ms", "version"]


def test_revalidate_flags_a_figure_that_moved_and_a_version_that_changed_and_predictors_never_mix_them(tmp_path):
    from importlib.metadata import version

    from click.testing import CliRunner

    from hwnas_deploy.cli import cli
    from hwnas_deploy.errors import PredictorError
    from hwnas_deploy.measurement.revalidate import revalidate
    from hwnas_deploy.predictors import from_store

    sp = get_space("nb201")
    nets = [SubNetwork(sp, c) for c in sp.sample_unique(3, 22)]
    db = str(tmp_path / "s.sqlite")
    ort = f"onnxruntime {version('onnxruntime')}"
    with Store(db) as store:
        measure("local-cpu", nets, "onnxruntime", store, artifacts_dir=tmp_path / "a", progress=False,
                sentinel_every_s=0)
        moved = store.measurements(config_hash=nets[0].config_hash)[0]
    _as_if(db, moved, 3, "0.0.1")  # the first network measured 3x slower, by an older onnxruntime
    with Store(db) as store:
        with pytest.raises(PredictorError, match=rf"taken with 2 versions: onnxruntime 0.0.1 \(1 rounds\), "
                                                 rf"{re.escape(ort)} \(2 rounds\); .* --runtime-version"):
            from_store(store, "local-cpu", "nb201", "onnxruntime")
        assert len(from_store(store, "local-cpu", "nb201", "onnxruntime", version=ort)) == 2
        found = {r.config_hash: r for r in revalidate("local-cpu", "onnxruntime", store, 5, progress=False)}
    assert sorted(found) == sorted(n.config_hash for n in nets)  # all 3 (of the 5 asked for) measured again
    first = found[nets[0].config_hash]
    assert first.drifted and first.version_changed and first.change < -0.4  # -2/3, give or take a busy host
    assert (first.stored_version, first.now_version) == ("onnxruntime 0.0.1", ort)
    assert not any(r.version_changed for h, r in found.items() if h != nets[0].config_hash)
    with Store(db) as store:
        _as_if(db, store.measurements(config_hash=nets[1].config_hash)[0], 1, "0.0.2")
    out = CliRunner().invoke(cli, ["revalidate", "--device", "local-cpu", "--runtime", "onnxruntime", "--db", db,
                                   "--sample", "3", "--quiet"])
    assert out.exit_code == 1 and "revalidated 3 of 3: " in out.output and "1 measured with another version" in out.output
    (line,) = [x for x in out.output.splitlines() if nets[1].config_hash in x]
    assert line.endswith(f"onnxruntime 0.0.2 -> {ort}")


def _as_if(db: str, row: dict, factor: float, ort_version: str) -> None:
    """Rewrite a stored measurement: its median times `factor`, taken by another onnxruntime."""
    import sqlite3

    env = row["env"]
    env["device"]["onnxruntime"] = ort_version
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE measurements SET median_ms = ?, env_json = ? WHERE id = ?",
                    (row["median_ms"] * factor, json.dumps(env), row["id"]))
    con.close()
