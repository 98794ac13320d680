"""Twins that die with the process that owns them (a lab device's actor, killed with its host)."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preexec(owned: bool) -> Callable[[], None] | None:
    """Popen's preexec_fn for a twin: with `owned`, Linux kills it when the thread that started it
    exits (an actor process or its host going away); elsewhere, or not owned, nothing."""
    return _die_with_parent if owned and sys.platform.startswith("linux") else None
