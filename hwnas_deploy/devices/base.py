"""The one small interface every device driver implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from hwnas_deploy.artifact import Artifact
from hwnas_deploy.devices.profile import DeviceProfile
from hwnas_deploy.measure import MeasureSettings, Summary


class Driver(ABC):
    """open -> deploy -> measure (-> deploy -> measure ...) -> close.

    Drivers never sleep blindly: each step waits for its reply with a timeout and raises
    DeviceError naming the step that failed.
    """

    def __init__(self, profile: DeviceProfile):
        self.profile = profile

    @abstractmethod
    def open(self) -> dict[str, Any]:
        """Connect; return facts about the device (and its software) for the store."""

    @abstractmethod
    def deploy(self, artifact: Artifact, threads: int, weights: str = "real") -> Any:
        """Make the artifact runnable on the device; returns a handle for measure().

        `weights="generated"` lets a device behind a slow link make the weights up itself
        (latency-only: an MCU board's upload is then kilobytes); drivers whose deploy is quick
        upload the real ones either way, and their measurements say so."""

    @abstractmethod
    def measure(self, handle: Any, settings: MeasureSettings) -> Summary:
        """Time the deployed artifact under the measurement protocol."""

    def close(self) -> None:
        """Release the connection (default: nothing to release)."""

    def __enter__(self) -> Driver:
        try:
            self.open()
        except BaseException:
            self.close()  # what open() started before it failed (a twin, a connection) must not outlive it
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
