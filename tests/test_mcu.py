"""The Cortex-M7 path for real: firmware built with arm-none-eabi-gcc, running in QEMU
(mps2-an500), reached by pyserial over a socket exactly as a USB serial port."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnas_deploy.devices import load_profile
from hwnas_deploy.export import export_subnet
from hwnas_deploy.mcu.firmware import build_firmware
from hwnas_deploy.mcu.host import HostBlobRunner
from hwnas_deploy.mcu.link import (
    LOAD_BEGIN,
    LOAD_SEGMENTS,
    BoardError,
    BoardResetError,
    FrameParser,
    McuLink,
    encode_frame,
    ticks_to_instructions,
)
from hwnas_deploy.runtimes import load_runner
from hwnas_deploy.sim.qemu import QemuBoard
from hwnas_deploy.sim.twins import twinned_driver
from hwnas_deploy.spaces import get_space

SMALL = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 3] * 5, "d": [2, 3, 2, 2, 2], "w": 0.35, "r": 64}


@pytest.fixture(scope="module")
def board():
    with QemuBoard() as b:
        yield b


@pytest.fixture(scope="module")
def link(board):
    lk = McuLink.open(board.url)
    lk.hello()
    yield lk
    lk.close()


@pytest.fixture(scope="module")
def small_blob(tmp_path_factory):
    return export_subnet(get_space("mcu-mbnet"), SMALL, "blob", tmp_path_factory.mktemp("blob"))


@pytest.fixture
def loaded(link, small_blob):
    """The small blob with its real weights on the board: uploaded once (15-40 s over the emulated
    UART), then found there by its SHA-256. Only the tests that need the real weights use it, one
    after the other."""
    blob = open(small_blob.path, "rb").read()
    return blob, link.load(blob)


def load_generated(link, blob: bytes):
    """Load `blob` with generated weights (mcu/weights.py), as `hwnas profile` measures by default:
    a few kilobytes on the wire where the real weights take 10-80 s over the emulated UART."""
    from hwnas_deploy.mcu.weights import WEIGHT_SEED, made_blob, made_ranges

    ranges = made_ranges(blob)
    made = made_blob(blob, ranges, WEIGHT_SEED)
    return made, ranges, link.load(made, made=ranges, seed=WEIGHT_SEED)


@pytest.fixture
def generated(link, small_blob):
    """The small blob with generated weights: a test that loaded another blob costs a second."""
    return load_generated(link, open(small_blob.path, "rb").read())


def outside_weights(ranges, size: int) -> int:
    """An offset past the blob header that no made range covers (the tensor or operator tables,
    a lookup table, padding)."""
    covered = np.zeros(size, bool)
    for m in ranges:
        covered[m.start:m.end] = True
    return int(np.flatnonzero(~covered[16:])[-1]) + 16


# -- the wire format, host side ----------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.binary(max_size=64), max_size=4), st.binary(max_size=600))
def test_parser_finds_every_frame_after_garbage(before, payloads, after):
    """Garbage without a start marker before the frames: every frame is found, whatever the
    read sizes. (Garbage that contains a marker can swallow a frame: the CRC then fails and
    the request is retried; the board-level tests show that path.)"""
    before = before.replace(b"\xa5", b"")
    frames = [encode_frame(0x10 + i, i, p) for i, p in enumerate(payloads)]
    stream = before + b"".join(frames) + after
    parser = FrameParser()
    found = []
    for i in range(0, len(stream), 7):  # arbitrary read sizes
        found += [(f.cmd, f.seq, f.payload) for f in parser.feed(stream[i : i + 7]) if f.crc_ok]
    assert found[: len(payloads)] == [(0x10 + i, i, p) for i, p in enumerate(payloads)]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_never_crashes_on_random_bytes(data):
    parser = FrameParser()
    for f in parser.feed(data):
        assert len(f.payload) <= 4096


# -- the firmware --------------------------------------------------------------------------------
def test_firmware_builds_with_arm_gcc_and_says_hello(link):
    elf = build_firmware()
    assert elf.read_bytes()[:4] == b"\x7fELF" and int.from_bytes(elf.read_bytes()[18:20], "little") == 40  # EM_ARM
    info = link.hello()
    assert (info.board, info.core, info.timer) == ("qemu-mps2-an500", "cortex-m7", "icount")
    assert info.clock_hz == 25_000_000 and info.protocol == 5 and info.max_payload == 4096
    assert info.rx_buffer == 16383  # what a windowed upload may keep on the line behind a request


def test_board_output_equals_host_runtime_and_tracks_torch(link, loaded, small_blob):
    blob, load = loaded
    assert load.arena_bytes == small_blob.extra["arena_bytes"] and load.output_bytes == 1000
    # an input like the calibration data (standard normal), quantised as the blob's input says
    scale, zero = small_blob.inputs[0].quantization
    x_normal = np.random.default_rng(3).standard_normal(load.input_bytes)
    x = np.clip(np.round(x_normal / scale) + zero, -128, 127).astype(np.int8)
    board_out = np.frombuffer(link.infer(x.tobytes()), dtype=np.int8)
    assert np.array_equal(board_out, HostBlobRunner(blob).invoke(x, 1000))
    # and against onnxruntime on the same (dequantised) input: the int8 model tracks fp32
    sp = get_space("mcu-mbnet")
    x_float = ((x.astype(np.float32) - zero) * scale).reshape(1, 64, 64, 3).transpose(0, 3, 1, 2)
    onnx = export_subnet(sp, SMALL, "onnx", os.path.dirname(small_blob.path))
    ref = load_runner(onnx)(np.ascontiguousarray(x_float)).ravel()
    o_scale, o_zero = small_blob.outputs[0].quantization
    got = (board_out.astype(np.float32) - o_zero) * o_scale
    cosine = float(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cosine > 0.85


def test_latency_only_upload_sends_kilobytes_and_times_like_the_real_weights(link, loaded):
    """With generated weights only the tensor and operator tables travel: the board makes the
    int8 weights up and repeats each int32 array's first value (biases, multipliers, shifts), and
    LOAD_END's CRC proves it made the host's bytes; the board's output equals the host build on
    that blob bit for bit, on an uploaded input and on RUN's own, and the instruction count is
    within 0.5 % of the real weights' (README's claim)."""
    from hwnas_deploy.mcu.weights import WEIGHT_SEED, made_blob

    blob, load = loaded
    real = link.run(1, 3, per_layer=False).cycles
    made, ranges, gen_load = load_generated(link, blob)
    arrays = [m for m in ranges if m.word is not None]
    assert len(arrays) >= 2 * load.n_ops // 3 and all(made[m.start:m.end] == m.word * (m.size // 4) for m in arrays)
    assert sum(m.size for m in ranges) > 0.95 * len(blob)  # the weights and arrays are nearly all of a blob
    assert made != blob and len(made) == len(blob)
    assert gen_load.generated_bytes == sum(m.size for m in ranges)
    assert gen_load.sent_bytes < 0.05 * len(blob) and (gen_load.n_ops, gen_load.arena_bytes) == (load.n_ops,
                                                                                                load.arena_bytes)
    gen = link.run(1, 3, per_layer=False).cycles
    assert len(set(gen)) <= 2 and abs(gen[0] - real[0]) / real[0] < 0.005, (gen, real)
    x = np.random.default_rng(3).integers(-128, 128, size=load.input_bytes, dtype=np.int8)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.int8)
    host = HostBlobRunner(made)
    assert np.array_equal(board, host.invoke(x, board.size))
    assert not np.array_equal(board, HostBlobRunner(blob).invoke(x, board.size))  # other weights, other output
    # INPUT_FILL: the board writes RUN's input itself; the host runtime makes the same one
    on_board = np.frombuffer(link.infer_run_input(), dtype=np.int8)
    run_input = host.run_input()
    assert run_input.size == load.input_bytes and -32 <= run_input.min() < 0 < run_input.max() <= 31
    assert np.array_equal(on_board, host.invoke(run_input, on_board.size))
    assert not np.array_equal(on_board, board)
    # a board whose generator made other bytes than the host's: the whole-blob CRC catches it
    with pytest.raises(BoardError, match="BAD_BLOB: blob CRC-32 does not match"):
        link.load(made_blob(blob, ranges, WEIGHT_SEED + 1), made=ranges, seed=WEIGHT_SEED)


def test_instruction_counts_are_deterministic(link, generated):
    runs = link.run(warmup=1, repeats=3, per_layer=False).cycles + link.run(0, 2, per_layer=True).cycles
    # ticks are read at 40 ns granularity, an instruction takes 128 ns: rounding gives exact counts
    counts = {ticks_to_instructions(c) for c in runs}
    assert len(counts) == 1 and max(runs) - min(runs) <= 1
    layered = link.run(warmup=0, repeats=1, per_layer=True)
    layers = [ticks_to_instructions(c) for c in layered.layer_cycles]
    assert len(layers) == generated[2].n_ops and min(layers) > 0
    total = counts.pop()
    # what lies between layers (the interpreter's dispatch and timer reads) is well under 0.1 %
    assert 0 < total - sum(layers) < 0.001 * total


def test_optimised_kernels_match_the_portable_ones_on_the_board(link, generated):
    """The Cortex-M7 kernels give the portable kernels' output bit for bit, in fewer instructions."""
    n_in = generated[2].input_bytes
    x = np.random.default_rng(5).integers(-128, 128, n_in, dtype=np.int8).tobytes()
    assert link.infer(x, kernels="optimised") == link.infer(x, kernels="portable")
    fast = ticks_to_instructions(link.run(0, 1, per_layer=False, kernels="optimised").cycles[0])
    slow = ticks_to_instructions(link.run(0, 1, per_layer=False, kernels="portable").cycles[0])
    assert slow > 2.5 * fast
    with pytest.raises(ValueError, match="unknown kernel set 'cmsis'"):
        link.run(0, 1, kernels="cmsis")


def test_corrupted_chunk_is_rejected_and_retried(link, small_blob):
    """One request leaves the host with a flipped byte: the board answers CRC error and the
    link sends it again; the upload completes and its whole-blob CRC holds."""

    class FlipOnce:
        def __init__(self, port, at: int):
            self.port, self.at, self.writes = port, at, 0

        def write(self, data):
            self.writes += 1
            if self.writes == self.at:
                data = bytearray(data)
                data[len(data) // 2] ^= 0xFF
            return self.port.write(bytes(data))

        def __getattr__(self, name):
            return getattr(self.port, name)

    real_port, link.port = link.port, FlipOnce(link.port, at=3)
    crc_errors, retries = link.stats["crc_errors"], link.stats["retries"]
    small = open(small_blob.path, "rb").read()[:9000]  # a partial upload is enough to exercise the chunk path
    link.request(LOAD_BEGIN, struct.pack("<II", len(small), zlib.crc32(small)))
    for offset in range(0, len(small), 2048):
        link.request(0x03, struct.pack("<I", offset) + small[offset : offset + 2048])
    link.port = real_port
    assert link.stats["crc_errors"] == crc_errors + 1 and link.stats["retries"] == retries + 1
    # the last chunk again (as when its reply is lost and the host retries): acknowledged, not refused
    last = len(small) - len(small) % 2048
    assert link.request(0x03, struct.pack("<I", last) + small[last:]) == struct.pack("<I", len(small))
    with pytest.raises(BoardError, match="BAD_BLOB"):  # whole-blob CRC fine, but not a model
        link.request(0x04)


def test_a_windowed_upload_survives_a_corrupted_request_and_garbage_in_another(link, small_blob):
    """Protocol 4 keeps several LOAD requests in flight. One leaves the host with a flipped byte,
    garbage is written into the middle of another, and a reply reaches the host with a flipped
    byte: the board answers a CRC error, or loses the frame and refuses those after it as out of
    sequence, or acknowledges again what it holds when the host sends it a second time; the link
    goes back to the first request not acknowledged, the upload completes, the blob's CRC holds,
    and the board computes what the host runtime computes with that blob."""
    blob = open(small_blob.path, "rb").read()  # real weights: ~150 requests of 4 KiB

    class Meddle:
        def __init__(self, port):
            self.port, self.writes, self.reply_hit = port, 0, False

        def write(self, data):
            self.writes += 1
            data = bytearray(data)
            if self.writes == 3:
                data[len(data) // 2] ^= 0xFF
            if self.writes == 7:
                data[100:100] = np.random.default_rng(11).integers(0, 256, 300, dtype=np.uint8).tobytes()
            return self.port.write(bytes(data))

        def read(self, n):
            data = self.port.read(n)
            if data and self.writes >= 20 and not self.reply_hit:  # a reply of a request the board took
                self.reply_hit = True
                return bytes([data[0] ^ 0xFF]) + data[1:]
            return data

        def __getattr__(self, name):
            return getattr(self.port, name)

    link.request(LOAD_BEGIN, struct.pack("<II", 16, 0))  # drop the model held: the next load sends all of it
    real_port, link.port = link.port, Meddle(link.port)
    before = dict(link.stats)
    try:
        load = link.load(blob)
    finally:
        link.port = real_port
    assert not load.already_held and load.n_ops > 0
    assert link.stats["crc_errors"] > before["crc_errors"] and link.stats["retries"] >= before["retries"] + 3
    assert link.stats["most_in_flight"] >= 3
    x = np.random.default_rng(4).integers(-128, 128, size=load.input_bytes, dtype=np.int8)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.int8)
    assert np.array_equal(board, HostBlobRunner(blob).invoke(x, board.size))


def test_a_load_request_held_already_is_acknowledged_again(link, small_blob):
    """What lets a host go back after an error: any request the board holds (not only the last)
    is answered with the bytes held, and one beyond them is refused."""
    blob = open(small_blob.path, "rb").read()[:6144]
    link.request(LOAD_BEGIN, struct.pack("<II", len(blob), zlib.crc32(blob)))
    chunks = [struct.pack("<I", at) + blob[at:at + 2048] for at in range(0, len(blob), 2048)]
    assert link.request(0x03, chunks[0]) == struct.pack("<I", 2048)
    assert link.request(0x03, chunks[1]) == struct.pack("<I", 4096)
    assert link.request(0x03, chunks[0]) == struct.pack("<I", 4096)  # the first again: held, not rewritten
    with pytest.raises(BoardError, match="SEQUENCE"):
        link.request(0x03, struct.pack("<I", 6144) + b"x")
    assert link.request(0x03, chunks[2]) == struct.pack("<I", 6144)


def test_garbage_between_frames_does_not_hang_either_side(link):
    rng = np.random.default_rng(7)
    for _ in range(3):
        link.port.write(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
        info = link.hello()
        assert info.board == "qemu-mps2-an500"
    # a frame announcing an impossible length is dropped and the parser resynchronises
    link.port.write(b"\xa5\x5a\xff\xff" + bytes(20))
    assert link.hello().firmware.startswith("hwnas-fw")


def test_oversized_and_malformed_blobs_are_refused(link, generated):
    from hwnas_deploy.mcu.weights import WEIGHT_SEED

    with pytest.raises(BoardError, match="TOO_BIG: blob larger than the board's blob capacity"):
        link.request(LOAD_BEGIN, struct.pack("<II", 64 * 1024 * 1024, 0))
    made, ranges, load = generated
    blob = bytearray(made)
    blob[outside_weights(ranges, len(blob))] ^= 0x55  # the bytes arrive intact, but the blob's own CRC-32 fails
    with pytest.raises(BoardError, match="BAD_BLOB: blob CRC-32 mismatch"):
        link.load(bytes(blob), made=ranges, seed=WEIGHT_SEED)
    with pytest.raises(BoardError, match="NO_MODEL"):
        link.run(1, 1)
    with pytest.raises(BoardError, match="BAD_LENGTH: malformed segments"):  # a literal of 100 bytes holding 10
        link.request(LOAD_SEGMENTS, struct.pack("<III", 0, 0, 100) + bytes(10))
    protocol, link.protocol = link.protocol, 2  # firmware 0.6.0-0.8.0: each generated range a LOAD_FILL
    try:
        again = link.load(made, made=ranges, seed=WEIGHT_SEED)
    finally:
        link.protocol = protocol
    assert not again.already_held and link.mem()["arena_bytes"] == load.arena_bytes
    assert again.generated_bytes == sum(m.size for m in ranges if m.word is None and not m.q15) < load.generated_bytes
    assert again.sent_bytes > 2 * load.sent_bytes


# -- latency-only uploads and blobs the board already holds ---------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 5000), st.integers(0, 4096), st.integers(0, 2**32 - 1))
def test_weight_generator_is_the_firmwares(position, n, seed):
    """The host's numpy generator gives the bytes the firmware's C one writes, at any offset."""
    import ctypes

    from hwnas_deploy.mcu.host import host_library
    from hwnas_deploy.mcu.weights import generated_bytes, generated_q15

    buf = ctypes.create_string_buffer(max(n, 1))
    host_library().hw_generate_bytes(buf, ctypes.c_uint32(position), ctypes.c_uint32(n), ctypes.c_uint32(seed))
    assert buf.raw[:n] == generated_bytes(position, n, seed).tobytes()
    # unpacked weights (blob v2): valid int8 values as int16, whatever the offset a request starts at
    host_library().hw_generate_q15(buf, ctypes.c_uint32(position), ctypes.c_uint32(n), ctypes.c_uint32(seed))
    assert buf.raw[:n] == generated_q15(position, n, seed).tobytes()
    start = position & ~1
    whole = generated_q15(start, 2 * (n // 2 + 2), seed).view("<i2")
    assert whole.min() >= -127 and whole.max() <= 127
    assert generated_q15(position, n, seed).tobytes() == whole.tobytes()[position - start:position - start + n]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_segment_requests_rebuild_the_blob_within_the_payload_limit(data):
    """LOAD_SEGMENTS as the firmware reads it (firmware/README.md): the requests cover the blob in
    order, each within the payload limit, and rebuild it byte for byte from bytes, the
    generator's bytes and repeated words (zero runs among them)."""
    from hwnas_deploy.mcu.link import ZERO_RUN, _segment_requests
    from hwnas_deploy.mcu.weights import Made, generated_bytes, generated_q15

    size = data.draw(st.integers(0, 3000))
    blob = bytearray(data.draw(st.binary(min_size=size, max_size=size)))
    for z0 in data.draw(st.lists(st.integers(0, max(size - 1, 0)), max_size=4)):  # runs of zeros
        end = min(size, z0 + data.draw(st.integers(1, 3 * ZERO_RUN)))
        blob[z0:end] = bytes(end - z0)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, size), max_size=8))))
    made = [Made(a, b, word, q15=word is None and data.draw(st.booleans()))
            for a, b in zip(cuts[::2], cuts[1::2]) if b > a
            for word in [data.draw(st.one_of(st.none(), st.binary(min_size=4, max_size=4)))]]
    limit, seed = data.draw(st.integers(16, 512)), data.draw(st.integers(0, 2**32 - 1))
    got, at = bytearray(size), 0
    for start, end, payload in _segment_requests(bytes(blob), made, seed, limit):
        assert len(payload) <= limit and start == at == struct.unpack_from("<I", payload)[0]
        assert struct.unpack_from("<I", payload, 4)[0] == seed
        used = 8
        while used < len(payload):
            head = struct.unpack_from("<I", payload, used)[0]
            kind, n, used = head >> 30, head & 0x3FFFFFFF, used + 4
            if kind == 0:
                got[at:at + n], used = payload[used:used + n], used + n
            elif kind == 1:
                got[at:at + n] = generated_bytes(at, n, seed).tobytes()
            elif kind == 3:  # protocol 5: unpacked weights
                got[at:at + n] = generated_q15(at, n, seed).tobytes()
            else:
                assert kind == 2
                got[at:at + n], used = (payload[used:used + 4] * (n // 4 + 1))[:n], used + 4
            at += n
        assert at == end
    assert at == size
    expected = bytearray(blob)
    for m in made:
        expected[m.start:m.end] = (generated_q15 if m.q15 else generated_bytes)(m.start, m.size, seed).tobytes() \
            if m.word is None else (m.word * (m.size // 4 + 1))[:m.size]
    assert got == expected


def test_a_blob_the_board_holds_is_not_sent_again(link, generated):
    """LOAD_BEGIN names the blob by SHA-256: the board that holds it answers "have it" (bytes on
    the wire counted), and a blob differing in one byte is uploaded again."""
    from hwnas_deploy.mcu.weights import WEIGHT_SEED

    made, ranges, load = generated
    before = link.stats["bytes_sent"]
    again = link.load(made, made=ranges, seed=WEIGHT_SEED)
    assert again.already_held and (again.n_ops, again.arena_bytes) == (load.n_ops, load.arena_bytes)
    assert again.sent_bytes == link.stats["bytes_sent"] - before < 100
    other = bytearray(made)
    other[outside_weights(ranges, len(other))] ^= 1  # a table or bias byte: still a valid model
    other[12:16] = (zlib.crc32(bytes(other[16:])) & 0xFFFFFFFF).to_bytes(4, "little")
    changed = link.load(bytes(other), made=ranges, seed=WEIGHT_SEED)
    assert not changed.already_held and changed.sent_bytes > 0.5 * load.sent_bytes
    assert not link.load(made, made=ranges, seed=WEIGHT_SEED).already_held  # and back


def test_the_blob_loaded_survives_a_reset_and_is_not_sent_again(link, generated):
    """Protocol 4: the blob buffer and what it holds are not cleared at start-up, so after a
    reset the board still has the last blob it loaded (checked by CRC), says so in HELLO, and a
    LOAD_BEGIN naming it is answered "have it"; one begun but not finished leaves nothing. The
    QEMU board has no flash slot: `keep` is answered "not kept", without an error."""
    from hwnas_deploy.mcu.weights import WEIGHT_SEED

    made, ranges, load = generated
    before = link.run(0, 2, per_layer=False).cycles
    link.reset()
    with pytest.raises(BoardResetError):  # it did restart
        link.mem()
    info = link.hello()
    assert info.model_loaded and info.flash_slot == 0
    again = link.load(made, made=ranges, seed=WEIGHT_SEED, keep=True)
    assert again.already_held and again.sent_bytes < 100 and not again.kept
    assert link.run(0, 2, per_layer=False).cycles == before
    link.request(LOAD_BEGIN, struct.pack("<II", 16, 0))  # another blob begun: the buffer is changing
    link.reset()
    with pytest.raises(BoardResetError):
        link.mem()
    assert not link.hello().model_loaded
    assert not link.load(made, made=ranges, seed=WEIGHT_SEED, keep=True).kept  # uploaded, and loaded again


def test_idle_board_costs_no_host_cpu(board, link):
    link.hello()
    stat = f"/proc/{board.process.pid}/stat"

    def cpu_ticks() -> int:
        fields = open(stat).read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = cpu_ticks()
    time.sleep(2.0)
    used = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
    assert used < 0.2, f"an idle QEMU board used {used:.2f} CPU-s in 2 s"


def test_reset_mid_run_is_detected_and_the_driver_resumes(small_blob):
    driver = twinned_driver(load_profile("qemu-m7"))
    driver.open()
    try:
        handle = driver.deploy(small_blob, threads=1, weights="generated")
        first = driver.measure(handle, driver.profile.settings)
        driver.link.port.write(encode_frame(0x09, 200))  # RESET behind the driver's back
        time.sleep(0.5)
        with pytest.raises(BoardResetError):
            driver.link.run(0, 1)
        # the driver reloads what the board lost and measures again
        driver.link.port.write(encode_frame(0x09, 201))
        time.sleep(0.5)
        again = driver.measure(handle, driver.profile.settings)
        assert abs(again.median_ms - first.median_ms) / first.median_ms < 1e-4
        assert again.details["count_unit"] == "instructions"
    finally:
        driver.close()


def test_a_blob_over_the_boards_flash_hands_unpacked_layers_back_and_each_one_kept_saves_instructions(small_blob):
    """The export stores some weights unpacked (blob v2, more flash); a board whose flash is
    smaller gets layers handed back to int8 at deploy, fewest pixels first, until the blob fits,
    rather than refusing a network whose int8 blob fits. Each layer kept unpacked saves
    instructions on the board (latency-only uploads: the weights generated, the board's output
    checked against the host build of the blob it holds)."""
    from hwnas_deploy.devices.mcu_serial import DoesNotFitError
    from hwnas_deploy.mcu.blob import fit_flash

    v2 = open(small_blob.path, "rb").read()
    v1 = fit_flash(v2, 1)
    assert len(v1) < len(v2) and small_blob.extra["unpacked_layers"] > 2
    driver = twinned_driver(load_profile("qemu-m7"))
    driver.open()
    try:
        seen = []
        for budget in (len(v2), (len(v1) + len(v2)) // 2, len(v1)):
            driver.driver.flash_budget = budget  # the twin's driver: as a profile's hardware.flash_bytes sets it
            handle = driver.deploy(small_blob, threads=1, weights="generated")
            assert len(handle.blob) <= budget
            summary = driver.measure(handle, driver.profile.settings)
            seen.append((summary.details["unpacked_layers"], summary.details["counts"][0]))
        (n2, c2), (nm, cm), (n1, c1) = seen
        assert n2 == small_blob.extra["unpacked_layers"] > nm > n1 == 0
        assert c2 < cm < c1
        driver.driver.flash_budget = len(v1) - 1
        with pytest.raises(DoesNotFitError, match="flash budget"):
            driver.deploy(small_blob, threads=1, weights="generated")
    finally:
        driver.close()


def test_profile_subnets_on_the_board_from_the_cli(tmp_path):
    """`hwnas sim start` + `hwnas profile --device qemu-m7`: two sub-networks exported, uploaded
    with generated weights (the default: kilobytes on the wire), run and stored; one over budget
    is recorded as not fitting. `--weights real` uploads the real ones and compares the board
    with onnxruntime's float model; the latency is the same within 0.5 %. (The real upload is of
    a NAS-Bench-201 cell: 80 KB take the twin's UART 13 s, an mcu-mbnet network's 600 KB a minute.)"""
    from .conftest import run_cli, small_cells

    # SMALL is the module's small_blob: its conversion comes from the conversion cache
    small = [SMALL, {"ks": [3] * 20, "e": [6] * 20, "d": [2, 2, 2, 2, 2], "w": 0.35, "r": 80}]
    big = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": 0.35, "r": 224}  # a 392 KiB activation peak: over the 320 KiB arena
    configs = tmp_path / "configs.jsonl"
    configs.write_text("\n".join(json.dumps(c) for c in [*small, big]) + "\n")
    env = {"HWNAS_SIM_DIR": str(tmp_path / "sim")}
    os.environ.update(env)
    db, real_db = tmp_path / "mcu.sqlite", tmp_path / "real.sqlite"
    try:
        url = run_cli("sim", "start", "qemu-m7", cwd=tmp_path, check=True).stdout.strip()
        assert url.startswith("socket://127.0.0.1:")
        out = run_cli("profile", "--device", "qemu-m7", "--space", "mcu-mbnet", "--configs", str(configs),
                      "--runtime", "firmware", "--db", str(db), "--quiet", cwd=tmp_path, timeout=1200)
        assert out.returncode == 0, out.stderr
        assert "measured 2, already stored 0, failed 0, does not fit 1 of 3" in out.stdout
        assert "does not fit: arena" in out.stderr
        again = run_cli("profile", "--device", "qemu-m7", "--space", "mcu-mbnet", "--configs", str(configs),
                        "--runtime", "firmware", "--db", str(db), "--quiet", cwd=tmp_path, check=True)
        assert "measured 0, already stored 3" in again.stdout
        cell = tmp_path / "cell.jsonl"
        cell.write_text(json.dumps(small_cells(1)[0]) + "\n")
        for weights, store in (("generated", db), ("real", real_db)):
            run_cli("profile", "--device", "qemu-m7", "--space", "nb201", "--configs", str(cell), "--runtime",
                    "firmware", "--weights", weights, "--db", str(store), "--quiet", cwd=tmp_path, check=True)
    finally:
        run_cli("sim", "stop", "qemu-m7", cwd=tmp_path)
        for k in env:
            os.environ.pop(k, None)
    from hwnas_deploy.store import Store

    with Store(str(db)) as s:
        rows = s.measurements(device="qemu-m7", space="mcu-mbnet")
        (generated,) = s.measurements(device="qemu-m7", space="nb201")
        assert len(rows) == 2 and s.unfit_count() == 1
        for r in rows:
            d = r["details"]
            assert d["count_unit"] == "instructions" and d["board"] == "qemu-mps2-an500"
            assert d["weights"] == "generated" and d["upload"]["sent_bytes"] < 0.15 * d["blob_bytes"]
            assert d["upload"]["generated_bytes"] > 0.8 * d["blob_bytes"]
            # INFER on the board: bit-exact with the host kernels on the same (generated) weights
            assert d["output_check"] == {"identical_to_host_kernels": True, "input": "the run's (made on the board)"}
            assert len(d["layer_counts"]) == len(d["layer_ops"]) > 20
            assert d["arena_bytes"] <= 327680 and d["blob_bytes"] <= 1048576
            # deterministic: the repeats execute exactly the same number of instructions
            assert max(d["counts"]) == min(d["counts"])
            assert r["median_ms"] == pytest.approx(d["counts"][0] / 25e6 * 1e3, rel=1e-6)
            assert r["converged"] and r["ci_rel"] < 1e-6  # 3 repeats suffice on a deterministic board
        by_macs = sorted(rows, key=lambda r: r["macs"])
        assert by_macs[-1]["median_ms"] > by_macs[0]["median_ms"]
    with Store(str(real_db)) as s:
        (real,) = s.measurements(device="qemu-m7")
    d = real["details"]
    # every byte travels but runs of zeros (sent as a repeated word)
    assert d["weights"] == "real" and d["upload"]["generated_bytes"] == 0 and d["upload"]["sent_bytes"] > 0.9 * d["blob_bytes"]
    check = d["output_check"]  # the real weights: close to onnxruntime's float model
    assert check["identical_to_host_kernels"] and check["cosine_vs_onnxruntime"] > 0.85
    assert 0 < check["max_steps_vs_onnxruntime"] < 128
    assert generated["config_hash"] == real["config_hash"] and generated["details"]["weights"] == "generated"
    assert abs(generated["median_ms"] - real["median_ms"]) / real["median_ms"] < 0.005


def test_exported_c_model_builds_into_the_firmware_and_runs(tmp_path):
    """`--format c` writes model.c/model.h; built into the QEMU firmware the model answers
    INFER without any upload, with the same output as the host build of the runtime."""
    art = export_subnet(get_space("mcu-mbnet"), SMALL, "c", tmp_path)
    model_c = art.path
    assert model_c.endswith("-c/model.c") and os.path.exists(model_c.replace("model.c", "model.h"))
    header = open(model_c.replace("model.c", "model.h")).read()
    assert "#define HWNAS_MODEL_INPUT_BYTES 12288u" in header and "hwnas_model_invoke" in header
    elf = build_firmware(model_c=model_c)
    assert "builtin" in str(elf)
    with QemuBoard(elf=elf) as b:
        lk = McuLink.open(b.url)
        info = lk.hello()
        assert info.model_loaded
        x = np.random.default_rng(11).integers(-40, 40, size=12288, dtype=np.int8)
        out = np.frombuffer(lk.infer(x.tobytes()), dtype=np.int8)
        blob = export_subnet(get_space("mcu-mbnet"), SMALL, "blob", tmp_path)
        assert np.array_equal(out, HostBlobRunner(open(blob.path, "rb").read()).invoke(x, 1000))
        run = lk.run(warmup=0, repeats=2, per_layer=False)
        assert ticks_to_instructions(run.cycles[0]) == ticks_to_instructions(run.cycles[1])
        lk.close()


@pytest.mark.parametrize("board, flash_kb, ram_kb", [("stm32f746-disco", 1024, 320), ("nucleo-h743zi", 2048, 512)])
def test_stm32_boards_build_and_an_over_budget_build_fails_to_link(board, flash_kb, ram_kb, tmp_path):
    """The real boards cannot run here, but they must build: Cortex-M7 ELF, vector table at the
    start of flash, everything inside the board's real memory sizes."""
    import subprocess

    elf = build_firmware(board)
    head = elf.read_bytes()
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 40
    sizes = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sections = {line.split()[0]: (int(line.split()[1]), int(line.split()[2])) for line in sizes.splitlines()
                if line.startswith(".") and len(line.split()) == 3}
    assert sections[".isr_vector"][1] == 0x08000000
    # the flash slot (where LOAD_END's keep flag writes a blob) lies past the code
    slot = {"stm32f746-disco": 0x080C0000, "nucleo-h743zi": 0x081A0000}[board]
    assert sections[".text"][1] + sections[".text"][0] <= slot < 0x08000000 + flash_kb * 1024
    ram_end = max(start + size for name, (size, start) in sections.items() if name in (".bss", ".noinit"))
    ram_origin = 0x20000000 if board.startswith("stm32f7") else 0x24000000
    assert ram_end <= ram_origin + ram_kb * 1024
    from hwnas_deploy.mcu.firmware import FIRMWARE_DIR

    over = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), f"BOARD={board}", f"BUILD={tmp_path}/b",
                           f"ARENA_CAPACITY={ram_kb * 1024}"], capture_output=True, text=True)
    assert over.returncode != 0 and "region `RAM' overflowed" in over.stderr
    # `hwnas firmware build --baud 115200`: the USART's divider is the kernel clock over that rate
    # (the board object alone, which is all BAUD changes)
    board_o = tmp_path / "baud" / "boards" / board / "board.o"
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), f"BOARD={board}", f"BUILD={tmp_path}/baud", "BAUD=115200",
                    str(board_o)], capture_output=True, text=True, check=True)
    clock = {"stm32f746-disco": 108_000_000, "nucleo-h743zi": 100_000_000}[board]
    code = subprocess.run(["arm-none-eabi-objdump", "-d", str(board_o)], capture_output=True, text=True,
                          check=True).stdout
    assert f"#{(clock + 57600) // 115200}\t" in code and f"#{(clock + 460800) // 921600}\t" not in code


def test_float32_blob_with_pooling_and_hardswish_runs_on_the_board(link, tmp_path):
    """A float32 blob (hard-swish, max and average pooling) answers INFER on the board exactly as
    the host build of the same kernels."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish(), nn.MaxPool2d(3, 2, padding=1), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    ).eval()
    from hwnas_deploy.export import export_model

    art = export_model(model, torch.randn(1, 3, 16, 16), "blob-fp32", tmp_path / "m.f32.hwnb")
    blob = open(art.path, "rb").read()
    load = link.load(blob)
    assert load.input_bytes == 16 * 16 * 3 * 4 and load.output_bytes == 10 * 4
    x = np.random.default_rng(2).standard_normal((1, 16, 16, 3)).astype(np.float32)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.float32)
    np.testing.assert_array_equal(board, HostBlobRunner(blob).invoke(x, board.size))
    ref = model(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy().ravel()
    np.testing.assert_allclose(board, ref, atol=1e-4)
    run = link.run(warmup=0, repeats=2, per_layer=True)
    assert ticks_to_instructions(run.cycles[0]) == ticks_to_instructions(run.cycles[1]) > 0


def test_a_nas_bench_201_network_runs_on_the_board(link, tmp_path):
    """NAS-Bench-201 cells need int8 ReLU on its own (ReLU-Conv-BN edges read the un-activated sum)
    and 3x3 average pooling: the board answers as the host build of the kernels (on generated
    weights: the operators are what is tested here), and the export agreed with LiteRT's
    reference kernels."""
    sp = get_space("nb201")
    cell = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"
    art = export_subnet(sp, cell, "blob", tmp_path)
    assert {"RELU", "AVERAGE_POOL_2D", "ADD"} <= set(art.extra["ops"])
    assert art.extra["max_lsb_vs_litert_reference"] == 0  # bit-exact, as README claims for nb201
    blob, _, load = load_generated(link, open(art.path, "rb").read())
    assert load.output_bytes == 10
    scale, zero = art.inputs[0].quantization
    x = np.clip(np.round(np.random.default_rng(5).standard_normal(load.input_bytes) / scale) + zero, -128,
                127).astype(np.int8)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.int8)
    np.testing.assert_array_equal(board, HostBlobRunner(blob).invoke(x, 10))
    assert len(set(board.tolist())) > 1  # not a constant answer


def test_a_blox_network_with_squeeze_excitation_runs_on_the_board(link, tmp_path):
    """BLOX's mbconv gates channels with squeeze-and-excitation: MEAN, LOGISTIC (an int8 table
    taken from LiteRT's reference kernel) and a MUL broadcast over H and W. The int8 export is
    bit-exact with LiteRT's reference kernels and the board answers as the host build; the float32
    kernels run an SE model on the board too."""
    import torch
    from torch import nn

    from hwnas_deploy.export import export_model
    from hwnas_deploy.spaces.blox import _SE

    sp = get_space("blox-mini")
    art = export_subnet(sp, {"blocks": ["seq-res:mbconv,bconv", "mbconv", "par:conv,mbconv"]}, "blob", tmp_path)
    assert {"MEAN", "LOGISTIC", "MUL"} <= set(art.extra["ops"])
    assert art.extra["max_lsb_vs_litert_reference"] == 0
    blob, _, load = load_generated(link, open(art.path, "rb").read())
    scale, zero = art.inputs[0].quantization
    x = np.clip(np.round(np.random.default_rng(6).standard_normal(load.input_bytes) / scale) + zero, -128,
                127).astype(np.int8)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.int8)
    np.testing.assert_array_equal(board, HostBlobRunner(blob).invoke(x, 10))
    assert len(set(board.tolist())) > 1

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _SE(8)).eval()
    f32 = export_model(model, torch.randn(1, 3, 8, 8), "blob-fp32", tmp_path / "se.f32.hwnb")
    blob = open(f32.path, "rb").read()
    link.load(blob)
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 3)).astype(np.float32)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.float32)
    np.testing.assert_array_equal(board, HostBlobRunner(blob).invoke(x, board.size))
    ref = model(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy().ravel()  # NCHW, as the graph's output
    np.testing.assert_allclose(board, ref, atol=1e-5)


def test_every_operator_of_user_networks_runs_on_the_board_bit_exact(link, tmp_path):
    """Operators our spaces never use but users' networks do (depth multipliers, non-square kernels
    and strides, an asymmetric pad, int8 hard-swish / tanh / leaky ReLU, concatenation, torch's
    x.mean((2, 3)), softmax): the int8 blob equals LiteRT's reference kernels on every output of
    four inputs and the board equals the host build; float32 tracks torch on the board."""
    import torch

    from hwnas_deploy.export import compare_blob_with_litert, export_model
    from hwnas_deploy.mcu.blob import tflite_to_blob
    from tests.operator_nets import EVERY_OPERATOR_OPS, every_operator

    model, example = every_operator()
    int8 = export_model(model, example, "tflite-int8", tmp_path / "m.int8.tflite", verify=False)
    info = tflite_to_blob(int8.path, tmp_path / "m.hwnb")
    assert EVERY_OPERATOR_OPS <= set(info.op_names), info.op_names
    assert [compare_blob_with_litert(tmp_path / "m.hwnb", int8.path, seed=s) for s in range(4)] == [0] * 4
    blob = (tmp_path / "m.hwnb").read_bytes()
    load = link.load(blob)
    assert load.output_bytes == 6
    rng = np.random.default_rng(8)
    for _ in range(2):
        x = rng.integers(-128, 128, size=load.input_bytes, dtype=np.int8)
        board = np.frombuffer(link.infer(x.tobytes()), dtype=np.int8)
        np.testing.assert_array_equal(board, HostBlobRunner(blob).invoke(x, 6))
    run = link.run(warmup=0, repeats=1, per_layer=True)
    assert len(run.layer_cycles) == info.n_ops and all(c > 0 for c in run.layer_cycles)

    f32 = export_model(model, example, "blob-fp32", tmp_path / "m.f32.hwnb")
    assert EVERY_OPERATOR_OPS <= set(f32.extra["ops"])
    blob = open(f32.path, "rb").read()
    link.load(blob)
    x = rng.standard_normal((1, 16, 16, 3)).astype(np.float32)
    board = np.frombuffer(link.infer(x.tobytes()), dtype=np.float32)
    # the board's newlib and the host's glibc may round expf / tanhf differently in the last bit
    np.testing.assert_allclose(board, HostBlobRunner(blob).invoke(x, board.size), rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        ref = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy().ravel()
    np.testing.assert_allclose(board, ref, atol=1e-5)


def test_the_cortex_m7_assembly_loops_equal_the_portable_kernels_on_the_board(link, tmp_path):
    """The inner loops written in assembly run on the board only (the host build runs their C
    twin): shapes with an odd number of 4-channel groups (one group outside the two-group loop),
    an odd pixel count, im2col of 12 and 20 channels with padding and stride 2, a residual ADD
    through the rescaling tables, a fully connected layer of 20 inputs; each convolution once with
    int8 weights (blob v1) and once with its weights unpacked (v2, the loop without SXTB16). The
    board's optimised kernels equal its portable ones and the host build, on every output, and
    both blobs compute the same."""
    import torch

    from hwnas_deploy.export import export_model
    from hwnas_deploy.mcu.blob import tflite_to_blob

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(12, 36, 3, padding=1)  # 108 taps: 27 groups
            self.b = torch.nn.Conv2d(36, 20, 1)  # 9 groups, 81 pixels
            self.c = torch.nn.Conv2d(20, 20, 3, stride=2, padding=1)  # 45 groups
            self.d = torch.nn.Conv2d(20, 20, 3, padding=1)
            self.fc = torch.nn.Linear(20, 10)  # 5 groups

        def forward(self, x):
            y = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
            y = torch.relu(self.d(y) + y)  # 500 elements: the table path
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    model = Net().eval()
    int8 = export_model(model, torch.randn(1, 12, 9, 9), "tflite-int8", tmp_path / "m.int8.tflite", verify=False)
    outputs = {}
    for unpacked in (False, True):
        info = tflite_to_blob(int8.path, tmp_path / "m.hwnb", unpacked=unpacked)
        assert {"CONV_2D", "ADD", "FULLY_CONNECTED"} <= set(info.op_names), info.op_names
        assert info.unpacked_layers == (4 if unpacked else 0)  # every conv: outputs of 81 and 25 pixels
        blob = (tmp_path / "m.hwnb").read_bytes()
        load = link.load(blob)
        rng = np.random.default_rng(11)
        for i in range(3):
            x = rng.integers(-128, 128, size=load.input_bytes, dtype=np.int8)
            fast = np.frombuffer(link.infer(x.tobytes(), kernels="optimised"), dtype=np.int8)
            assert fast.tobytes() == link.infer(x.tobytes(), kernels="portable")
            np.testing.assert_array_equal(fast, HostBlobRunner(blob).invoke(x, fast.size))
            assert len(set(fast.tolist())) > 1  # not a saturated constant
            outputs.setdefault(i, set()).add(fast.tobytes())
    assert all(len(o) == 1 for o in outputs.values())


def test_a_pipelined_run_exports_the_next_network_while_one_is_measured_and_counts_the_same(tmp_path, monkeypatch):
    """On a device whose timing is not this host's CPU's (the twin counts instructions), the next
    network's export runs in a thread while the current one is uploaded and run: the same
    networks, measured with and without, execute the same instruction counts."""
    import threading

    from hwnas_deploy.measurement import Measurer, SubNetwork
    from hwnas_deploy.measurement.executor import InProcess
    from hwnas_deploy.measurement.plan import Plan

    from .conftest import small_cells

    events: list[tuple[str, str, str, float, float]] = []  # (what, network, thread, start, end)
    real_export, real_run = Plan.export, Plan.run

    def export(plan, job):
        t0 = time.monotonic()
        art = real_export(plan, job)
        events.append(("export", job.name, threading.current_thread().name, t0, time.monotonic()))
        return art

    def run(plan, driver, artifact):
        t0 = time.monotonic()
        summary = real_run(plan, driver, artifact)
        events.append(("run", artifact.path, threading.current_thread().name, t0, time.monotonic()))
        return summary

    monkeypatch.setattr(Plan, "export", export)
    monkeypatch.setattr(Plan, "run", run)
    # on by default for MCU boards (measurement.pipeline: false turns it off); a server is not pipelined
    assert load_profile("qemu-m7").pipeline and not load_profile("local-cpu").pipeline
    nets = [SubNetwork(get_space("nb201"), c) for c in small_cells(2)]
    medians = {}
    for pipeline in (False, True):
        events.clear()
        with Measurer("qemu-m7", None, executor=InProcess(pipeline), artifacts_dir=tmp_path / str(pipeline),
                      progress=False) as m:
            report = m.measure(nets, "firmware")
        medians[pipeline] = {h: r.median_ms for h, r in report.results.items()}
        exports = sorted((e for e in events if e[0] == "export"), key=lambda e: e[3])  # by start
        runs = [e for e in events if e[0] == "run"]
        assert sorted(e[1] for e in exports) == sorted(n.config_hash for n in nets) and len(runs) == 2
        if pipeline:  # exports ahead (as many as conversions run side by side) in threads
            assert {e[2] for e in exports[1:]} == {"hwnas-export"}
            for nxt, current in zip(exports[1:], runs[:-1]):  # each next export began before the run ended
                assert nxt[3] < current[4]
        else:
            assert {e[2] for e in exports} == {"MainThread"}
    assert medians[True] == medians[False] and all(np.isfinite(list(medians[True].values())))
