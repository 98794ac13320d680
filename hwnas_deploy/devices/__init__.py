"""Devices: profiles (YAML) and one driver per kind."""

from __future__ import annotations

from hwnas_deploy.devices.android_adb import AndroidAdbDriver
from hwnas_deploy.devices.base import Driver
from hwnas_deploy.devices.local import LocalDriver
from hwnas_deploy.devices.mcu_serial import DoesNotFitError, McuSerialDriver
from hwnas_deploy.devices.profile import DeviceProfile, available_profiles, load_profile
from hwnas_deploy.devices.tvm_rpc import TvmRpcDriver
from hwnas_deploy.errors import DeviceError

_DRIVERS: dict[str, type[Driver]] = {
    "server": LocalDriver,
    "mcu-serial": McuSerialDriver,
    "android-adb": AndroidAdbDriver,
    "tvm-rpc": TvmRpcDriver,
}


def driver_for(profile: DeviceProfile) -> Driver:
    if profile.kind not in _DRIVERS:
        raise DeviceError(
            f"device {profile.name!r} is of kind {profile.kind!r}, for which this version has no driver "
            f"(drivers: {', '.join(sorted(_DRIVERS))})"
        )
    return _DRIVERS[profile.kind](profile)


__all__ = [
    "AndroidAdbDriver", "DeviceProfile", "DoesNotFitError", "Driver", "LocalDriver", "McuSerialDriver", "TvmRpcDriver",
    "available_profiles", "driver_for", "load_profile",
]
