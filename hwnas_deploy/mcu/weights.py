"""Latency-only uploads: a blob whose weights the board generates instead of receiving them.

A board's latency depends on the shapes and the quantisation of a network's weights, not on
their values, and the weights are nearly all of a blob (an `mcu-mbnet` network's 0.6-1.1 MB reach
a QEMU twin at 20-40 KiB/s, a real board at 115200 baud at 11 KiB/s). With generated weights the
host sends the blob's header, tables, biases and multipliers, and for each constant int8 tensor
only a LOAD_FILL naming its range: the board fills it with the counter-based generator below
(`hw_generate_bytes` in firmware/runtime/hw_model.c), and the CRC-32 checked at LOAD_END proves
it built exactly the blob the host holds. The host runs that same blob to check the board's
output bit for bit; a float reference has nothing to compare it with (the weights are noise).
"""

from __future__ import annotations

import zlib

import numpy as np

from hwnas_deploy.mcu.blob import CONST, HEADER, INT8, TENSOR

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


def weight_ranges(blob: bytes) -> list[tuple[int, int]]:
    """(start, end) in `blob` of the bytes of its constant int8 tensors (the weights), sorted and
    merged where they touch. Float32 weights are left out: random bit patterns are NaNs and
    denormals, whose timing is not a network's."""
    fields = HEADER.unpack_from(blob)
    n_tensors, tensors_offset, data_offset = fields[5], fields[10], fields[12]
    ranges = []
    for i in range(n_tensors):
        d0, d1, d2, d3, dtype, kind, _, offset, _, _ = TENSOR.unpack_from(blob, tensors_offset + i * TENSOR.size)
        if kind == CONST and dtype == INT8:
            start = data_offset + offset
            ranges.append((start, start + d0 * d1 * d2 * d3))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def with_generated_weights(blob: bytes, seed: int = WEIGHT_SEED) -> bytes:
    """The blob a board builds from a latency-only upload of `blob`: its int8 weights replaced
    by the generator's bytes at their positions, and its own CRC-32 (bytes 16 on) updated."""
    out = bytearray(blob)
    for start, end in weight_ranges(blob):
        out[start:end] = generated_bytes(start, end - start, seed).tobytes()
    crc_at = 12  # HEADER: magic u32, version u16, header_size u16, total_size u32, crc32 u32
    out[crc_at:crc_at + 4] = (zlib.crc32(bytes(out[16:])) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)
