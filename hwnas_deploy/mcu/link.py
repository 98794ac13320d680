"""Host side of the framed serial protocol (firmware/protocol/protocol.h), over any pyserial URL.

    link = McuLink.open("socket://127.0.0.1:4321")     # or "/dev/ttyACM0", a pty path, ...
    info = link.hello()
    link.load(blob_bytes)                               # or load(blob, generated=weight_ranges(blob))
    runs = link.run(warmup=1, repeats=5, per_layer=True)

Every request waits for exactly one reply with a timeout. A reply with a bad CRC, a CRC error
reported by the board, or silence is retried (`retries` times); garbage between frames is
skipped (the parser hunts for the next start marker); a BOOT frame from the board raises
BoardResetError so the caller can reload and resume.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from hwnas_deploy.errors import DeviceError

SOF = b"\xa5\x5a"
MAX_PAYLOAD = 4096
# The firmware's kernel sets (HW_KERNELS_* in firmware/runtime/hw_model.h): the Cortex-M7 DSP
# kernels boards run by default, and the portable reference they are bit-exact with.
KERNEL_SETS = {"optimised": 0, "portable": 1}


def kernel_set(name: str) -> int:
    if name not in KERNEL_SETS:
        raise ValueError(f"unknown kernel set {name!r}; choose from {', '.join(KERNEL_SETS)}")
    return KERNEL_SETS[name]


HELLO, LOAD_BEGIN, LOAD_CHUNK, LOAD_END, RUN, SET_INPUT, INVOKE, MEM, RESET, LOAD_FILL = range(1, 11)
BOOT, ERR, REPLY = 0x7E, 0x7F, 0x80
COMMAND_NAMES = {
    HELLO: "HELLO", LOAD_BEGIN: "LOAD_BEGIN", LOAD_CHUNK: "LOAD_CHUNK", LOAD_END: "LOAD_END", RUN: "RUN",
    SET_INPUT: "SET_INPUT", INVOKE: "INVOKE", MEM: "MEM", RESET: "RESET", LOAD_FILL: "LOAD_FILL",
}
#: protocol 2: LOAD_BEGIN names the blob by SHA-256 (the board may already hold it), LOAD_FILL
NAMED_LOADS = 2
ERROR_NAMES = {1: "CRC", 2: "UNKNOWN_CMD", 3: "BAD_LENGTH", 4: "TOO_BIG", 5: "BAD_BLOB", 6: "NO_MODEL",
               7: "SEQUENCE", 8: "UNSUPPORTED", 9: "ARENA"}
TIMER_KINDS = {1: "dwt-cyccnt", 2: "icount"}


class BoardError(DeviceError):
    """The board answered with an error frame."""

    def __init__(self, command: int, code: int, message: str):
        self.command, self.code = command, code
        self.name = ERROR_NAMES.get(code, str(code))
        super().__init__(f"board refused {COMMAND_NAMES.get(command, command)}: {self.name}: {message}")


class BoardResetError(DeviceError):
    """The board restarted (it sent BOOT): whatever was loaded is gone."""


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = struct.pack("<HBB", len(payload), cmd, seq) + payload
    return SOF + body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


ICOUNT_SHIFT = 7
TIMER_NS = 40


def ticks_to_instructions(ticks: int, shift: int = ICOUNT_SHIFT) -> float:
    """Timer ticks (40 ns) to executed instructions (2^shift ns each). A count read at tick
    granularity is off by less than one tick at each end; once an instruction spans two ticks or
    more (shift >= 7), rounding recovers the exact number of instructions."""
    n = ticks * TIMER_NS / (1 << shift)
    return float(round(n)) if (1 << shift) >= 2 * TIMER_NS else n


@dataclass
class Frame:
    cmd: int
    seq: int
    payload: bytes
    crc_ok: bool


class FrameParser:
    """Incremental, resynchronising frame parser (the same state machine as the firmware's)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        frames = []
        while True:
            start = self.buf.find(SOF)
            if start < 0:
                # keep a trailing 0xA5: it may start the next frame
                self.buf = self.buf[-1:] if self.buf[-1:] == SOF[:1] else bytearray()
                return frames
            del self.buf[:start]
            if len(self.buf) < 6:
                return frames
            length = self.buf[2] | (self.buf[3] << 8)
            if length > MAX_PAYLOAD:
                del self.buf[:1]  # not a frame of ours: hunt for the next marker
                continue
            total = 6 + length + 4
            if len(self.buf) < total:
                return frames
            body = bytes(self.buf[2 : 6 + length])
            (crc,) = struct.unpack_from("<I", self.buf, 6 + length)
            frames.append(Frame(self.buf[4], self.buf[5], bytes(self.buf[6 : 6 + length]),
                                zlib.crc32(body) & 0xFFFFFFFF == crc))
            del self.buf[:total]


@dataclass
class BoardInfo:
    protocol: int
    max_payload: int
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    arena_capacity: int
    blob_capacity: int
    timer: str
    model_loaded: bool
    board: str
    core: str
    firmware: str


@dataclass
class RunResult:
    cycles: list[int]
    layer_cycles: list[int] = field(default_factory=list)


@dataclass
class LoadResult:
    n_ops: int
    arena_bytes: int
    input_bytes: int
    output_bytes: int
    sent_bytes: int = 0  # on the wire, framing and retries included
    generated_bytes: int = 0  # made by the board (LOAD_FILL) instead of sent
    already_held: bool = False  # the board had this blob: nothing was sent
    seconds: float = 0.0


class McuLink:
    def __init__(self, port, *, timeout: float = 5.0, retries: int = 3):
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.parser = FrameParser()
        self.seq = 0
        self.stats = {"retries": 0, "crc_errors": 0, "bytes_sent": 0}
        self.protocol = 1  # until hello() says more

    @classmethod
    def open(cls, url: str, *, timeout: float = 5.0, retries: int = 3, connect_timeout: float = 10.0) -> McuLink:
        import serial

        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                port = serial.serial_for_url(url, baudrate=921600, timeout=0.05)
                break
            except (serial.SerialException, OSError) as exc:
                if time.monotonic() > deadline:
                    raise DeviceError(f"cannot open serial port {url}: {exc}") from None
                time.sleep(0.1)
        return cls(port, timeout=timeout, retries=retries)

    def close(self) -> None:
        self.port.close()

    # -- one request, one reply ---------------------------------------------------------------
    def request(self, cmd: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one command and return its reply's payload; a serial line that breaks (a board
        unplugged, its simulator killed) is a DeviceError like any other device fault."""
        import serial

        try:
            return self._request(cmd, payload, timeout)
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"{COMMAND_NAMES.get(cmd, str(cmd))}: serial line lost: {exc}") from None

    def _request(self, cmd: int, payload: bytes, timeout: float | None) -> bytes:
        name = COMMAND_NAMES.get(cmd, str(cmd))
        last_problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.seq = (self.seq + 1) & 0xFF
            frame = encode_frame(cmd, self.seq, payload)
            self.port.write(frame)
            self.stats["bytes_sent"] += len(frame)
            try:
                reply = self._await_reply(self.seq, timeout or self.timeout)
            except TimeoutError:
                last_problem = f"no reply within {timeout or self.timeout:.1f} s"
                continue
            if not reply.crc_ok:
                self.stats["crc_errors"] += 1
                last_problem = "reply failed its CRC"
                continue
            if reply.cmd == ERR:
                code = reply.payload[0] if reply.payload else 0
                if code == 1:  # the board saw a corrupted request: send it again
                    self.stats["crc_errors"] += 1
                    last_problem = "board reported a CRC error"
                    continue
                raise BoardError(cmd, code, reply.payload[2:].decode(errors="replace"))
            if reply.cmd != cmd | REPLY:
                last_problem = f"unexpected reply command 0x{reply.cmd:02x}"
                continue
            return reply.payload
        raise DeviceError(f"{name}: {last_problem} after {self.retries + 1} attempts")

    def _await_reply(self, seq: int, timeout: float) -> Frame:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.port.read(max(1, self.port.in_waiting))
            if not chunk:
                continue
            for frame in self.parser.feed(chunk):
                if frame.cmd == BOOT and frame.crc_ok:
                    raise BoardResetError(f"the board restarted ({frame.payload.decode(errors='replace')})")
                if frame.seq == seq or not frame.crc_ok:
                    return frame
        raise TimeoutError

    # -- commands ------------------------------------------------------------------------------
    def hello(self) -> BoardInfo:
        """The handshake: a board that just started announces itself with BOOT, which is
        expected here (not a reset in the middle of work)."""
        try:
            p = self.request(HELLO)
        except BoardResetError:
            p = self.request(HELLO)
        fixed = struct.unpack_from("<HHIIIIIBB", p)
        board, core, firmware = p[26:].split(b"\0")[:3]
        self.protocol = fixed[0]
        return BoardInfo(
            protocol=fixed[0], max_payload=fixed[1], clock_hz=fixed[2], sram_bytes=fixed[3],
            flash_bytes=fixed[4], arena_capacity=fixed[5], blob_capacity=fixed[6],
            timer=TIMER_KINDS.get(fixed[7], str(fixed[7])), model_loaded=bool(fixed[8]),
            board=board.decode(), core=core.decode(), firmware=firmware.decode(),
        )

    def load(self, blob: bytes, chunk: int = 2048, progress=None, *,
             generated: Sequence[tuple[int, int]] = (), seed: int = 0) -> LoadResult:
        """Upload a blob in CRC-checked chunks; the board checks the whole blob's CRC at the end.

        `generated` ranges (start, end) are made by the board's generator from `seed`
        (mcu/weights.py) instead of sent: `blob` must already hold the generator's bytes there,
        and the CRC at LOAD_END proves the board built the same blob. A board speaking protocol 2
        is told the blob's SHA-256 first and answers "have it" when that blob is the one loaded:
        nothing more is sent. Older firmware gets every byte."""
        start_time, start_bytes = time.monotonic(), self.stats["bytes_sent"]
        named = self.protocol >= NAMED_LOADS
        begin = struct.pack("<II", len(blob), zlib.crc32(blob) & 0xFFFFFFFF)
        reply = self.request(LOAD_BEGIN, begin + (hashlib.sha256(blob).digest() if named else b""))
        if reply[:1] == b"\x01":
            result = LoadResult(*struct.unpack_from("<HIII", reply, 1), already_held=True)
        else:
            made = 0
            for start, end, fill in _segments(len(blob), generated if named else (), chunk):
                if fill:
                    payload = struct.pack("<III", start, end - start, seed)
                    made += end - start
                else:
                    payload = struct.pack("<I", start) + blob[start:end]
                got = struct.unpack("<I", self.request(LOAD_FILL if fill else LOAD_CHUNK, payload))[0]
                if got != end:
                    raise DeviceError(f"{'LOAD_FILL' if fill else 'LOAD_CHUNK'}: board holds {got} bytes, "
                                      f"expected {end}")
                if progress is not None:
                    progress(end - start)
            result = LoadResult(*struct.unpack("<HIII", self.request(LOAD_END)), generated_bytes=made)
        result.sent_bytes = self.stats["bytes_sent"] - start_bytes
        result.seconds = time.monotonic() - start_time
        return result

    def run(
        self, warmup: int = 1, repeats: int = 5, per_layer: bool = True, timeout: float = 600.0,
        kernels: str = "optimised",
    ) -> RunResult:
        """Time the loaded model; ``kernels`` picks the firmware's kernel set (see KERNEL_SETS)."""
        payload = struct.pack("<HHBB", warmup, repeats, int(per_layer), kernel_set(kernels))
        p = self.request(RUN, payload, timeout=timeout)
        (n,) = struct.unpack_from("<H", p)
        cycles = list(struct.unpack_from(f"<{n}Q", p, 2))
        (n_layers,) = struct.unpack_from("<H", p, 2 + 8 * n)
        layers = list(struct.unpack_from(f"<{n_layers}Q", p, 4 + 8 * n))
        return RunResult(cycles, layers)

    def infer(self, x_int8: bytes, timeout: float = 600.0, chunk: int = 2048, kernels: str = "optimised") -> bytes:
        for offset in range(0, len(x_int8), chunk):
            self.request(SET_INPUT, struct.pack("<I", offset) + x_int8[offset : offset + chunk])
        return self.request(INVOKE, bytes([kernel_set(kernels)]), timeout=timeout)

    def mem(self) -> dict[str, int]:
        arena, arena_cap, blob, blob_cap = struct.unpack("<IIII", self.request(MEM))
        return {"arena_bytes": arena, "arena_capacity": arena_cap, "blob_bytes": blob, "blob_capacity": blob_cap}

    def reset(self) -> None:
        self.request(RESET)


def _segments(size: int, generated: Sequence[tuple[int, int]], chunk: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, generated?) covering [0, size) in order: each generated range whole, the
    bytes between in chunks of at most `chunk`."""
    at = 0
    for start, end in [*sorted(generated), (size, size)]:
        for s in range(at, start, chunk):
            yield s, min(s + chunk, start), False
        if end > start:
            yield start, end, True
        at = max(at, end)
