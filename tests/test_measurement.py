"""The measurement layer: networks in, measurements out; the store records and caches them."""

from __future__ import annotations

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
