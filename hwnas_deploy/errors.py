"""Errors a user can act on.

Every error names the file, field or value that is wrong and what is allowed, so the CLI can
print it as it is (no traceback) and exit with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class HwnasError(Exception):
    """Base class of every error hwnas-deploy raises on purpose."""


class ConfigError(HwnasError, ValueError):
    """A sub-network configuration, recipe or profile field is malformed or out of range."""


class UnknownNameError(HwnasError, LookupError):
    """A name (space, device, runtime, format) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")


class ExportError(HwnasError):
    """An export failed or its output does not match torch."""


class UnsupportedOpError(ExportError):
    """The target format cannot represent an operator of the model."""

    def __init__(self, fmt: str, op: str, detail: str = ""):
        self.fmt, self.op = fmt, op
        msg = f"{fmt} cannot take operator {op!r}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class DeviceError(HwnasError):
    """A device or runtime step failed; the message says which step."""


class StoreError(HwnasError):
    """The measurement store cannot be opened or written."""


class PredictorError(HwnasError):
    """A predictor file or training set is unusable; the message says what and where."""
