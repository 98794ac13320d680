"""Conversions kept across runs, keyed by exactly what goes into them.

The LiteRT conversion is most of an int8 export (~15 s of a network's ~20 s), a TVM build most of
a TVM one (5-8 s); a LUT, a search's validations, a lab and a test suite convert the same programs
again and again. An entry's key is the SHA-256 of what the converter reads: for LiteRT the
`torch.export` program (weights included) and the calibration samples, for TVM the ONNX file, the
input shape and the target (the host's CPU name included), and always the format and the
converter environment itself (its installed distributions and our driving source), so a hit is
the converter's own answer to the same question, and any change of model, data, target or
toolchain is a miss. Entries are written atomically (several processes share one cache), and the
least recently used go once the cache outgrows its bound.

    $HWNAS_CACHE_DIR     the cache folder (default: $XDG_CACHE_HOME/hwnas-deploy or ~/.cache/hwnas-deploy);
                         "off" turns caching off
    $HWNAS_CACHE_MAX_MB  its bound (default 2048)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.resources import CACHE_ENV_VAR, user_cache_dir

MAX_MB_ENV_VAR = "HWNAS_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048


def cache_dir() -> Path | None:
    """The cache folder (`resources.user_cache_dir`), or None when caching is off."""
    if os.environ.get(CACHE_ENV_VAR) == "off":
        return None
    return user_cache_dir()


def max_bytes() -> int:
    text = os.environ.get(MAX_MB_ENV_VAR, str(DEFAULT_MAX_MB))
    try:
        mb = float(text)
    except ValueError:
        mb = -1
    if mb < 0:
        raise ConfigError(f"${MAX_MB_ENV_VAR}={text!r}: give the cache's bound in MB, a number >= 0")
    return int(mb * 2**20)


@lru_cache(maxsize=4)
def toolchain_digest(python: str, script: str) -> str:
    """What identifies a converter environment: the distributions installed beside `python`
    (names and versions, from their dist-info folders) and the source file `script` that drives
    the conversion."""
    prefix = Path(python).parent.parent
    installed = sorted(p.name for p in prefix.glob("lib/python*/site-packages/*.dist-info"))
    h = hashlib.sha256("\n".join(installed).encode())
    h.update(Path(script).read_bytes())
    return h.hexdigest()


@dataclass
class Entry:
    key: str
    path: Path
    bytes: int
    last_used: float


class ConversionCache:
    """One folder of converted files named by key (`<key><suffix>`)."""

    def __init__(self, root: str | Path | None = None, max_size: int | None = None):
        self.root = Path(root) if root is not None else cache_dir()
        self.max_size = max_bytes() if max_size is None else max_size

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key(self, *parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / "conversions" / f"{key}{suffix}"

    def fetch(self, key: str, suffix: str, dest: Path) -> bool:
        """Copy the entry to `dest` if there is one (and mark it used)."""
        if not self.enabled:
            return False
        src = self._path(key, suffix)
        try:
            shutil.copyfile(src, dest)
            os.utime(src)
        except FileNotFoundError:
            return False
        return True

    def keep(self, key: str, suffix: str, src: Path) -> None:
        """Add `src` under `key` (atomically: a reader sees the whole file or none), then trim."""
        if not self.enabled:
            return
        dest = self._path(key, suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        os.chmod(tmp, 0o644)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.trim()

    def entries(self) -> list[Entry]:
        if not self.enabled or not (self.root / "conversions").is_dir():
            return []
        out = []
        for p in (self.root / "conversions").iterdir():
            if p.name.startswith(".tmp-"):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:  # trimmed by another process meanwhile
                continue
            out.append(Entry(p.name.split(".", 1)[0], p, st.st_size, st.st_mtime))
        return sorted(out, key=lambda e: e.last_used)

    def size(self) -> int:
        return sum(e.bytes for e in self.entries())

    def trim(self) -> list[Entry]:
        """Drop the least recently used entries until the cache is within its bound."""
        entries, dropped = self.entries(), []
        total = sum(e.bytes for e in entries)
        for e in entries:
            if total <= self.max_size:
                break
            e.path.unlink(missing_ok=True)
            total -= e.bytes
            dropped.append(e)
        return dropped

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        entries = self.entries()
        for e in entries:
            e.path.unlink(missing_ok=True)
        return len(entries)
