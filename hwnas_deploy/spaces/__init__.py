"""Search spaces by name: ``get_space("ofa-mbv3-w1.0")``.

Besides the built-in spaces, a name is looked up among installed packages' entry points (group
`hwnas.spaces`: ``tiny-cnn = "mypkg.spaces:TinyCNN"``), and ``FILE.py:CLASS`` loads a space from a
file of your own (examples/tiny_space.py). Either way the class is a `SearchSpace` built without
arguments; a space from a file is known by its `name` too for the rest of the process.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from hwnas_deploy.errors import ConfigError, UnknownNameError
from hwnas_deploy.spaces.base import Config, Param, SearchSpace, config_to_json, load_config, load_configs
from hwnas_deploy.spaces.blox import Blox
from hwnas_deploy.spaces.mcu_mbnet import MCUMobileNet
from hwnas_deploy.spaces.nb201 import NASBench201
from hwnas_deploy.spaces.ofa_mbv3 import OFAMobileNetV3
from hwnas_deploy.userfiles import attribute, split_spec

_REGISTRY: dict[str, Callable[[], SearchSpace]] = {
    "ofa-mbv3-w1.0": lambda: OFAMobileNetV3(1.0),
    "ofa-mbv3-w1.2": lambda: OFAMobileNetV3(1.2),
    "mcu-mbnet": MCUMobileNet,
    "nb201": NASBench201,
    "blox": Blox,
    "blox-mini": lambda: Blox("blox-mini", channels=16, resolution=16, num_classes=10),
}
_CACHE: dict[str, SearchSpace] = {}


ENTRY_POINT_GROUP = "hwnas.spaces"


def space_names() -> list[str]:
    return sorted(set(_REGISTRY) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get_space(name: str) -> SearchSpace:
    if name in _CACHE:
        return _CACHE[name]
    if name in _REGISTRY:
        space = _REGISTRY[name]()
    elif split_spec(name):
        space = _from_file(name)
        _CACHE[space.name] = space
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise UnknownNameError("search space", name, space_names())
        space = _instance(found[0].load, f"entry point {name!r} ({found[0].value})")
    _CACHE[name] = space
    return space


def _from_file(spec: str) -> SearchSpace:
    file, cls = split_spec(spec)
    space = _instance(lambda: attribute(file, cls, f"--space {spec}", "class"), f"--space {spec}")
    space.source = f"{Path(file).resolve()}:{cls}"  # where a later process (a run folder's reader) finds it
    return space


def _instance(load: Callable[[], object], where: str) -> SearchSpace:
    cls = load()
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        raise ConfigError(f"{where}: {cls!r} is not a SearchSpace subclass")
    try:
        space = cls()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{where}: {cls.__name__}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(space, "name", None), str) or not getattr(space, "params", None):
        raise ConfigError(f"{where}: a space needs a `name` (str) and `params` (Param, ...)")
    return space


__all__ = [
    "Blox",
    "Config",
    "MCUMobileNet",
    "NASBench201",
    "OFAMobileNetV3",
    "Param",
    "SearchSpace",
    "config_to_json",
    "get_space",
    "load_config",
    "load_configs",
    "space_names",
]
