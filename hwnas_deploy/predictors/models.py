"""The parts a predictor is composed of, each a small object with `fit(configs, y)` / `predict(configs)`.

    LogTarget(OnFeatures(space, "onehot+macs", Regressor(RidgeCV(...), linear=True)))   # "ridge"
    OverLutSum(LogTarget(OnFeatures(..., lut_column=lut)), lut)                         # "hybrid"
    KernelLevel(space, lut, n_estimators)                                               # "kernels"

A regression on features is the core; a log target and the correction of a LUT's block sum wrap
it, as scikit-learn's `TransformedTargetRegressor` wraps a regressor. Which estimator name is
which composition is the estimator registry's business (`predictors.estimators`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from hwnas_deploy.predictors.features import featurize
from hwnas_deploy.spaces import get_space


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


class Regressor:
    """A scikit-learn regressor on a standardised target.

    linear: the fitted model is a weight vector, applied with exactly rounded sums (and saved as
    such), because a refit goes through BLAS/LAPACK, whose last bits can differ between processes.
    with_std: the model has a predictive standard deviation (`predict(..., return_std=True)`)."""

    def __init__(self, model, linear: bool = False, with_std: bool = False):
        self.model, self.linear, self.with_std = model, linear, with_std
        self.linear_form: tuple[list[float], float] | None = None

    def fit(self, x: np.ndarray, t: np.ndarray) -> Regressor:
        self._mu, self._sd = float(np.mean(t)), float(np.std(t)) or 1.0
        with warnings.catch_warnings(), threadpool_limits(1):
            # one BLAS thread: a fit (a GP's likelihood optimisation most of all) then does not depend on
            # how many threads the process has, so a saved predictor refits bit for bit anywhere.
            # A GP's noise level at its lower bound means the rows are fitted exactly: expected with few
            # rows, and not something a user can act on
            warnings.filterwarnings("ignore", message=".*close to the specified (lower|upper) bound")
            self.model.fit(x, (t - self._mu) / self._sd)
        self.linear_form = _linear_form(self.model) if self.linear else None
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.linear_form is not None:
            w, b = self.linear_form
            z = np.asarray([math.fsum((row * w).tolist()) + b for row in x])
        else:
            with threadpool_limits(1):
                z = self.model.predict(x)
        return z * self._sd + self._mu

    def predict_std(self, x: np.ndarray) -> np.ndarray | None:
        if not self.with_std:
            return None
        with threadpool_limits(1):
            _, s = self.model.predict(x, return_std=True)
        return s * self._sd


class OnFeatures:
    """A regressor on a feature set of the configs (with `lut_column`, the log of the LUT's block
    sum as one more feature)."""

    def __init__(self, space: str, features: str, regressor: Regressor, lut_column=None):
        self.space, self.features, self.inner, self.lut_column = space, features, regressor, lut_column

    def _x(self, configs: Sequence[dict]) -> np.ndarray:
        x = featurize(self.space, configs, self.features)
        if self.lut_column is not None:
            x = np.hstack([x, np.log(self.lut_column.block_sum(configs))[:, None]])
        return x

    def fit(self, configs: Sequence[dict], y: np.ndarray) -> OnFeatures:
        self.inner.fit(self._x(configs), np.asarray(y, dtype=np.float64))
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return self.inner.predict(self._x(configs))

    def predict_std(self, configs: Sequence[dict]) -> np.ndarray | None:
        return self.inner.predict_std(self._x(configs))


class LogTarget:
    """Fits log(y) (errors become relative, predictions stay positive); predicts exp."""

    def __init__(self, inner):
        self.inner = inner

    def fit(self, configs: Sequence[dict], y: np.ndarray) -> LogTarget:
        self.inner.fit(configs, np.log(y))
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return np.exp(self.inner.predict(configs))

    def predict_std(self, configs: Sequence[dict]) -> np.ndarray | None:
        sd = self.inner.predict_std(configs)
        return None if sd is None else self.predict(configs) * sd  # the delta method through the log


class OverLutSum:
    """Predicts the ratio of the target to the LUT's block sum, times the sum."""

    def __init__(self, inner, lut):
        self.inner, self.lut = inner, lut

    def fit(self, configs: Sequence[dict], y: np.ndarray) -> OverLutSum:
        self.inner.fit(configs, np.asarray(y, dtype=np.float64) / self.lut.block_sum(configs))
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return self.inner.predict(configs) * self.lut.block_sum(configs)

    def predict_std(self, configs: Sequence[dict]) -> np.ndarray | None:
        sd = self.inner.predict_std(configs)
        return None if sd is None else sd * self.lut.block_sum(configs)


class KernelLevel:
    """nn-Meter's kernel level: a model per block kind fitted on the LUT's blocks measured alone,
    summed over a network's blocks, plus the median whole-network offset of the training rows."""

    def __init__(self, space: str, lut, n_estimators: int):
        from hwnas_deploy.predictors.kernel_level import KernelModel

        self.space, self.lut, self.model = space, lut, KernelModel(n_estimators=n_estimators)

    def fit(self, configs: Sequence[dict], y: np.ndarray) -> KernelLevel:
        self.model.fit(self.lut.entries)
        self.offset = float(np.median(np.asarray(y) - self.model.network_sums(get_space(self.space), configs)))
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return self.model.network_sums(get_space(self.space), configs) + self.offset

    def predict_std(self, configs: Sequence[dict]) -> None:
        return None


class OnSources:
    """A regressor on other devices' latencies of the same configs: the log of each source's
    prediction (`sources`: name -> a fitted model of that device) and the log of the MACs. What a
    new device shares with the ones measured before is mostly their ranking of the networks; a
    few rows of the new device then fit how it weighs each source (transfer, HELP's idea with
    the sources' predictors as the device embedding)."""

    def __init__(self, space: str, sources: dict, regressor: Regressor):
        self.space, self.sources, self.inner = space, sources, regressor

    def _x(self, configs: Sequence[dict]) -> np.ndarray:
        sp = get_space(self.space)
        columns = [np.log(np.maximum(model.predict(configs), 1e-12)) for model in self.sources.values()]
        columns.append(np.log([max(sp.macs(c), 1) for c in configs]))
        return np.column_stack(columns)

    def fit(self, configs: Sequence[dict], y: np.ndarray) -> OnSources:
        self.inner.fit(self._x(configs), np.asarray(y, dtype=np.float64))
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return self.inner.predict(self._x(configs))

    def predict_std(self, configs: Sequence[dict]) -> None:
        return None


class Pretrained:
    """A model trained elsewhere (nn-Meter's): loading its files was the fit; the rows are kept."""

    def __init__(self, space: str, model):
        self.space, self.model = space, model

    def fit(self, configs: Sequence[dict], y: np.ndarray) -> Pretrained:
        return self

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        return self.model.predict(get_space(self.space), configs)

    def predict_std(self, configs: Sequence[dict]) -> None:
        return None


def regressor_of(model) -> Regressor | None:
    """The regressor at the core of a composition (None for the kernel-level and pre-trained ones)."""
    while model is not None and not isinstance(model, Regressor):
        model = getattr(model, "inner", None)
    return model
