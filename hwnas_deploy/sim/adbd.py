"""Device-side adb on loopback: the Android phone's twin, driven by the real `adb` client.

The adb server connects to it with `adb connect 127.0.0.1:PORT` exactly as to a phone in TCP
mode (wireless debugging). What it speaks, from the adb protocol (system/core/adb/protocol.txt):

* messages with a 24-byte little-endian header (command, arg0, arg1, length, data_check,
  magic = command ^ 0xffffffff), version 0x01000001 (checksums optional);
* CNXN with a device banner; `features=shell_v2,cmd` makes the client use shell protocol v2,
  which carries stdout, stderr and the exit code (without it `adb shell` loses both);
* streams: OPEN -> OKAY, WRTE each acknowledged by OKAY before the next, CLSE. Each stream runs
  on its own thread (a pull blocks on the client while a shell writes);
* services `shell[,v2][,raw|,pty]:COMMAND` and `sync:` (STAT, LIST, SEND, RECV, QUIT, v1);
* authentication as a phone with USB debugging authorised: CNXN is answered with an AUTH token;
  the client signs it with its private key (RSA, PKCS#1 v1.5 over the token as a SHA-1 digest)
  and the connection is accepted only if the signature verifies with one of the keys the twin
  was given (`--keys`, adb_keys format: by default the host's own `~/.android/adbkey.pub`, or
  `$ANDROID_USER_HOME/adbkey.pub`); nothing but CNXN and AUTH is answered before that. A client
  whose keys do not verify sees the device as `unauthorized`, as a phone whose owner has not
  accepted the debugging prompt; `--deny-auth` accepts no key at all.

Commands run under /bin/sh on this host in a sandbox folder that holds the device's file
system: `/data/local/tmp` (and `/sys/class/thermal`) in a command or sync path is
`ROOT/data/local/tmp` (`ROOT/sys/class/thermal`); `sim.confine` keeps them from writing
anywhere else (Landlock, or an allowlist where the kernel has none). Ports 5555-5585 are
refused: the adb server scans them as emulators on its own.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import queue
import socket
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

from hwnas_deploy.sim.confine import refusal, restrict_writes_to
from hwnas_deploy.sim.owned import preexec

A_SYNC, A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (
    int.from_bytes(name, "little") for name in (b"SYNC", b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE")
)
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4
SYNC_DATA_MAX = 64 * 1024
DEVICE_TMP = "/data/local/tmp"
#: device folders that live in the sandbox (commands naming them are rewritten): the scratch
#: folder, and thermal zones (a test writes a zone's `temp` to exercise the thermal guard)
MAPPED = (DEVICE_TMP, "/sys/class/thermal")
EMULATOR_PORTS = range(5555, 5586)
HEADER = struct.Struct("<6I")


#: DER prefix of a SHA-1 DigestInfo: adb signs its 20-byte token as if it were a SHA-1 digest
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


def default_keys() -> Path:
    """Where the host's adb keeps its public key (the key a phone would be asked to authorise)."""
    home = os.environ.get("ANDROID_USER_HOME") or str(Path.home() / ".android")
    return Path(home) / "adbkey.pub"


def public_keys(path: Path) -> list[tuple[int, int]]:
    """(modulus, exponent) of every key in an adb_keys-format file (one per line: base64 of
    Android's RSAPublicKey struct, then a comment); missing or malformed lines are skipped."""
    keys = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return keys
    for line in lines:
        try:
            blob = base64.b64decode(line.split()[0], validate=True)
            words = struct.unpack_from("<I", blob, 0)[0]  # then n0inv, modulus, rr (R^2 mod n), exponent
            size = 4 * words
            modulus = int.from_bytes(blob[8:8 + size], "little")
            exponent = struct.unpack_from("<I", blob, 8 + 2 * size)[0]
        except (IndexError, ValueError, struct.error):
            continue
        if modulus and exponent:
            keys.append((modulus, exponent))
    return keys


def signed_by(token: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    """Whether `signature` is the key's PKCS#1 v1.5 signature of `token` (as adb makes it)."""
    modulus, exponent = key
    k = (modulus.bit_length() + 7) // 8
    if len(signature) != k or len(token) != hashlib.sha1().digest_size:
        return False
    padded = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(k, "big")
    body = SHA1_DIGEST_INFO + token
    return padded == b"\x00\x01" + b"\xff" * (k - 3 - len(body)) + b"\x00" + body


def _message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF) + data


class _Closed(Exception):
    pass


class _Stream:
    """One adb stream: bytes in (a queue fed by the connection's reader), bytes out (WRTE, one
    in flight until the client's OKAY)."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.buffer = b""
        self.acked = threading.Event()
        self.acked.set()
        self.closed = threading.Event()
        self.write_lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.write_lock:
            for i in range(0, len(data), self.conn.max_payload):
                while not self.acked.wait(0.5):
                    if self.closed.is_set() or self.conn.dead.is_set():
                        raise _Closed
                if self.closed.is_set():
                    raise _Closed
                self.acked.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, data[i:i + self.conn.max_payload])

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.inbox.get()
            if chunk is None:
                raise _Closed
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_some(self) -> bytes:
        if self.buffer:
            out, self.buffer = self.buffer, b""
            return out
        chunk = self.inbox.get()
        if chunk is None:
            raise _Closed
        return chunk

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
            self.conn.forget(self)


class _Connection:
    """One adb server's connection to this device."""

    def __init__(self, daemon: AdbDaemon, sock: socket.socket):
        self.daemon, self.sock = daemon, sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.dead = threading.Event()
        self.token = b""
        self.authorised = False

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self.send_lock:
            try:
                self.sock.sendall(_message(command, arg0, arg1, data))
            except OSError:
                self.dead.set()

    def forget(self, stream: _Stream) -> None:
        self.streams.pop(stream.local_id, None)

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise _Closed
            data += chunk
        return data

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _check, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    return  # not adb: drop the connection as adbd does
                self._handle(command, arg0, arg1, self._recv_exact(length) if length else b"")
        except (_Closed, OSError):
            pass
        finally:
            self.dead.set()
            for s in list(self.streams.values()):
                s.closed.set()
                s.inbox.put(None)
            self.sock.close()

    def _challenge(self) -> None:
        self.token = os.urandom(20)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            self.authorised = False
            self._challenge()
        elif command == A_AUTH:
            if arg0 == AUTH_SIGNATURE and self.token and not self.daemon.deny_auth and any(
                    signed_by(self.token, data, key) for key in public_keys(self.daemon.keys)):
                self.authorised, self.token = True, b""
                self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.daemon.banner().encode())
            elif arg0 == AUTH_SIGNATURE:  # not a key this device trusts: ask for the next one
                self._challenge()
            # AUTH_RSAPUBLICKEY: the phone would show its prompt; nobody accepts it here
        elif not self.authorised:
            raise _Closed  # anything else before authentication: drop the connection, as adbd does
        elif command == A_OPEN:
            stream = _Stream(self, self.next_id, arg0)
            self.next_id += 1
            self.streams[stream.local_id] = stream
            self.send(A_OKAY, stream.local_id, stream.remote_id)
            service = data.rstrip(b"\0").decode(errors="replace")
            threading.Thread(target=self._run_service, args=(stream, service), daemon=True).start()
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.remote_id = arg0
                stream.acked.set()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.inbox.put(data)
                self.send(A_OKAY, arg1, arg0)
        elif command == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None:
                stream.closed.set()
                stream.inbox.put(None)

    def _run_service(self, stream: _Stream, service: str) -> None:
        try:
            if service.startswith("shell"):
                _Shell(self.daemon, stream, service).run()
            elif service.startswith("sync:"):
                _Sync(self.daemon, stream).run()
            else:
                stream.write(f"unknown service {service!r}\n".encode())
        except _Closed:
            pass
        finally:
            stream.close()


class _Shell:
    def __init__(self, daemon: AdbDaemon, stream: _Stream, service: str):
        head, _, self.command = service.partition(":")
        self.v2 = "v2" in head.split(",")[1:]
        self.daemon, self.stream = daemon, stream

    def _packet(self, kind: int, data: bytes) -> None:
        if self.v2:
            self.stream.write(bytes([kind]) + struct.pack("<I", len(data)) + data)
        elif kind in (SHELL_STDOUT, SHELL_STDERR):
            self.stream.write(data)

    def run(self) -> None:
        if not self.command.strip():
            self._packet(SHELL_STDERR, b"this device runs commands only (adb shell COMMAND)\n")
            self._packet(SHELL_EXIT, bytes([1]))
            return
        command = self.daemon.to_host_command(self.command)
        why = refusal(command, self.daemon.root) if self.daemon.confinement == "allowlist" else None
        if why:
            self._packet(SHELL_STDERR, f"/system/bin/sh: {why}\n".encode())
            self._packet(SHELL_EXIT, bytes([126]))
            return
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=self.daemon.tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "TMPDIR": str(self.daemon.tmp),
                 "PATH": f"{self.daemon.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )
        self.daemon.processes.add(proc)

        def pump(pipe, kind):
            try:
                for chunk in iter(lambda: pipe.read1(65536), b""):
                    self._packet(kind, chunk)
            except _Closed:
                proc.kill()

        pumps = [threading.Thread(target=pump, args=(p, k), daemon=True)
                 for p, k in ((proc.stdout, SHELL_STDOUT), (proc.stderr, SHELL_STDERR))]
        for t in pumps:
            t.start()
        threading.Thread(target=self._stdin, args=(proc,), daemon=True).start()
        rc = proc.wait()
        for t in pumps:
            t.join()
        self.daemon.processes.discard(proc)
        self._packet(SHELL_EXIT, bytes([rc & 0xFF]))

    def _stdin(self, proc: subprocess.Popen) -> None:
        try:
            while True:
                if not self.v2:
                    proc.stdin.write(self.stream.read_some())
                    proc.stdin.flush()
                    continue
                kind = self.stream.read_exact(1)[0]
                data = self.stream.read_exact(struct.unpack("<I", self.stream.read_exact(4))[0])
                if kind == SHELL_STDIN:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                elif kind == SHELL_CLOSE_STDIN:
                    break
        except (_Closed, OSError):
            if proc.poll() is None and self.stream.closed.is_set():
                proc.kill()  # the client went away (Ctrl-C, lost connection): as adbd, end the command
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass


class _Sync:
    def __init__(self, daemon: AdbDaemon, stream: _Stream):
        self.daemon, self.stream = daemon, stream

    def _request(self) -> tuple[bytes, int]:
        head = self.stream.read_exact(8)
        return head[:4], struct.unpack("<I", head[4:])[0]

    def _fail(self, message: str) -> None:
        data = message.encode()
        self.stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def run(self) -> None:
        while True:
            rid, length = self._request()
            if rid == b"QUIT":
                return
            arg = self.stream.read_exact(length).decode(errors="replace")
            if rid == b"STAT":
                self._stat(arg)
            elif rid == b"LIST":
                self._list(arg)
            elif rid == b"SEND":
                self._send(arg)
            elif rid == b"RECV":
                self._recv(arg)
            else:
                self._fail(f"unknown sync request {rid!r}")
                return

    def _stat(self, device_path: str) -> None:
        try:
            st = os.stat(self.daemon.to_host_path(device_path))
            values = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        except (OSError, PermissionError):
            values = (0, 0, 0)
        self.stream.write(b"STAT" + struct.pack("<3I", *values))

    def _list(self, device_path: str) -> None:
        try:
            folder = self.daemon.to_host_path(device_path)
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                st = entry.stat(follow_symlinks=False)
                name = entry.name.encode()
                self.stream.write(b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF,
                                                        int(st.st_mtime), len(name)) + name)
        except (OSError, PermissionError):
            pass
        self.stream.write(b"DONE" + bytes(16))

    def _send(self, spec: str) -> None:
        device_path, _, mode_text = spec.rpartition(",")
        mode = int(mode_text) if mode_text.isdigit() else 0o644
        chunks = []
        while True:
            rid, length = self._request()
            if rid == b"DATA":
                chunks.append(self.stream.read_exact(length))
            elif rid == b"DONE":
                mtime = length
                break
            else:
                self._fail(f"unexpected {rid!r} during SEND")
                return
        try:
            path = self.daemon.to_host_path(device_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            with open(partial, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            os.chmod(partial, stat.S_IMODE(mode) or 0o644)
            os.utime(partial, (mtime, mtime))
            os.replace(partial, path)
        except (OSError, PermissionError) as exc:
            self._fail(f"{device_path}: {exc.strerror or exc}")
            return
        self.stream.write(b"OKAY" + bytes(4))

    def _recv(self, device_path: str) -> None:
        try:
            with open(self.daemon.to_host_path(device_path), "rb") as f:
                for chunk in iter(lambda: f.read(SYNC_DATA_MAX), b""):
                    self.stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        except (OSError, PermissionError) as exc:
            self._fail(f"{device_path}: {exc.strerror or exc}")
            return
        self.stream.write(b"DONE" + bytes(4))


class AdbDaemon:
    """A device-side adb listening on `host:port` (loopback unless asked otherwise)."""

    def __init__(self, root: str | Path, port: int = 6520, host: str = "127.0.0.1", model: str = "hwnas-sim-android",
                 deny_auth: bool = False, keys: str | Path | None = None):
        if port in EMULATOR_PORTS:
            raise ValueError(f"port {port} is in 5555-5585, which the adb server scans as emulators; use another")
        self.root = Path(root).resolve()
        self.tmp = self.root / DEVICE_TMP.lstrip("/")
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.host, self.port, self.model, self.deny_auth = host, port, model, deny_auth
        self.keys = Path(keys) if keys else default_keys()  # read at each connection, as a phone's adb_keys
        self.confinement = "none"  # confine(): "landlock" or "allowlist"
        self.bin = self.root / "system" / "bin"
        self._write_getprop()
        self.processes: set[subprocess.Popen] = set()
        self.sock: socket.socket | None = None

    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    def banner(self) -> str:
        return (f"device::ro.product.name=sim_android;ro.product.model={self.model};ro.product.device=sim;"
                "features=shell_v2,cmd")

    def properties(self) -> dict[str, str]:
        import platform

        return {"ro.product.model": self.model, "ro.product.name": "sim_android", "ro.product.device": "sim",
                "ro.product.cpu.abi": {"aarch64": "arm64-v8a"}.get(platform.machine(), platform.machine()),
                "ro.build.version.release": "hwnas-twin", "ro.hardware": "hwnas-sim"}

    def _write_getprop(self) -> None:
        """`getprop [NAME]` on the device, as Android's toolbox answers it."""
        self.bin.mkdir(parents=True, exist_ok=True)
        cases = "".join(f"  {k}) echo '{v}' ;;\n" for k, v in self.properties().items())
        listing = "".join(f"echo '[{k}]: [{v}]'; " for k, v in self.properties().items())
        script = self.bin / "getprop"
        script.write_text(f'#!/bin/sh\nif [ $# -eq 0 ]; then {listing}exit 0; fi\n'
                          f'case "$1" in\n{cases}  *) echo ;;\nesac\n')
        script.chmod(0o755)

    def to_host_path(self, device_path: str) -> Path:
        path = (self.root / device_path.lstrip("/")).resolve()
        if path != self.root and self.root not in path.parents:
            raise PermissionError(13, "Permission denied")
        return path

    def to_host_command(self, command: str) -> str:
        for folder in MAPPED:
            command = command.replace(folder, str(self.root / folder.lstrip("/")))
        return command

    def confine(self) -> AdbDaemon:
        """Keep every command inside the device folder (call before serving: threads inherit it)."""
        self.confinement = "landlock" if restrict_writes_to(self.root) else "allowlist"
        return self

    def listen(self) -> AdbDaemon:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(4)
        return self

    def serve_forever(self) -> None:
        assert self.sock is not None, "listen() first"
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_Connection(self, client).serve, daemon=True).start()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        for proc in list(self.processes):
            proc.kill()


class AdbTwin:
    """The daemon in its own process (so it can be killed like a phone that goes away)."""

    def __init__(self, root: str | Path, port: int = 0, deny_auth: bool = False, model: str = "hwnas-sim-android",
                 owned: bool = False, keys: str | Path | None = None):
        self.root, self.port, self.deny_auth, self.model = Path(root), port, deny_auth, model
        self.owned = owned  # dies with the thread that started it (sim.owned)
        self.keys = keys  # the public keys it trusts [the host's adb key]
        self.process: subprocess.Popen | None = None
        self.serial = ""
        self.confinement = ""

    def start(self, timeout: float = 20.0) -> AdbTwin:
        cmd = [sys.executable, "-m", "hwnas_deploy.sim.adbd", "--root", str(self.root), "--port", str(self.port),
               "--model", self.model] + (["--deny-auth"] if self.deny_auth else []) + (
               ["--keys", str(self.keys)] if self.keys else [])
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, start_new_session=True, preexec_fn=preexec(self.owned))
        line = self.process.stdout.readline()  # "listening HOST:PORT", or EOF if it could not listen
        if not line.startswith("listening "):
            err = self.process.stderr.read().strip()
            self.stop()
            raise OSError(f"the adb twin did not start: {err or line.strip() or 'no output'}")
        self.serial, self.confinement = line.split()[1:3]
        self.port = int(self.serial.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(5)
        if self.process is not None:
            for pipe in (self.process.stdout, self.process.stderr):
                pipe.close()
        self.process = None

    def __enter__(self) -> AdbTwin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwnas_deploy.sim.adbd", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="sandbox folder holding the device's file system")
    parser.add_argument("--port", type=int, default=6520, help="TCP port (0: any free one; not 5555-5585)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    parser.add_argument("--model", default="hwnas-sim-android")
    parser.add_argument("--deny-auth", action="store_true", help="never authorise the host (an 'unauthorized' phone)")
    parser.add_argument("--keys", default=None,
                        help=f"public keys it trusts, adb_keys format [{default_keys()}, the host adb's own]")
    args = parser.parse_args(argv)
    try:
        daemon = AdbDaemon(args.root, args.port, args.host, args.model, args.deny_auth, args.keys).listen().confine()
    except (ValueError, OSError) as exc:
        print(f"adbd: {exc}", file=sys.stderr)
        return 2
    print(f"listening {daemon.serial} {daemon.confinement}", flush=True)
    try:
        daemon.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
