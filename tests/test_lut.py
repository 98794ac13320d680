"""Latency LUT: blocks measured alone on the local CPU, summed, calibrated, compared."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas_deploy.errors import PredictorError
from hwnas_deploy.predictors import from_store
from hwnas_deploy.predictors.lut import LatencyLUT, build_lut, compare
from hwnas_deploy.spaces import get_space

from .conftest import round_noise, run_cli

SPACE = "ofa-mbv3-w1.0"
pytestmark = pytest.mark.timing  # block sums against whole networks: measured alone (tools/test.sh)


ROUNDS = 3


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """10 sub-networks measured whole with onnxruntime and every distinct block of theirs, in the
    same rounds (the host's drifts fall on networks and blocks alike), the LUT over the blocks, and
    the noise floor: the median relative range of a network's round medians."""
    from hwnas_deploy.measurement import Measurer, SubNetwork
    from hwnas_deploy.predictors.lut import block_networks
    from hwnas_deploy.store import Store

    tmp = tmp_path_factory.mktemp("lut")
    db = tmp / "m.sqlite"
    configs = get_space(SPACE).sample_unique(10, 11)
    seen = []
    with Store(str(db)) as store:
        with Measurer("local-cpu", store, progress=False) as m:
            subnets = [SubNetwork(SPACE, c) for c in configs]
            report = m.measure(subnets + list(block_networks(SPACE, configs).values()), "onnxruntime",
                               rounds=ROUNDS)
        data = from_store(store, "local-cpu", SPACE, "onnxruntime")
        table = build_lut("local-cpu", SPACE, "onnxruntime", data.configs, tmp / "lut.json", store=store,
                          progress=False, on_block=lambda k, ms: seen.append(k))
    # the measurement's own noise: how far a network's rounds sit apart (this host's drift)
    return tmp, db, data, table, seen, round_noise(report, [n.config_hash for n in subnets])


def test_every_distinct_block_is_one_stored_measurement_per_round(measured, tmp_path):
    from hwnas_deploy.measurement import Measurer
    from hwnas_deploy.predictors.lut import block_networks
    from hwnas_deploy.store import Store

    tmp, db, data, table, seen, _ = measured
    sp = get_space(SPACE)
    keys = {b.key() for c in data.configs for b in sp.blocks(c)}
    assert set(table.entries) == keys and seen == []  # the store held every block: nothing measured again
    assert all(v > 0 for v in table.entries.values())
    nets = block_networks(SPACE, data.configs)
    with Store(str(db)) as store, Measurer("local-cpu", store) as m:
        plan = m.plan("onnxruntime")
        rounds = {k: [r["median_ms"] for r in store.rounds(plan.key(n))] for k, n in nets.items()}
        assert all(len(r) == ROUNDS for r in rounds.values())
        assert table.entries == {k: pytest.approx(float(np.median(r))) for k, r in rounds.items()}
        # one round more over the blocks of the first network: each distinct block measured once
        first = {b.key() for b in sp.blocks(data.configs[0])}
        more = []
        again = build_lut("local-cpu", SPACE, "onnxruntime", data.configs[:1], tmp_path / "lut.json", store=store,
                          rounds=ROUNDS + 1, progress=False, on_block=lambda k, ms: more.append(k))
        assert sorted(more) == sorted(first) and set(again.entries) == first
        for k in first:  # the new LUT keeps the median over all the rounds, the stored ones included
            now = [r["median_ms"] for r in store.rounds(plan.key(nets[k]))]
            assert len(now) == ROUNDS + 1 and again.entries[k] == pytest.approx(float(np.median(now)))
    # the key holds what changes a block's cost
    mb = next(k for k in keys if k.startswith("mbconv:"))
    for field in ("in_hw=", "cin=", "cout=", "kernel=", "stride=", "expand", "act=", "se"):
        assert field in mb


def test_lut_resumes_and_refuses_another_device(measured, tmp_path):
    tmp, _, data, table, _, _ = measured
    again = build_lut("local-cpu", SPACE, "onnxruntime", data.configs, tmp / "lut.json", progress=False,
                      on_block=lambda k, ms: pytest.fail("nothing should be measured again"))
    assert again.entries == table.entries
    with pytest.raises(PredictorError, match="is the LUT of ofa-mbv3-w1.0 on local-cpu/onnxruntime"):
        build_lut("local-cpu", "mcu-mbnet", "onnxruntime", [], tmp / "lut.json", progress=False)


def test_block_sums_track_whole_networks_and_calibration_helps(measured):
    _, _, data, table, _, noise = measured
    sums = table.block_sum(data.configs)
    ratio = sums / data.y
    # blocks measured alone pay per-inference overheads each: sums exceed the whole, but rank alike
    assert np.all((0.5 < ratio) & (ratio < 4.0))
    cal = LatencyLUT(**{k: getattr(table, k) for k in ("space", "device", "runtime", "threads", "batch")},
                     entries=dict(table.entries))
    cal.calibrate(data.configs[:4], data.y[:4])
    a, b = cal.calibration
    assert b == 1.0 and a == pytest.approx(float(np.median(data.y[:4] - sums[:4])))
    report = compare(cal, data.configs[4:], data.y[4:])
    # the offset removes the systematic gap (per-inference overhead): what is left is the host's own
    # noise, which on CI's 2 shared cores moves one round of a network from the next by up to 50 %
    bias = float(np.mean(cal.predict(data.configs[4:]) / data.y[4:] - 1))
    assert abs(bias) < 0.1 + noise and report["calibrated"]["mape"] < 100 * (0.1 + noise)
    assert report["block_sum"]["tau"] > 0.3
    cal.calibrate(data.configs, data.y, slope=True)
    assert cal.calibration[1] != 1.0
    with pytest.raises(PredictorError, match="at least 3 measured networks"):
        cal.calibrate(data.configs[:2], data.y[:2], slope=True)


def test_missing_blocks_and_edited_files_are_clear_errors(measured, tmp_path):
    tmp, _, _, table, _, _ = measured
    other = get_space(SPACE).sample_unique(1, 999)
    with pytest.raises(PredictorError, match="the LUT has no entry for .* block"):
        table.block_sum(other)
    data = json.loads((tmp / "lut.json").read_text())
    data["entries"][next(iter(data["entries"]))] *= 2
    (tmp_path / "edited.json").write_text(json.dumps(data))
    with pytest.raises(PredictorError, match="content does not match its sha256"):
        LatencyLUT.load(tmp_path / "edited.json")


def test_cli_compare_reports_raw_and_calibrated(measured):
    tmp, db, _, _, _, _ = measured
    out = run_cli("lut", "compare", "--lut", str(tmp / "lut.json"), "--db", str(db), "--calibrate", "4",
                  cwd=tmp, check=True).stdout
    assert "| block_sum |" in out and "| calibrated |" in out and "compared on 6 others" in out
    bad = run_cli("lut", "compare", "--lut", str(tmp / "lut.json"), "--db", str(db), "--calibrate", "9", cwd=tmp)
    assert bad.returncode == 2 and "need 12" in bad.stderr


def test_kernel_level_model_predicts_blocks_it_never_measured(measured):
    from hwnas_deploy.predictors.kernel_level import KernelModel, parse_block_key

    _, _, data, table, _, _ = measured
    sp = get_space(SPACE)
    assert all(parse_block_key(k).key() == k for k in table.entries)  # keys parse back to their blocks
    held_out = {b.key() for b in sp.blocks(data.configs[-1])} - {
        b.key() for c in data.configs[:-1] for b in sp.blocks(c)}
    assert held_out  # the last network has blocks no other network has
    model = KernelModel(n_estimators=50).fit({k: v for k, v in table.entries.items() if k not in held_out})
    blocks = [parse_block_key(k) for k in sorted(held_out)]
    predicted = model.predict_blocks(blocks)
    measured_ms = np.asarray([table.entries[b.key()] for b in blocks])
    # within a factor of 3 per block, from the shapes of other blocks alone (the LUT has no answer)
    assert np.all((predicted / measured_ms > 1 / 3) & (predicted / measured_ms < 3))
    with pytest.raises(PredictorError, match="the LUT has no entry"):
        LatencyLUT(table.space, table.device, table.runtime, 1, 1,
                   {k: v for k, v in table.entries.items() if k not in held_out}).block_sum(data.configs[-1:])
    with pytest.raises(PredictorError, match="unknown block kind 'pool'"):
        parse_block_key("pool:k=3")


@pytest.mark.parametrize("estimator", ["kernels", "hybrid"])
def test_lut_based_predictors_fit_save_and_load(measured, tmp_path, estimator):
    from hwnas_deploy.predictors import Predictor

    _, _, data, table, _, noise = measured
    pred = Predictor(estimator, lut=table).fit(data.configs[:6], data.y[:6], SPACE)
    p = pred.predict(data.configs[6:])
    mape = float(np.mean(np.abs(p - data.y[6:]) / data.y[6:]))
    assert np.all(p > 0) and mape < 0.1 + noise  # within the host's own noise of the measurement
    pred.save(tmp_path / "p.json")
    assert "lut" in json.loads((tmp_path / "p.json").read_text())  # self-contained
    again = Predictor.load(tmp_path / "p.json")
    np.testing.assert_array_equal(again.predict(data.configs[6:]), p)
    with pytest.raises(PredictorError, match=f"estimator '{estimator}' is built on a latency LUT"):
        Predictor(estimator)
    with pytest.raises(PredictorError, match="the LUT is for space 'ofa-mbv3-w1.0', the rows for 'mcu-mbnet'"):
        Predictor(estimator, lut=table).fit(get_space("mcu-mbnet").sample_unique(3, 0), [1.0, 2.0, 3.0],
                                            "mcu-mbnet")
