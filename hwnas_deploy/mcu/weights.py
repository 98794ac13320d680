"""Latency-only uploads: a blob whose constants the board makes up instead of receiving them.

A board's latency depends on the shapes and the quantisation of a network's weights, not on
their values, and the weights are nearly all of a blob (an `mcu-mbnet` network's 0.6-1.1 MB reach
a QEMU twin at 14-19 KiB/s, a real board at 115200 baud at 11 KiB/s). With generated weights the
host sends the blob's header, tensor and operator tables and lookup tables; each constant int8
tensor is only named (a segment of LOAD_SEGMENTS, or a LOAD_FILL on protocol 2 boards), and the
board fills it with the counter-based generator below (`hw_generate_bytes` in
firmware/runtime/hw_model.c); each int32 array (biases, requantisation multipliers and shifts)
goes as its first value to repeat (protocol 3): every value valid, and the kernels' instruction
counts do not depend on them. The CRC-32 checked
at LOAD_END proves the board built exactly the blob the host holds; the host runs that same blob
to check the board's output bit for bit (a float reference has nothing to compare it with: the
weights are noise).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwnas_deploy.mcu.blob import CONST, HEADER, INT8, INT32, TENSOR

#: the generator's seed for every latency-only upload (recorded with each measurement)
WEIGHT_SEED = 0x5EED
WEIGHTS = ("generated", "real")


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r}: choose 'generated' (latency only: the board makes them up) "
                         "or 'real' (uploaded, the output checked against the float model)")
    return weights


def generated_bytes(position: int, n: int, seed: int = WEIGHT_SEED) -> np.ndarray:
    """Bytes [position, position + n) of the generator's stream: byte i is byte (i & 3) of
    MurmurHash3's 32-bit finaliser of seed + (i >> 2) * 0x9E3779B9 (all arithmetic mod 2^32)."""
    at = np.arange(position, position + n, dtype=np.uint64)
    x = ((seed + (at >> np.uint64(2)) * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return (x >> ((at & np.uint64(3)) * np.uint64(8)).astype(np.uint32)).astype(np.uint8)


@dataclass(frozen=True)
class Made:
    """Bytes [start, end) of a blob that the board makes instead of receiving: the generator's
    stream (`word` None), or `word` (4 bytes) repeated."""

    start: int
    end: int
    word: bytes | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


def made_ranges(blob: bytes, int32: bool = True) -> list[Made]:
    """What a latency-only upload of `blob` has the board make, in blob order: the bytes of its
    constant int8 tensors (the weights) from the generator, merged where they touch, and with
    `int32` (boards speaking protocol 3) each int32 array as its first value repeated. Float32
    constants are sent: random bit patterns are NaNs and denormals, whose timing is not a
    network's."""
    fields = HEADER.unpack_from(blob)
    n_tensors, tensors_offset, data_offset = fields[5], fields[10], fields[12]
    weights, arrays = [], {}  # by start: a constant stored once may back several tensors
    for i in range(n_tensors):
        d0, d1, d2, d3, dtype, kind, _, offset, _, _ = TENSOR.unpack_from(blob, tensors_offset + i * TENSOR.size)
        start, n = data_offset + offset, d0 * d1 * d2 * d3
        if kind == CONST and dtype == INT8 and n:
            weights.append((start, start + n))
        elif kind == CONST and dtype == INT32 and n > 1 and int32:  # one value: nothing to gain
            arrays[start] = Made(start, start + 4 * n, bytes(blob[start:start + 4]))
    merged: list[Made] = []
    for start, end in sorted(weights):
        if merged and start <= merged[-1].end:
            merged[-1] = Made(merged[-1].start, max(end, merged[-1].end))
        else:
            merged.append(Made(start, end))
    return sorted(merged + list(arrays.values()), key=lambda m: m.start)


def made_blob(blob: bytes, made: Sequence[Made], seed: int = WEIGHT_SEED) -> bytes:
    """The blob a board builds from a latency-only upload of `blob` (its `made` ranges made on
    the board), with its own CRC-32 (bytes 16 on) updated."""
    out = bytearray(blob)
    for m in made:
        if m.word is None:
            out[m.start:m.end] = generated_bytes(m.start, m.size, seed).tobytes()
        else:
            out[m.start:m.end] = (m.word * (m.size // 4 + 1))[:m.size]
    crc_at = 12  # HEADER: magic u32, version u16, header_size u16, total_size u32, crc32 u32
    out[crc_at:crc_at + 4] = (zlib.crc32(bytes(out[16:])) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)
