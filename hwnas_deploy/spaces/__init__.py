"""Search spaces by name: ``get_space("ofa-mbv3-w1.0")``."""

from __future__ import annotations

from collections.abc import Callable

from hwnas_deploy.errors import UnknownNameError
from hwnas_deploy.spaces.base import Config, Param, SearchSpace, config_to_json, load_config, load_configs
from hwnas_deploy.spaces.blox import Blox
from hwnas_deploy.spaces.mcu_mbnet import MCUMobileNet
from hwnas_deploy.spaces.nb201 import NASBench201
from hwnas_deploy.spaces.ofa_mbv3 import OFAMobileNetV3

_REGISTRY: dict[str, Callable[[], SearchSpace]] = {
    "ofa-mbv3-w1.0": lambda: OFAMobileNetV3(1.0),
    "ofa-mbv3-w1.2": lambda: OFAMobileNetV3(1.2),
    "mcu-mbnet": MCUMobileNet,
    "nb201": NASBench201,
    "blox": Blox,
    "blox-mini": lambda: Blox("blox-mini", channels=16, resolution=16, num_classes=10),
}
_CACHE: dict[str, SearchSpace] = {}


def space_names() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str) -> SearchSpace:
    if name not in _REGISTRY:
        raise UnknownNameError("search space", name, _REGISTRY)
    if name not in _CACHE:
        _CACHE[name] = _REGISTRY[name]()
    return _CACHE[name]


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
