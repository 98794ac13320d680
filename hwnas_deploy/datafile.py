"""JSON files that carry data instead of pickles (predictors, LUTs): a format name, a version
and a SHA-256 of their content, so a corrupted or hand-edited file is refused with a clear error."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hwnas_deploy.errors import PredictorError
from hwnas_deploy.lifetime import remove_on_exit


def finite(value: Any) -> Any:
    """`value` with every non-finite float (inf, NaN) as None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write(path: str | Path, body: dict[str, Any]) -> Path:
    """Write `body` plus its sha256, atomically: a crash leaves the previous file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    remove_on_exit(tmp)  # a kill before the rename below leaves no half-written file beside the data
    with os.fdopen(fd, "w") as f:
        json.dump({**body, "sha256": digest(body)}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read(path: str | Path, fmt: str, version: int, what: str) -> dict[str, Any]:
    """The checked body of a file written by `write` (without its sha256)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PredictorError(f"{path}: no such {what} file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictorError(f"{path}: not a {what} file (invalid JSON: {exc})") from None
    return check(data, fmt, version, what, str(path))


def check(data: Any, fmt: str, version: int, what: str, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise PredictorError(f"{where}: not a {what} file (field 'format' must be {fmt!r})")
    if data.get("version") != version:
        raise PredictorError(f"{where}: {what} format version {data.get('version')!r}; this hwnas reads version "
                             f"{version}")
    body = {k: v for k, v in data.items() if k != "sha256"}
    if digest(body) != data.get("sha256"):
        raise PredictorError(f"{where}: content does not match its sha256 (the file was edited or corrupted)")
    return body
