"""nn-Meter estimators: the message when its files are missing, and the call path through the
nn-meter package with a small nn-Meter-format predictor built here (nn-Meter's released files are
downloads, which tests do not make)."""

from __future__ import annotations

import json
import pickle

import nn_meter  # noqa: F401 - the nn-meter extra (tools/setup.sh): a broken install fails here
import numpy as np
import pytest

from hwnas_deploy.errors import PredictorError
from hwnas_deploy.predictors import Predictor
from hwnas_deploy.predictors.nn_meter import NnMeterEstimator, _predictor_table
from hwnas_deploy.spaces import get_space

NAME = "cortexA76cpu_tflite21"
SPACE = "ofa-mbv3-w1.0"
FUSION_RULES = {f"BF_{a}_{b}": {"obey": True} for a, b in [("conv", "bn"), ("conv", "relu"), ("conv", "relu6"),
                                                          ("dwconv", "bn"), ("dwconv", "relu"), ("bn", "relu")]}


class ConvCost:
    """A kernel predictor as nn-Meter calls it (`predict(list of feature lists)` -> ms): a fixed
    cost per million multiply-accumulates of a (depthwise) convolution (nn-Meter's feature 5 is
    FLOPs / 2e6), nothing for other kernels. Module-level, so it pickles."""

    def __init__(self, ms_per_mmac: float, conv: bool):
        self.ms_per_mmac, self.conv = ms_per_mmac, conv

    def predict(self, rows):
        return [self.ms_per_mmac * r[5] if self.conv else 0.0 for r in rows]


def build_predictor(folder, ms_per_mmac: float) -> None:
    info = next(p for p in _predictor_table() if p["name"] == NAME)
    folder.mkdir(parents=True, exist_ok=True)
    for kernel in info["kernel_predictors"]:
        with open(folder / f"{kernel}.pkl", "wb") as f:
            pickle.dump(ConvCost(ms_per_mmac, "conv" in kernel), f)
    (folder / "fusion_rules.json").write_text(json.dumps(FUSION_RULES))


def test_missing_files_say_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_NN_METER_DIR", str(tmp_path))
    sp = get_space(SPACE)
    with pytest.raises(PredictorError, match=rf"nn-Meter predictor '{NAME}' needs its files in {tmp_path}/{NAME}: "
                                             r"missing conv-bn-relu.pkl, .*fusion_rules.json\. They are in "
                                             r"https://github.com/microsoft/nn-Meter/releases/.*zip"):
        Predictor(f"nn-meter:{NAME}").fit(sp.sample_unique(2, 0), [1.0, 2.0], SPACE)
    with pytest.raises(PredictorError, match="nn-Meter has no predictor 'pixel9'; it has cortexA76cpu_tflite21"):
        NnMeterEstimator("pixel9")


def test_a_local_nn_meter_predictor_runs_through_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_NN_METER_DIR", str(tmp_path))
    build_predictor(tmp_path / NAME, 0.01)
    sp = get_space(SPACE)
    configs = sp.sample_unique(3, 4)
    pred = Predictor(f"nn-meter:{NAME}").fit(configs, [1.0, 2.0, 3.0], SPACE)
    p = pred.predict(configs)
    # nn-Meter found the convolutions in our ONNX graphs: 0.01 ms per M MACs of them (SE and the
    # classifier are other kernels), within the 2 % its biases and H/stride rounding add
    conv_mmacs = np.asarray([sum(b.macs() for b in sp.blocks(c) if b.kind != "head") / 1e6 for c in configs])
    assert np.all(p > 0)
    np.testing.assert_allclose(p, 0.01 * conv_mmacs, rtol=0.05)  # measured: 1.02x
    assert np.argsort(p).tolist() == np.argsort(conv_mmacs).tolist()
    build_predictor(tmp_path / NAME, 0.02)  # the files are what it runs
    np.testing.assert_allclose(Predictor(f"nn-meter:{NAME}").fit(configs, [1, 2, 3], SPACE).predict(configs),
                               2 * p, rtol=1e-9)
