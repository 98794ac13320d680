"""What a setting may be: a check and the words that say it.

Every typed setting (a device profile's fields, the timing protocol's, an estimator's parameters,
the measurement options given through the library) is refused with one line naming where it is,
its value and what is allowed:

    integer(3).check(2.5, "bad.yaml: measurement.min_repeats")
    ConfigError: bad.yaml: measurement.min_repeats is 2.5; allowed: an integer >= 3
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwnas_deploy.errors import ConfigError


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (True is not a number here, though Python says it is)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Allowed:
    ok: Callable[[Any], bool]
    text: str

    def __call__(self, value: Any) -> bool:
        return bool(self.ok(value))

    def check(self, value: Any, name: str, error: type[Exception] = ConfigError) -> None:
        if not self.ok(value):
            raise error(f"{name} is {value!r}; allowed: {self.text}")


def integer(lo: int, hi: int | None = None, text: str | None = None) -> Allowed:
    """An integer in [lo, hi]."""
    return Allowed(lambda v: is_integer(v) and v >= lo and (hi is None or v <= hi),
                   text or f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


def number(lo: float, hi: float | None = None, *, strict: bool = True, text: str | None = None) -> Allowed:
    """A finite number above lo (and below hi); `strict=False` lets it equal the bounds."""
    def ok(v: Any) -> bool:
        if not is_number(v):
            return False
        if strict:
            return v > lo and (hi is None or v < hi)
        return v >= lo and (hi is None or v <= hi)

    if text is None:
        sign = ">" if strict else ">="
        text = f"a number {sign} {lo:g}" if hi is None else f"a number between {lo:g} and {hi:g}" + (
            ", exclusive" if strict else "")
    return Allowed(ok, text)


BOOLEAN = Allowed(lambda v: isinstance(v, bool), "true or false")
