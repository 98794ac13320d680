"""A latency or accuracy predictor: an estimator, its features, and the rows it was fitted on.

scikit-learn's shape: `Predictor("ridge").fit(configs, y, space=...)`, `.predict(configs)`.
`save()` writes JSON (estimator name, hyper-parameters, feature set, target scaling and the
training rows) with a SHA-256 of its content (hwnas_deploy/datafile.py); `Predictor.load()` checks it and refits, which is
deterministic, so a loaded predictor predicts exactly as the saved one did and keeps working
across library versions (no pickles).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_deploy import datafile
from hwnas_deploy.errors import ConfigError, HwnasError, PredictorError
from hwnas_deploy.predictors.estimators import estimator_spec, resolve_params
from hwnas_deploy.predictors.features import FEATURE_SETS, featurize
from hwnas_deploy.spaces import get_space

FORMAT = "hwnas-predictor"
VERSION = 1


class Predictor:
    """Fit on (config, target) rows of one search space; predict targets of other configs.

    log_target: fit log(y) (latency: errors become relative, predictions stay positive);
    None chooses it when every training target is positive and `target` is a latency."""

    def __init__(self, estimator: str = "ridge", params: dict[str, Any] | None = None, features: str | None = None,
                 log_target: bool | None = None):
        spec = estimator_spec(estimator)
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
            self.log_target = bool(np.all(self.train_y > 0) and "latency" in target)
        if self.log_target and np.any(self.train_y <= 0):
            raise PredictorError("log_target needs positive targets")
        t = np.log(self.train_y) if self.log_target else self.train_y
        self._mu, self._sd = float(np.mean(t)), float(np.std(t)) or 1.0
        self._model = estimator_spec(self.estimator).build(self.params)
        self._model.fit(featurize(sp.name, self.train_configs, self.features), (t - self._mu) / self._sd)
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        if self._model is None:
            raise PredictorError("the predictor is not fitted: call fit() or Predictor.load()")
        t = self._model.predict(featurize(self.space, configs, self.features)) * self._sd + self._mu
        return np.exp(t) if self.log_target else t

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
            pred = cls(data["estimator"], data["params"], data["features"], data["log_target"])
            return pred.fit(train["configs"], train["y"], data["space"], data["target"], data.get("source", ""))
        except (ConfigError, HwnasError, KeyError, TypeError) as exc:
            raise PredictorError(f"{where}: {exc}") from None
