"""What a command starts ends with it, however the command ends.

`RunScope` wraps one command (the CLI enters one around every `hwnas` call):

* SIGTERM and SIGHUP end the command as Ctrl-C does (`Terminated`, a KeyboardInterrupt, is
  raised where the command is), so every `with` and `finally` runs: twins stop, what was measured
  is stored, and the exit status is 128 + the signal;
* the command's temporary files and folders, its converter's and its twins' go into one run
  folder, ``$TMPDIR/hwnas-run-<pid>-<random>`` (the scope points `tempfile` and TMPDIR there),
  removed at exit;
* every process the command starts inherits ``HWNAS_RUN=<run folder>`` in its environment, and
  any still alive at exit is terminated;
* a watchdog process (this file, run by path) holds the other end of a pipe: when the command
  dies without cleaning up (SIGKILL, the OOM killer), the pipe closes and the watchdog does the
  same clean-up, and runs the commands registered with `on_exit` (`adb disconnect` of a twin's
  serial, which no process of the run can do once it is dead) and removes the files registered
  with `remove_on_exit` (a checkpoint's half-written temporary file beside it);
* at start, run folders whose command is gone (its watchdog killed too) are cleaned the same way.

What must outlive the command (a `hwnas sim start` twin, a `hwnas lab up` cluster, the adb
server, which is the host's) is started with `detached_env()` / inside `outside_run()`: without
the marker, with the system's temporary folder.

Processes are found by the marker in /proc/PID/environ, so this is Linux's; elsewhere the scope
still handles signals and its run folder, and twins still stop in their `finally`.
This module imports only the standard library: the watchdog runs it as a script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

MARKER = "HWNAS_RUN"
PREFIX = "hwnas-run-"
ON_EXIT = ".on-exit.jsonl"
HANDLED = (signal.SIGTERM, signal.SIGHUP)

_active: RunScope | None = None


class Terminated(KeyboardInterrupt):
    """The command was asked to stop by a signal other than SIGINT; ends it as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _environments():
    """(pid, environment bytes) of every process but this one that can be read."""
    for proc in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{proc.name}/environ", "rb") as fh:
                yield int(proc.name), fh.read()
        except OSError:  # gone, or another user's
            continue


def processes_with(entry: str) -> list[int]:
    """PIDs of the processes (other than this one) started with `entry` ("NAME=value") in their
    environment."""
    needle = b"\0" + entry.encode() + b"\0"
    return [pid for pid, env in _environments() if needle in b"\0" + env + b"\0"]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def run_processes(run_dir: str) -> list[int]:
    """The processes of a run: those with its marker, and the children of these (or of this
    process) caught in the middle of an exec. A process's environment reads empty from the moment
    its parent is told the exec succeeded until the new program's stack is set up; under load a
    child started just before the clean-up can be seen in that window (a CI run left a `sleep`
    alive that way)."""
    needle = b"\0" + f"{MARKER}={run_dir}".encode() + b"\0"
    pids, blank = [], []
    for pid, env in _environments():  # one pass over /proc
        if needle in b"\0" + env + b"\0":
            pids.append(pid)
        elif not env:
            blank.append(pid)
    parents = set(pids) | {os.getpid()}
    return pids + [pid for pid in blank if _parent(pid) in parents]


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for this purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def clean(run_dir: str, grace_s: float = 2.0) -> None:
    """Terminate the run's processes (SIGKILL after `grace_s`), run its `on_exit` commands, and
    remove its folder. Safe to repeat."""
    pids = run_processes(run_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.02)
        if not pids:
            break
    try:
        lines = (Path(run_dir) / ON_EXIT).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            action = json.loads(line)
            if "remove" in action:
                os.remove(action["remove"])
            else:
                subprocess.run(action["run"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, env=detached_env())
        except (ValueError, KeyError, TypeError, OSError, subprocess.SubprocessError):
            pass
    shutil.rmtree(run_dir, ignore_errors=True)


def sweep(base: str) -> None:
    """Clean the run folders under `base` whose command and watchdog are both gone."""
    for d in Path(base).glob(f"{PREFIX}*"):
        try:
            pid = int(d.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        watchdog = d / ".watchdog"
        wpid = int(watchdog.read_text()) if watchdog.exists() and watchdog.read_text().isdigit() else 0
        if d.is_dir() and not alive(pid) and not (wpid and alive(wpid)):
            clean(str(d))


def system_tempdir() -> str:
    """The temporary folder outside any run."""
    return _active.base if _active is not None else tempfile.gettempdir()


def detached_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a process that must outlive the command: without the
    run's marker, with the system's temporary folder."""
    env = dict(os.environ if env is None else env)
    env.pop(MARKER, None)
    if _active is not None:
        if _active.saved_env_tmpdir is None:
            env.pop("TMPDIR", None)
        else:
            env["TMPDIR"] = _active.saved_env_tmpdir
    return env


@contextmanager
def outside_run():
    """Start here what must outlive the command (its processes get `detached_env()`)."""
    scope = _active
    if scope is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(detached_env(saved))
    tempfile.tempdir = scope.saved_tempdir
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = str(scope.dir)


def _register(action: dict) -> None:
    if _active is not None:
        with open(_active.dir / ON_EXIT, "a") as fh:
            fh.write(json.dumps(action) + "\n")


def on_exit(command: list[str]) -> None:
    """Run `command` when the current run ends, even when it is killed (by the watchdog). A
    no-op outside a run scope (a library caller's own `finally` remains)."""
    _register({"run": command})


def remove_on_exit(path: str | Path) -> None:
    """Remove `path` when the current run ends, even when it is killed, if it is still there (a
    temporary file written beside its destination and renamed over it). A no-op outside a run
    scope."""
    _register({"remove": str(path)})


def current() -> RunScope | None:
    return _active


class RunScope:
    """One command's lifetime (see the module docstring). Enter it in the main thread."""

    def __init__(self):
        self.dir: Path | None = None
        self.signum: int | None = None
        self.base = ""
        self.watchdog: subprocess.Popen | None = None
        self.saved_tempdir: str | None = None
        self.saved_env_tmpdir: str | None = None
        self._handlers: dict[int, object] = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:
            return  # already ending: let the clean-up finish
        self.signum = signum
        raise Terminated(signum)

    def __enter__(self) -> RunScope:
        global _active
        if _active is not None:
            raise RuntimeError("a run scope is already active in this process")
        self.base = tempfile.gettempdir()
        sweep(self.base)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.base))
        self.saved_tempdir, self.saved_env_tmpdir = tempfile.tempdir, os.environ.get("TMPDIR")
        env = dict(os.environ)
        env.pop(MARKER, None)
        self.watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, "--watch", str(self.dir)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        (self.dir / ".watchdog").write_text(str(self.watchdog.pid))
        tempfile.tempdir = str(self.dir)
        os.environ["TMPDIR"] = str(self.dir)
        os.environ[MARKER] = str(self.dir)
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        for sig in HANDLED:  # a second signal now would cut the clean-up short
            if sig in self._handlers:
                signal.signal(sig, signal.SIG_IGN)
        try:
            clean(str(self.dir))
            try:
                self.watchdog.stdin.write(b"done")
                self.watchdog.stdin.close()
                self.watchdog.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.watchdog.kill()
        finally:
            tempfile.tempdir = self.saved_tempdir
            os.environ.pop(MARKER, None)
            if self.saved_env_tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = self.saved_env_tmpdir
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
            _active = None

    def exit_status(self, status: int) -> int:
        """The command's exit status: 128 + the signal that ended it, if one did."""
        return 128 + self.signum if self.signum is not None else status


def _watch(run_dir: str) -> None:
    """The watchdog: wait for the command's end; clean up unless it said it did."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    said = b""
    while True:
        chunk = sys.stdin.buffer.read1(64)
        if not chunk:
            break
        said += chunk
    if said != b"done":
        clean(run_dir)


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(sys.argv[2])
