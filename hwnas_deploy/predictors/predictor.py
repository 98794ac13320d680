"""A latency or accuracy predictor: an estimator, its features, and the rows it was fitted on.

scikit-learn's shape: `Predictor("ridge").fit(configs, y, space=...)`, `.predict(configs)`.
`save()` writes JSON (estimator name, hyper-parameters, feature set, the training rows, and for
linear models their weights) with a SHA-256 of its content (hwnas_deploy/datafile.py);
`Predictor.load()` checks it and refits (trees and SVR refit deterministically; linear models
take their saved weights), so a loaded predictor predicts exactly as the saved one did and keeps
working across library versions (no pickles).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_deploy import datafile
from hwnas_deploy.errors import ConfigError, HwnasError, PredictorError
from hwnas_deploy.predictors.estimators import ESTIMATORS, estimator_spec, resolve_params
from hwnas_deploy.predictors.features import FEATURE_SETS
from hwnas_deploy.predictors.lut import LatencyLUT
from hwnas_deploy.predictors.models import regressor_of
from hwnas_deploy.spaces import get_space

try:  # scikit-learn's error for a parameter out of its range; not re-exported in a public module
    from sklearn.utils._param_validation import InvalidParameterError
except ImportError:  # pragma: no cover - a scikit-learn that moved it: its ValueError still says what is wrong
    InvalidParameterError = ValueError

FORMAT = "hwnas-predictor"
VERSION = 1
#: cost-count lines: fitted on the target itself, as latency grows with work (a log would bend them)
COST_LINES = tuple(name for name, spec in ESTIMATORS.items() if not spec.log_target)


class Predictor:
    """Fit on (config, target) rows of one search space; predict targets of other configs.

    log_target: fit log(y) (latency: errors become relative, predictions stay positive);
    None chooses it when every training target is positive and `target` is a latency, except for
    the straight lines through cost counts (`macs`, `costs`).
    lut: the device's latency LUT, which the `kernels` and `hybrid` estimators are built on (saved
    inside the predictor file, so it stays self-contained).
    The model itself is the estimator's composition of `predictors.models` parts."""

    def __init__(self, estimator: str = "ridge", params: dict[str, Any] | None = None, features: str | None = None,
                 log_target: bool | None = None, lut: LatencyLUT | None = None,
                 sources: dict[str, Any] | None = None):
        spec = estimator_spec(estimator)
        if spec.needs_lut and lut is None:
            raise PredictorError(f"estimator {estimator!r} is built on a latency LUT of the device: pass one "
                                 "(`--lut FILE` from `hwnas lut build`)")
        if spec.needs_sources and not sources:
            raise PredictorError(f"estimator {estimator!r} is built on other devices' measurements: pass them "
                                 "(`--transfer-from all` or DEVICE/RUNTIME,...)")
        self.lut = lut if spec.needs_lut else None
        #: with the transfer estimator: source name -> its rows ({"configs": [...], "y": [...]}), kept in the file
        self.sources = {k: {"configs": list(v["configs"]), "y": [float(x) for x in v["y"]]}
                        for k, v in (sources or {}).items()} if spec.needs_sources else None
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
        spec = estimator_spec(self.estimator)
        if self.log_target is None:
            self.log_target = bool(np.all(self.train_y > 0) and "latency" in target and spec.log_target)
        if self.log_target and np.any(self.train_y <= 0):
            raise PredictorError("log_target needs positive targets")
        if self.lut is not None and self.lut.space != sp.name:
            raise PredictorError(f"the LUT is for space {self.lut.space!r}, the rows for {sp.name!r}")
        extra = {"sources": self.sources} if spec.needs_sources else {}
        model = spec.compose(spec, self.params, sp.name, self.features, self.log_target, self.lut, **extra)
        try:
            self._model = model.fit(self.train_configs, self.train_y)
        except InvalidParameterError as exc:  # a parameter scikit-learn refuses (names it, its value, the range)
            raise PredictorError(f"estimator {self.estimator!r}: {exc}") from None
        return self

    def _fitted(self):
        if self._model is None:
            raise PredictorError("the predictor is not fitted: call fit() or Predictor.load()")
        return self._model

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return self._fitted().predict(configs)

    def predict_std(self, configs: Sequence[dict]) -> np.ndarray | None:
        """The predictive standard deviation of each config (in the target's units), for the
        estimators that have one (a Gaussian process); None for the others."""
        return self._fitted().predict_std(configs)

    @property
    def weights(self) -> tuple[list[float], float] | None:
        """(weights, bias) on the raw features, for the linear estimators; None for the others."""
        reg = regressor_of(self._fitted())
        return None if reg is None else reg.linear_form

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
            **({"linear": {"w": self.weights[0], "b": self.weights[1]}} if self.weights is not None else {}),
            **({"lut": self.lut.to_dict()} if self.lut is not None else {}),
            **({"sources": self.sources} if self.sources is not None else {}),
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
            pred = cls(data["estimator"], data["params"], data["features"], data["log_target"], lut,
                       data.get("sources"))
            pred.fit(train["configs"], train["y"], data["space"], data["target"], data.get("source", ""))
            reg = regressor_of(pred._model)
            if reg is not None and reg.linear:  # the saved weights, not a refit's last bits
                w, b = [float(v) for v in data["linear"]["w"]], float(data["linear"]["b"])
                if len(w) != len(reg.linear_form[0]):
                    raise PredictorError(f"{len(w)} weights for {len(reg.linear_form[0])} features")
                reg.linear_form = (w, b)
            return pred
        except (ConfigError, HwnasError, KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{where}: {exc!s}") from None
