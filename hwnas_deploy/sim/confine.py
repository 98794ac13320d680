"""Keep the adb twin's shell inside its device folder.

A phone's `adb shell` cannot write to the host that drives it; the twin runs commands on that
host, so it is confined instead:

* **Landlock** (Linux 5.13+, unprivileged): the twin's process restricts itself before it serves
  anyone, and every command it runs inherits the restriction. Reading and executing stay open
  (the benchmark binary and its libraries live on the host); creating, writing, truncating,
  renaming and removing files are allowed only beneath the device folder (and writing to /dev,
  for /dev/null). `echo hi > /tmp/x` then fails with "Permission denied", whoever runs the twin.
* **An allowlist** where Landlock is missing: each simple command must start with a program a
  phone's shell offers (`ALLOWED`) or one pushed into the device folder; every absolute path and
  every redirection target must lie in the device folder (or be /dev/null or a read-only
  /proc, /sys path); command substitution is refused.
"""

from __future__ import annotations

import ctypes
import os
import shlex
from pathlib import Path

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # same numbers on x86-64 and arm64
PR_SET_NO_NEW_PRIVS = 38
RULE_PATH_BENEATH = 1
CREATE_RULESET_VERSION = 1
WRITE_FILE, REMOVE_DIR, REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
REFER, TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3

#: what a shell may start where Landlock is missing (toybox's, as a phone has them)
ALLOWED = frozenset("getprop mkdir chmod cat echo rm ls taskset sleep true false test [ kill pgrep ps uname nproc "
                    "head tail wc grep printf touch mv cp exit cd export wait".split())
READ_ONLY_PREFIXES = ("/proc/", "/sys/")


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is disabled)."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        return max(0, int(libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)))
    except (AttributeError, OSError):
        return 0


def restrict_writes_to(folder: Path) -> bool:
    """Landlock this process (and all it starts later) so that it writes only beneath `folder`
    (and /dev). Call it before starting threads. False where Landlock is not available."""
    abi = landlock_abi()
    if abi < 1:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    handled = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)
    attr = ctypes.c_uint64(handled)  # struct landlock_ruleset_attr's first field: enough for every ABI
    ruleset = libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(8), 0)
    if ruleset < 0:
        return False
    try:
        for path, access in ((folder, handled), (Path("/dev"), WRITE_FILE | (TRUNCATE if abi >= 3 else 0))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneath(access, fd)
                if libc.syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    return False
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.syscall(SYS_RESTRICT_SELF, ruleset, 0) == 0
    finally:
        os.close(ruleset)


def refusal(command: str, root: Path) -> str | None:
    """Why the allowlist refuses `command` (a host command, device folders already mapped into
    `root`), or None when it may run."""
    if "`" in command or "$(" in command:
        return "command substitution is not allowed on this device"
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:
        return f"cannot parse the command: {exc}"
    inside = str(root.resolve())
    start, redirect = True, False
    for token in tokens:
        if token and set(token) <= set("<>&|") and ("<" in token or ">" in token):
            redirect = True
            continue
        if token and set(token) <= set(";&|()"):
            start, redirect = True, False
            continue
        if token.startswith("/"):
            path = os.path.realpath(token)
            ok = path == inside or path.startswith(inside + os.sep) or path == "/dev/null" or (
                not redirect and not start and path.startswith(READ_ONLY_PREFIXES))
            if not ok:
                return f"{token}: outside this device's folders"
        if start and "=" not in token:
            name = Path(token).name
            if not (token.startswith("/") or name in ALLOWED):
                return f"{token}: not a command this device offers"
            start = False
        redirect = False
    return None
