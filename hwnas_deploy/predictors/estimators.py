"""The regressors a predictor can use, by name, with their default hyper-parameters.

Each is a scikit-learn estimator built from plain data (name + parameters), so a predictor file
stores data, never a pickle. Random states are fixed: refitting on the same rows gives the same
model, which is how a saved predictor is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwnas_deploy.errors import PredictorError, UnknownNameError


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    description: str
    defaults: dict[str, Any]
    build: Callable[[dict[str, Any]], Any]
    features: str  # the feature set it uses by default
    needs_lut: bool = False  # built on a latency LUT of the same device (hwnas_deploy/lut.py)


def _ridge(p):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # the penalty by leave-one-out over a fixed grid: deterministic, and right for 50 rows or 1000
    return make_pipeline(StandardScaler(), RidgeCV(alphas=p["alphas"]))


def _svr(p):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    return make_pipeline(StandardScaler(), SVR(C=p["C"], epsilon=p["epsilon"], gamma=p["gamma"]))


def _gp(p):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # one isotropic length scale: with a few hundred rows, a scale per one-hot column overfits;
    # the noise term absorbs what the smooth part cannot (training noise in real accuracies)
    kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(p["length_scale"], (1e-1, 1e4))
              + WhiteKernel(p["noise"], (1e-6, 1.0)))
    return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel, n_restarts_optimizer=0, random_state=0))


def _gbt(p):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=p["max_iter"], learning_rate=p["learning_rate"], max_leaf_nodes=p["max_leaf_nodes"],
        min_samples_leaf=p["min_samples_leaf"], random_state=0,
    )


def _rf(p):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=p["n_estimators"], max_features=p["max_features"], min_samples_leaf=p["min_samples_leaf"],
        random_state=0, n_jobs=1,
    )


def _kernels(p):
    from hwnas_deploy.predictors.kernel_level import KernelModel

    return KernelModel(n_estimators=p["n_estimators"])


def _linear(p):
    from sklearn.linear_model import LinearRegression

    return LinearRegression()


ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        EstimatorSpec("ridge", "ridge regression on one-hot genes + MACs/params (penalty by leave-one-out)",
                      {"alphas": [0.01, 0.1, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0]}, _ridge, "onehot+macs"),
        EstimatorSpec("svr", "RBF support-vector regression", {"C": 10.0, "epsilon": 0.01, "gamma": "scale"}, _svr,
                      "onehot+macs"),
        EstimatorSpec("gp", "Gaussian-process regression (RBF + noise kernel, fitted by marginal likelihood): "
                      "the surrogate of Bayesian optimisation, good with few rows", {"length_scale": 10.0, "noise": 0.01},
                      _gp, "onehot+macs"),
        EstimatorSpec("gbt", "gradient-boosted trees (scikit-learn histogram GBT)",
                      {"max_iter": 400, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 5}, _gbt,
                      "onehot+macs"),
        EstimatorSpec("rf", "random forest",
                      {"n_estimators": 300, "max_features": 0.5, "min_samples_leaf": 1}, _rf, "onehot+macs"),
        EstimatorSpec("kernels", "kernel-level (nn-Meter style): a forest per block kind trained on the LUT's "
                      "blocks measured alone, summed over the network, plus the median whole-network offset",
                      {"n_estimators": 200}, _kernels, "onehot", needs_lut=True),
        EstimatorSpec("hybrid", "the LUT's block sum times a learned correction: gradient-boosted trees on the "
                      "log ratio measured / block sum, from the genes, MACs and the block sum",
                      {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 5}, _gbt,
                      "onehot+macs", needs_lut=True),
        EstimatorSpec("macs", "baseline: a straight line through MACs", {}, _linear, "macs"),
        EstimatorSpec("costs", "a plane through MACs and output elements (per-MAC and per-output work: "
                      "instruction counts of a core without caches follow it)", {}, _linear, "costs"),
    )
}


def _nn_meter_spec(name: str) -> EstimatorSpec:
    from hwnas_deploy.predictors.nn_meter import PREFIX, NnMeterEstimator

    device = name[len(PREFIX):]
    return EstimatorSpec(name, f"nn-Meter's pre-trained kernel-level predictor {device!r} (its files, locally)",
                         {}, lambda p: NnMeterEstimator(device), "onehot")


def estimator_spec(name: str) -> EstimatorSpec:
    if name.startswith("nn-meter:"):
        return _nn_meter_spec(name)
    if name not in ESTIMATORS:
        raise UnknownNameError("estimator", name, ESTIMATORS)
    return ESTIMATORS[name]


def resolve_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The estimator's defaults overridden by `params`; unknown keys are an error."""
    spec = estimator_spec(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "(none)"
        raise PredictorError(f"estimator {name!r} has no parameter {', '.join(unknown)}; it takes {allowed}")
    return {**spec.defaults, **params}
