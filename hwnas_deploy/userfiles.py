"""Python files of the user's own (a model's `module.py:function`, a space's `FILE.py:CLASS`),
imported by path under a name of their own, every failure a one-line error naming the file."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hwnas_deploy.errors import ConfigError


def split_spec(text: str) -> tuple[str, str] | None:
    """("FILE.py", "NAME") for "FILE.py:NAME", else None."""
    if ":" not in text:
        return None
    file, name = text.rsplit(":", 1)
    return (file, name) if file.endswith(".py") and name else None


def import_file(file: str | Path, where: str) -> ModuleType:
    """The module of `file`; `where` starts each error (e.g. "--model net.py:build")."""
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"{where}: no such file {file}")
    name = f"hwnas_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code raises what it raises
        del sys.modules[name]
        raise ConfigError(f"{where}: importing {file} failed: {type(exc).__name__}: {exc}") from None
    return module


def attribute(file: str | Path, name: str, where: str, kind: str = "function"):
    module = import_file(file, where)
    if not hasattr(module, name):
        raise ConfigError(f"{where}: {file} has no {kind} {name!r}")
    return getattr(module, name)
