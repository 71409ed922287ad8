"""Bit packing shared by the block formats.

ggml packs small integers into bytes in *runs*: a run of ``group`` bytes holds
``8 // bits`` consecutive groups of values, the k-th group in bits ``k*bits ..`` of
every byte. For 4-bit values and group 16 (Q4_0)::

    byte j (0..15):  [ v(16 + j) | v(j) ]      high nibble | low nibble

and for 2-bit values and group 32 (Q2_K, Q3_K, Q6_K high bits)::

    byte j (0..31) of run r:  [ v(128r+96+j) | v(128r+64+j) | v(128r+32+j) | v(128r+j) ]

``unpack_fields`` and ``pack_fields`` are exact inverses for every (bits, group).
"""

from __future__ import annotations

import numpy as np


def _shifts(bits: int) -> np.ndarray:
    return np.arange(0, 8, bits, dtype=np.uint8).reshape(1, 1, -1, 1)  # (1, 1, per_byte, 1)


def unpack_fields(packed: np.ndarray, bits: int, group: int) -> np.ndarray:
    """uint8 (n, m) -> uint8 (n, m * 8 // bits): value r*group*per + k*group + j is
    bits [k*bits, (k+1)*bits) of byte r*group + j."""
    n, m = packed.shape
    runs = packed.reshape(n, m // group, 1, group)  # (n, runs, 1, group)
    values = (runs >> _shifts(bits)) & np.uint8((1 << bits) - 1)  # (n, runs, per_byte, group)
    return values.reshape(n, m * 8 // bits)


def pack_fields(values: np.ndarray, bits: int, group: int) -> np.ndarray:
    """uint8 (n, k) with values < 2**bits -> uint8 (n, k * bits // 8); inverse of unpack_fields."""
    n, k = values.shape
    per_byte = 8 // bits
    runs = values.astype(np.uint8).reshape(n, k // (group * per_byte), per_byte, group)
    return np.bitwise_or.reduce(runs << _shifts(bits), axis=2).reshape(n, k * bits // 8)


# Q4_K / Q5_K: 8 six-bit scales (sc) and 8 six-bit mins (m) in 12 bytes
#  0..3   mm ssssss   sc[0..3] in the low 6 bits; bits 4-5 of sc[4..7] on top
#  4..7   mm mmmmmm   m[0..3] in the low 6 bits;  bits 4-5 of m[4..7] on top
#  8..11  mmmm ssss   low 4 bits of sc[4..7] | low 4 bits of m[4..7] << 4
def unpack_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 12) -> (sc, m), each uint8 (n, 8) in 0..63."""
    a, b, c = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]  # (n, 4) each
    sc = np.concatenate([a & 63, (c & 15) | ((a >> 6) << 4)], axis=1)
    m = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, m


def pack_scale_min_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(sc, m) uint8 (n, 8) in 0..63 -> uint8 (n, 12); inverse of unpack_scale_min_k4."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    a = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    b = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    c = (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)
    return np.concatenate([a, b, c], axis=1)


# Q3_K: 16 six-bit scales in 12 bytes
#  0..7   low 4 bits of scale j (low nibble) and of scale 8 + j (high nibble)
#  8..11  bits 4-5 of scales j, 4 + j, 8 + j, 12 + j at bit 0, 2, 4, 6 of byte 8 + j
def unpack_scales_q3k(scales: np.ndarray) -> np.ndarray:
    """uint8 (n, 12) -> uint8 (n, 16) in 0..63 (stored with a +32 offset)."""
    low = unpack_fields(scales[:, :8], bits=4, group=8)  # (n, 16)
    high = unpack_fields(scales[:, 8:], bits=2, group=4)  # (n, 16)
    return low | (high << 4)


def pack_scales_q3k(sc: np.ndarray) -> np.ndarray:
    """uint8 (n, 16) in 0..63 -> uint8 (n, 12); inverse of unpack_scales_q3k."""
    sc = sc.astype(np.uint8)
    low = pack_fields(sc & 15, bits=4, group=8)  # (n, 8)
    high = pack_fields(sc >> 4, bits=2, group=4)  # (n, 4)
    return np.concatenate([low, high], axis=1)
