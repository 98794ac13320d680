"""Where the files the CLI needs at run time live, in a checkout and in an installed wheel.

The firmware sources, the bundled device profiles and search recipes and the LiteRT converter's
requirements are the repository's `firmware/`, `device_profiles/`, `search/` and `tools/`; a
wheel carries them as data files under `<prefix>/share/hwnas-deploy/` (pyproject.toml's
`[tool.setuptools.data-files]`), never inside the package. What the toolchain writes (firmware
builds, the converter environment, conversions) goes to the user's cache folder, never beside an
installed package. A user's own profiles and recipes are looked up, first to last:

    $HWNAS_PROFILE_DIRS / $HWNAS_RECIPE_DIRS (os.pathsep-separated)
    ./device_profiles   / ./search            (the project folder a command runs in)
    <user config>/device_profiles, <user config>/search   (~/.config/hwnas-deploy on Linux)
    the bundled ones
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import platformdirs

APP = "hwnas-deploy"
CHECKOUT = Path(__file__).resolve().parents[1]  # the repository root, when running from a checkout
CACHE_ENV_VAR = "HWNAS_CACHE_DIR"


def in_checkout() -> bool:
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "hwnas_deploy").is_dir()


def bundled(name: str) -> Path:
    """A bundled folder or file (`firmware`, `device_profiles`, `search`, `tools/...`): the
    checkout's own, else the installed wheel's data files."""
    if in_checkout():
        return CHECKOUT / name
    return Path(sysconfig.get_path("data")) / "share" / APP / name


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def user_cache_dir() -> Path:
    """The toolchain's cache folder: $HWNAS_CACHE_DIR, else the platform's user cache folder
    (~/.cache/hwnas-deploy on Linux). With $HWNAS_CACHE_DIR=off (no conversion cache) the
    platform's folder still holds builds and environments."""
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit and explicit != "off":
        return Path(explicit).expanduser()
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def search_path(env_var: str, folder: str) -> list[tuple[Path, str]]:
    """(folder, where it comes from) for user files of one kind, first to last (module notes);
    only the folders that exist, each once."""
    dirs = [(Path(p), f"${env_var}") for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    dirs += [(Path.cwd() / folder, f"./{folder}"), (user_config_dir() / folder, "user config"),
             (bundled(folder), "bundled")]
    seen: set[Path] = set()
    out = []
    for d, origin in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append((d, origin))
    return out
