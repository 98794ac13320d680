"""Clients sharing one store (a lab's PostgreSQL, or a SQLite file) measure each key once.

A client takes a claim on a key just before its executor takes the job, and drops it once the
outcome is recorded. A claim lapses `ttl_s` after it was last renewed; a heartbeat renews this
client's claims every quarter of that, so a live client keeps what it measures however long a
measurement takes, and the claims of a client that was killed lapse within `ttl_s` for another
to take (`HWNAS_CLAIM_TTL_S`, default 60 s). Time is each client's clock: hosts of one lab are
expected to keep it (NTP) to well within `ttl_s`.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

from hwnas_deploy.errors import ConfigError, HwnasError
from hwnas_deploy.store import MeasurementKey, Store

TTL_ENV_VAR = "HWNAS_CLAIM_TTL_S"
DEFAULT_TTL_S = 60.0


def claim_ttl_s() -> float:
    text = os.environ.get(TTL_ENV_VAR)
    if not text:
        return DEFAULT_TTL_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1:
        raise ConfigError(f"${TTL_ENV_VAR} {text!r}: allowed: seconds >= 1")
    return value


class Claims:
    """This client's claims on one store, renewed by a heartbeat thread until `close()`."""

    def __init__(self, store: Store, ttl_s: float | None = None):
        self.store = store
        self.ttl_s = claim_ttl_s() if ttl_s is None else ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="hwnas-claims", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.store.renew_claims(self.owner, self.ttl_s)
            except HwnasError:
                pass  # the store is briefly unreachable: the next beat tries again, within the TTL

    def take(self, key: MeasurementKey) -> bool:
        return self.store.claim(key, self.owner, self.ttl_s)

    def release(self, key: MeasurementKey) -> None:
        self.store.release(self.owner, key)

    def holder(self, key: MeasurementKey) -> str | None:
        """Who else holds `key` now (None: nobody, or only this client)."""
        held = self.store.claim_of(key)
        return None if held is None or held["owner"] == self.owner else held["owner"]

    def close(self) -> None:
        self._stop.set()
        self._beat.join()
        self.store.release(self.owner)
