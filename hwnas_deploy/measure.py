"""The timing protocol: warm-up, adaptive repeats, robust summary statistics.

Repeats continue until the distribution-free 95 % confidence interval of the median is within
`target_ci` (relative half-width) of the median, or `max_repeats` / `time_budget_s` is reached.
Samples beyond Q3 + 3 IQR (Tukey's far-out fence: preemption, page faults) are left out of the
summary, but every raw sample is kept and stored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache

import numpy as np
from scipy.stats import binom

from hwnas_deploy.allowed import Allowed, integer, number
from hwnas_deploy.errors import ConfigError

#: each setting and what it may be; max_repeats is also at least min_repeats
RULES: dict[str, Allowed] = {
    "warmup": integer(0),
    "min_repeats": integer(3),
    "max_repeats": integer(3),
    "target_ci": number(0, 1, text="a number between 0 and 1, exclusive (0.02: the median within 2 %)"),
    "time_budget_s": number(0, text="a number of seconds > 0"),
    "outlier_fence": number(0, text="a number > 0 (IQRs above Q3)"),
}


def check_settings(values: Mapping, where: str = "measurement") -> None:
    """ConfigError naming the first setting whose type or range is wrong, its value and what is
    allowed."""
    for name, allowed in RULES.items():
        allowed.check(values[name], f"{where}.{name}")
    if values["max_repeats"] < values["min_repeats"]:
        integer(values["min_repeats"], text=f"an integer >= min_repeats ({values['min_repeats']!r})").check(
            values["max_repeats"], f"{where}.max_repeats")


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 10
    min_repeats: int = 20
    max_repeats: int = 500
    target_ci: float = 0.02
    time_budget_s: float = 10.0
    outlier_fence: float = 3.0

    def __post_init__(self):
        check_settings(asdict(self))

    @classmethod
    def from_mapping(cls, values: Mapping, where: str = "measurement") -> MeasureSettings:
        """Settings from a mapping (a profile's `measurement:`); `where` names it in errors."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(known)}")
        check_settings({**asdict(cls()), **values}, where)
        return cls(**dict(values))


@dataclass
class Summary:
    """Latency statistics in milliseconds."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    iqr_ms: float
    min_ms: float
    std_ms: float
    n: int
    n_outliers: int
    ci_rel: float
    converged: bool
    samples_ms: list[float] = field(repr=False, default_factory=list)
    #: device-specific facts of this measurement (per-layer cycles, memory, count unit, ...)
    details: dict = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=4096)
def _median_ci_ranks(n: int, confidence: float) -> tuple[int, int]:
    """The order statistics bounding the median's confidence interval over n samples (cached: the
    measurement loop asks after every few repeats, and scipy's binomial quantiles cost 0.5 ms)."""
    alpha = 1 - confidence
    lo = int(binom.ppf(alpha / 2, n, 0.5)) - 1
    hi = int(binom.isf(alpha / 2, n, 0.5))
    return max(lo, 0), min(hi, n - 1)


def median_ci_rel(sorted_ms: np.ndarray, confidence: float = 0.95) -> float:
    """Relative half-width of the order-statistic confidence interval of the median.

    Below 6 samples no order statistics give 95 %: the half-range is returned instead (0 for a
    deterministic device whose repeats agree, such as an MCU counting instructions)."""
    n = len(sorted_ms)
    if n < 2:
        return math.inf
    if n < 6:
        median = float(np.median(sorted_ms))
        return (float(sorted_ms[-1]) - float(sorted_ms[0])) / (2 * median) if median > 0 else math.inf
    lo, hi = _median_ci_ranks(n, confidence)
    median = float(np.median(sorted_ms))
    return (float(sorted_ms[hi]) - float(sorted_ms[lo])) / (2 * median) if median > 0 else math.inf


def summarize(samples_ms: list[float], fence: float = 3.0, target_ci: float = 0.02) -> Summary:
    raw = np.asarray(samples_ms, dtype=np.float64)
    q1, q3 = np.percentile(raw, [25, 75])
    kept = np.sort(raw[raw <= q3 + fence * (q3 - q1)])
    ci = median_ci_rel(kept)
    kq1, kq3 = np.percentile(kept, [25, 75])
    return Summary(
        median_ms=float(np.median(kept)),
        mean_ms=float(kept.mean()),
        p90_ms=float(np.percentile(kept, 90)),
        iqr_ms=float(kq3 - kq1),
        min_ms=float(kept[0]),
        std_ms=float(kept.std(ddof=1)) if len(kept) > 1 else 0.0,
        n=len(raw),
        n_outliers=len(raw) - len(kept),
        ci_rel=float(ci),
        converged=bool(ci <= target_ci),
        samples_ms=[float(s) for s in raw],
    )


def measure(run_once: Callable[[], None], settings: MeasureSettings = MeasureSettings()) -> Summary:
    """Time `run_once` (one inference) under the protocol above."""
    for _ in range(settings.warmup):
        run_once()
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + settings.time_budget_s
    check_every = max(5, settings.min_repeats // 4)
    while len(samples) < settings.max_repeats:
        t0 = clock()
        run_once()
        samples.append((clock() - t0) * 1e3)
        n = len(samples)
        if n >= settings.min_repeats and (n % check_every == 0 or clock() > deadline):
            if clock() > deadline:
                break
            if summarize(samples, settings.outlier_fence, settings.target_ci).converged:
                break
    return summarize(samples, settings.outlier_fence, settings.target_ci)
