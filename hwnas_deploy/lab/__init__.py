"""A hardware lab on Ray: many devices on many hosts, one store (`pip install 'hwnas-deploy[lab]'`).

    hwnas lab up --device qemu-m7*2 --device sim-android --device local-cpu     # on the head
    hwnas lab up --address HEAD:6380 --device nucleo-h743zi@/dev/ttyACM0 --allow-remote   # a worker host
    hwnas profile --lab 127.0.0.1:6380 --device qemu-m7 --space mcu-mbnet --runtime firmware --samples 40
    hwnas lab status --address 127.0.0.1:6380

Each device is a Ray custom resource owned by one actor (`devices`); `scheduler.LabExecutor` fans
a measurement run's jobs out to the devices of its profile (the measurement loop records them in
the caller's store); `cluster` starts and stops hosts, loopback unless told otherwise.
"""

from __future__ import annotations

try:
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    from hwnas_deploy.errors import ConfigError

    raise ConfigError("the lab needs Ray: pip install 'hwnas-deploy[lab]'") from exc

from hwnas_deploy.lab.cluster import DEFAULT_PORT, LabInfo, connect, down, up
from hwnas_deploy.lab.devices import DeviceSpec, lab_devices, resources_for, start_devices
from hwnas_deploy.lab.scheduler import LabExecutor
from hwnas_deploy.lab.status import status

__all__ = ["DEFAULT_PORT", "DeviceSpec", "LabExecutor", "LabInfo", "connect", "down", "lab_devices", "resources_for",
           "start_devices", "status", "up"]
