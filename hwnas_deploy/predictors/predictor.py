"""A latency or accuracy predictor: an estimator, its features, and the rows it was fitted on.

scikit-learn's shape: `Predictor("ridge").fit(configs, y, space=...)`, `.predict(configs)`.
`save()` writes JSON (estimator name, hyper-parameters, feature set, the training rows, and for
linear models their weights) with a SHA-256 of its content (hwnas_deploy/datafile.py);
`Predictor.load()` checks it and refits (trees and SVR refit deterministically; linear models
take their saved weights), so a loaded predictor predicts exactly as the saved one did and keeps
working across library versions (no pickles).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hwnas_deploy import datafile
from hwnas_deploy.errors import ConfigError, HwnasError, PredictorError
from hwnas_deploy.predictors.estimators import estimator_spec, resolve_params
from hwnas_deploy.predictors.features import FEATURE_SETS, featurize
from hwnas_deploy.predictors.lut import LatencyLUT
from hwnas_deploy.spaces import get_space

FORMAT = "hwnas-predictor"
VERSION = 1
#: estimators whose fitted form is a weight vector: stored as such and applied with exactly
#: rounded sums, because a refit goes through BLAS/LAPACK, whose last bits can differ between
#: processes (memory alignment picks different SIMD paths)
LINEAR = ("ridge", "macs", "costs")
#: cost-count lines: fitted on the target itself, as latency grows with work (a log would bend them)
COST_LINES = ("macs", "costs")


def _linear_form(model) -> tuple[list[float], float]:
    """(weights, bias) on the raw features of a fitted [StandardScaler +] linear model."""
    steps = getattr(model, "steps", None)
    if steps:
        scaler, reg = steps[0][1], steps[-1][1]
        w = reg.coef_ / scaler.scale_
        b = float(reg.intercept_) - math.fsum((reg.coef_ * scaler.mean_ / scaler.scale_).tolist())
    else:
        w, b = model.coef_, float(model.intercept_)
    return [float(v) for v in w], b


class Predictor:
    """Fit on (config, target) rows of one search space; predict targets of other configs.

    log_target: fit log(y) (latency: errors become relative, predictions stay positive);
    None chooses it when every training target is positive and `target` is a latency, except for
    the straight lines through cost counts (`macs`, `costs`).
    lut: the device's latency LUT, which the `kernels` and `hybrid` estimators are built on (saved
    inside the predictor file, so it stays self-contained)."""

    def __init__(self, estimator: str = "ridge", params: dict[str, Any] | None = None, features: str | None = None,
                 log_target: bool | None = None, lut: LatencyLUT | None = None):
        spec = estimator_spec(estimator)
        if spec.needs_lut and lut is None:
            raise PredictorError(f"estimator {estimator!r} is built on a latency LUT of the device: pass one "
                                 "(`--lut FILE` from `hwnas lut build`)")
        self.lut = lut if spec.needs_lut else None
        self.estimator = estimator
        self.params = resolve_params(estimator, params)
        self.features = features or spec.features
        if self.features not in FEATURE_SETS:
            raise PredictorError(f"unknown feature set {self.features!r}; known: {', '.join(FEATURE_SETS)}")
        self.log_target = log_target
        self.space: str | None = None
        self.target = "y"
        self.source = ""
        self._model = None
        self._linear: tuple[list[float], float] | None = None

    # -- scikit-learn style -------------------------------------------------------------------
    def fit(self, configs: Sequence[dict], y: Sequence[float], space: str, target: str = "latency_ms",
            source: str = "") -> Predictor:
        sp = get_space(space)
        if len(configs) != len(y) or len(configs) < 2:
            raise PredictorError(f"need at least 2 training rows with one target each, got {len(configs)} configs "
                                 f"and {len(y)} targets")
        self.space, self.target, self.source = sp.name, target, source
        self.train_configs = [sp.canonical(c) for c in configs]
        self.train_y = np.asarray(y, dtype=np.float64)
        if self.log_target is None:
            self.log_target = bool(np.all(self.train_y > 0) and "latency" in target
                                   and self.estimator not in COST_LINES)
        if self.log_target and np.any(self.train_y <= 0):
            raise PredictorError("log_target needs positive targets")
        t = np.log(self.train_y) if self.log_target else self.train_y
        if self.lut is not None and self.lut.space != sp.name:
            raise PredictorError(f"the LUT is for space {self.lut.space!r}, the rows for {sp.name!r}")
        self._model = estimator_spec(self.estimator).build(self.params)
        if self.estimator.startswith("nn-meter:"):  # pre-trained: loading its files was the fit
            self._linear = None
            return self
        if self.estimator == "kernels":
            self._model.fit(self.lut.entries)
            resid = self.train_y - self._model.network_sums(sp, self.train_configs)
            self._offset = float(np.median(resid))
            self._linear = None
            return self
        if self.estimator == "hybrid":
            if not self.log_target:
                raise PredictorError("the hybrid estimator predicts a positive latency (log_target)")
            t = t - np.log(self.lut.block_sum(self.train_configs))
        self._mu, self._sd = float(np.mean(t)), float(np.std(t)) or 1.0
        with warnings.catch_warnings(), threadpool_limits(1):
            # one BLAS thread: a fit (a GP's likelihood optimisation most of all) then does not depend on
            # how many threads the process has, so a saved predictor refits bit for bit anywhere.
            # A GP's noise level at its lower bound means the rows are fitted exactly: expected with few
            # rows, and not something a user can act on
            warnings.filterwarnings("ignore", message=".*close to the specified (lower|upper) bound")
            self._model.fit(self._features(self.train_configs), (t - self._mu) / self._sd)
        self._linear = _linear_form(self._model) if self.estimator in LINEAR else None
        return self

    def _features(self, configs: Sequence[dict]) -> np.ndarray:
        x = featurize(self.space, configs, self.features)
        if self.estimator == "hybrid":
            x = np.hstack([x, np.log(self.lut.block_sum(configs))[:, None]])
        return x

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        if self._model is None:
            raise PredictorError("the predictor is not fitted: call fit() or Predictor.load()")
        if self.estimator == "kernels":
            return self._model.network_sums(get_space(self.space), configs) + self._offset
        if self.estimator.startswith("nn-meter:"):
            return self._model.predict(get_space(self.space), configs)
        x = self._features(configs)
        if self._linear is not None:
            w, b = self._linear
            z = np.asarray([math.fsum((row * w).tolist()) + b for row in x])
        else:
            with threadpool_limits(1):
                z = self._model.predict(x)
        t = z * self._sd + self._mu
        if self.estimator == "hybrid":
            t = t + np.log(self.lut.block_sum(configs))
        return np.exp(t) if self.log_target else t

    def predict_std(self, configs: Sequence[dict]) -> np.ndarray | None:
        """The predictive standard deviation of each config (in the target's units), for the
        estimators that have one (a Gaussian process); None for the others."""
        if self._model is None:
            raise PredictorError("the predictor is not fitted: call fit() or Predictor.load()")
        if self.estimator != "gp":
            return None
        with threadpool_limits(1):
            z, s = self._model.predict(self._features(configs), return_std=True)
        t, sd = z * self._sd + self._mu, s * self._sd
        return np.exp(t) * sd if self.log_target else sd  # delta method through the log

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "estimator": self.estimator,
            "params": self.params,
            "features": self.features,
            "log_target": self.log_target,
            "space": self.space,
            "target": self.target,
            "source": self.source,
            "train": {"configs": self.train_configs, "y": [float(v) for v in self.train_y]},
            **({"linear": {"w": self._linear[0], "b": self._linear[1]}} if self._linear is not None else {}),
            **({"lut": self.lut.to_dict()} if self.lut is not None else {}),
        }

    def save(self, path: str | Path) -> Path:
        if self._model is None:
            raise PredictorError("fit the predictor before saving it")
        return datafile.write(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        return cls.from_dict(datafile.read(path, FORMAT, VERSION, "predictor"), str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "predictor") -> Predictor:
        """Refit from a checked file body (see hwnas_deploy/datafile.py)."""
        missing = [k for k in ("estimator", "params", "features", "log_target", "space", "target", "train")
                   if k not in data]
        if missing:
            raise PredictorError(f"{where}: missing field(s) {', '.join(missing)}")
        train = data["train"]
        try:
            lut = LatencyLUT.from_dict(data["lut"], f"{where}: lut") if "lut" in data else None
            pred = cls(data["estimator"], data["params"], data["features"], data["log_target"], lut)
            pred.fit(train["configs"], train["y"], data["space"], data["target"], data.get("source", ""))
            if pred.estimator in LINEAR:  # the saved weights, not a refit's last bits
                w, b = [float(v) for v in data["linear"]["w"]], float(data["linear"]["b"])
                if len(w) != len(pred._linear[0]):
                    raise PredictorError(f"{len(w)} weights for {len(pred._linear[0])} features")
                pred._linear = (w, b)
            return pred
        except (ConfigError, HwnasError, KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{where}: {exc!s}") from None
