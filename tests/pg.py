"""A throw-away PostgreSQL server for the tests that need a lab's shared store: its own cluster in
a temporary folder, reached only through a Unix socket there, stopped and deleted on exit.
PostgreSQL itself comes from tools/setup.sh (Debian's `postgresql`)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PORT = 5432  # names the socket file in the private folder; nothing listens on TCP


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    path = found[-1] if found else shutil.which(name)
    assert path, f"PostgreSQL's {name} is not installed: tools/setup.sh installs Debian's postgresql"
    return path


@contextmanager
def postgres_server(database: str = "hwnas") -> Iterator[str]:
    """Start a server, create `database`, yield its SQLAlchemy URL; stop it and delete it."""
    folder = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's postgres user
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"

    def run(*cmd: str) -> None:
        proc = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}"

    started = False
    try:
        run(_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-k {folder} -p {PORT} -c listen_addresses='' -c fsync=off -c max_connections=50"
        run(_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
        started = True
        run(_bin("createdb"), "-h", str(folder), "-p", str(PORT), "-U", "postgres", database)
        yield f"postgresql+psycopg://postgres@/{database}?host={folder}&port={PORT}"
    finally:
        if started:
            subprocess.run([*as_user, _bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
