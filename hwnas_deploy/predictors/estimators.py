"""The estimators a predictor can use, by name: the model each composes, with its defaults.

Each is built from plain data (name + parameters; a scikit-learn regressor at its core), so a
predictor file stores data, never a pickle. Random states are fixed: refitting on the same rows
gives the same model, which is how a saved predictor is loaded. An estimator's `compose` puts
the parts of `predictors.models` together (a regression on features, in log space or not; the
LUT's block sum corrected; the LUT's blocks modelled per kind; a pre-trained model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwnas_deploy.allowed import BOOLEAN, Allowed, integer, number
from hwnas_deploy.errors import PredictorError, UnknownNameError


def _regression(spec: EstimatorSpec, params: dict, space: str, features: str, log_target: bool, lut):
    from hwnas_deploy.predictors.models import LogTarget, OnFeatures, Regressor

    core = OnFeatures(space, features, Regressor(spec.build(params), spec.linear, spec.with_std))
    return LogTarget(core) if log_target else core


def _lut_corrected(spec: EstimatorSpec, params: dict, space: str, features: str, log_target: bool, lut):
    from hwnas_deploy.predictors.models import LogTarget, OnFeatures, OverLutSum, Regressor

    if not log_target:
        raise PredictorError(f"the {spec.name} estimator predicts a positive latency (log_target)")
    return OverLutSum(LogTarget(OnFeatures(space, features, Regressor(spec.build(params)), lut_column=lut)), lut)


def _kernel_level(spec: EstimatorSpec, params: dict, space: str, features: str, log_target: bool, lut):
    from hwnas_deploy.predictors.models import KernelLevel

    return KernelLevel(space, lut, params["n_estimators"])


def _pretrained(spec: EstimatorSpec, params: dict, space: str, features: str, log_target: bool, lut):
    from hwnas_deploy.predictors.models import Pretrained

    return Pretrained(space, spec.build(params))


def _transfer(spec: EstimatorSpec, params: dict, space: str, features: str, log_target: bool, lut, sources=None):
    from hwnas_deploy.predictors.models import LogTarget, OnSources, Regressor
    from hwnas_deploy.predictors.transfer import source_models

    if not log_target:
        raise PredictorError("the transfer estimator predicts a positive latency (log_target)")
    return LogTarget(OnSources(space, source_models(space, sources, params["base"]),
                               Regressor(_ridge(params), linear=True)))


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    description: str
    defaults: dict[str, Any]
    build: Callable[[dict[str, Any]], Any]  # params -> the regressor (or pre-trained model) at its core
    features: str  # the feature set it uses by default
    needs_lut: bool = False  # built on a latency LUT of the same device (predictors/lut.py)
    needs_sources: bool = False  # built on other devices' measurements (predictors/transfer.py)
    #: how its parts are put together: (spec, params, space, features, log_target, lut) -> model
    compose: Callable[..., Any] = _regression
    linear: bool = False  # the fitted core is a weight vector (saved as such, applied exactly)
    with_std: bool = False  # it has a predictive standard deviation
    #: a latency is fitted in log space, except by straight lines through cost counts (latency
    #: grows with work; a log would bend them)
    log_target: bool = True


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


def _linear(p):
    from sklearn.linear_model import LinearRegression

    return LinearRegression()


ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        EstimatorSpec("ridge", "ridge regression on one-hot genes + MACs/params (penalty by leave-one-out)",
                      {"alphas": [0.01, 0.1, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0]}, _ridge, "onehot+macs",
                      linear=True),
        EstimatorSpec("svr", "RBF support-vector regression", {"C": 10.0, "epsilon": 0.01, "gamma": "scale"}, _svr,
                      "onehot+macs"),
        EstimatorSpec("gp", "Gaussian-process regression (RBF + noise kernel, fitted by marginal likelihood): "
                      "the surrogate of Bayesian optimisation, good with few rows", {"length_scale": 10.0, "noise": 0.01},
                      _gp, "onehot+macs", with_std=True),
        EstimatorSpec("gbt", "gradient-boosted trees (scikit-learn histogram GBT)",
                      {"max_iter": 400, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 5}, _gbt,
                      "onehot+macs"),
        EstimatorSpec("rf", "random forest",
                      {"n_estimators": 300, "max_features": 0.5, "min_samples_leaf": 1}, _rf, "onehot+macs"),
        EstimatorSpec("kernels", "kernel-level (nn-Meter style): a forest per block kind trained on the LUT's "
                      "blocks measured alone, summed over the network, plus the median whole-network offset",
                      {"n_estimators": 200}, None, "onehot", needs_lut=True, compose=_kernel_level),
        EstimatorSpec("hybrid", "the LUT's block sum times a learned correction: gradient-boosted trees on the "
                      "log ratio measured / block sum, from the genes, MACs and the block sum",
                      {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 5}, _gbt,
                      "onehot+macs", needs_lut=True, compose=_lut_corrected),
        EstimatorSpec("transfer", "for a device with few rows: ridge regression on the log latencies that "
                      "predictors of other devices (the sources, `--transfer-from`) give the same networks, and "
                      "log MACs", {"base": "gbt", "alphas": [0.1, 1.0, 10.0, 100.0]}, None, "macs",
                      needs_sources=True, compose=_transfer, linear=True),
        EstimatorSpec("macs", "baseline: a straight line through MACs", {}, _linear, "macs", linear=True,
                      log_target=False),
        EstimatorSpec("costs", "a plane through MACs and output elements (per-MAC and per-output work: "
                      "instruction counts of a core without caches follow it)", {}, _linear, "costs", linear=True,
                      log_target=False),
    )
}


def _nn_meter_spec(name: str) -> EstimatorSpec:
    from hwnas_deploy.predictors.nn_meter import PREFIX, NnMeterEstimator

    device = name[len(PREFIX):]
    return EstimatorSpec(name, f"nn-Meter's pre-trained kernel-level predictor {device!r} (its files, locally)",
                         {}, lambda p: NnMeterEstimator(device), "onehot", compose=_pretrained)


def estimator_spec(name: str) -> EstimatorSpec:
    if name.startswith("nn-meter:"):
        return _nn_meter_spec(name)
    if name not in ESTIMATORS:
        raise UnknownNameError("estimator", name, ESTIMATORS)
    return ESTIMATORS[name]


_POSITIVE = number(0)


def _allowed(default: Any) -> Allowed:
    """What a parameter may be, from its default's type (every numeric default here is > 0)."""
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, int):
        return integer(1, text="an integer > 0")
    if isinstance(default, float):
        return _POSITIVE
    if isinstance(default, list):
        return Allowed(lambda v: isinstance(v, list) and bool(v) and all(map(_POSITIVE, v)),
                       f"a non-empty list of numbers > 0, like {default[:3]}")
    return Allowed(lambda v: isinstance(v, str) or _POSITIVE(v), f"a name like {default!r} or a number > 0")


def resolve_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The estimator's defaults overridden by `params`; unknown keys and values of the wrong
    type or range are errors naming the parameter, its value and what is allowed."""
    spec = estimator_spec(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "(none)"
        raise PredictorError(f"estimator {name!r} has no parameter {', '.join(unknown)}; it takes {allowed}")
    for key, value in params.items():
        _allowed(spec.defaults[key]).check(value, f"estimator {name!r}: parameter {key}", PredictorError)
    return {**spec.defaults, **params}
