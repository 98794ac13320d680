"""One network built and exported at a time in a process, except while it waits for another one.

Building draws a network's weights from torch's global random generator (and sets its thread
count), so two builds at once (an export ahead beside a device's output check, two exports)
would each get weights the other's draws interleaved with: `EXPORT_LOCK` is held across a build
and an export. Re-entrant: an export may build inside a held lock. A conversion in the LiteRT
converter's process touches nothing of this one, so the exporting thread gives the lock up while
it waits for one (`export_lock_released`), and another thread's export runs meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXPORT_LOCK = threading.RLock()


@contextmanager
def export_lock_released() -> Iterator[None]:
    """Give `EXPORT_LOCK` up entirely (however deeply this thread holds it) for the block, and
    take it back as it was; nothing to do where this thread does not hold it."""
    # RLock's save/restore pair, the one threading.Condition uses to wait inside a re-entrant lock
    if not EXPORT_LOCK._is_owned():
        yield
        return
    state = EXPORT_LOCK._release_save()
    try:
        yield
    finally:
        EXPORT_LOCK._acquire_restore(state)
