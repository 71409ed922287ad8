"""Bit-exact ports of ggml's reference quantizers for the 32-value formats (quantize_row_*_ref).

Each function takes float32 (n_blocks, 32) and fills uint8 (n_blocks, type_size), one
block per loop iteration (the caller threads over slices). These are what ``llama-quantize`` writes without an imatrix.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .ggml_scalar import f32, put_f16, roundf, trunc_int

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(inline="always")
def _abs_max(x, b):
    """The value of largest magnitude (first one on ties), as the C loops find it."""
    amax = f32(0.0)
    mx = f32(0.0)
    for j in range(x.shape[1]):
        v = x[b, j]
        if amax < abs(v):
            amax = abs(v)
            mx = v
    return mx


@njit(inline="always")
def _min_max(x, b):
    mn = f32(3.4028234663852886e38)
    mx = f32(-3.4028234663852886e38)
    for j in range(x.shape[1]):
        v = x[b, j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(**_JIT)
def encode_q4_0(x, out):
    # block_q4_0 { half d; u8 qs[16]; }  q(j) low nibble of qs[j], q(16 + j) high nibble
    for b in range(x.shape[0]):
        d = _abs_max(x, b) / f32(-8.0)
        inv = f32(1.0) / d if d != 0 else f32(0.0)
        put_f16(out, b, 0, d)
        for j in range(16):
            q0 = min(15, trunc_int(x[b, j] * inv + f32(8.5)))
            q1 = min(15, trunc_int(x[b, 16 + j] * inv + f32(8.5)))
            out[b, 2 + j] = (q0 & 0xFF) | ((q1 << 4) & 0xFF)


@njit(**_JIT)
def encode_q4_1(x, out):
    # block_q4_1 { half d; half m; u8 qs[16]; }
    for b in range(x.shape[0]):
        mn, mx = _min_max(x, b)
        d = (mx - mn) / f32(15.0)
        inv = f32(1.0) / d if d != 0 else f32(0.0)
        put_f16(out, b, 0, d)
        put_f16(out, b, 2, mn)
        for j in range(16):
            q0 = min(15, trunc_int((x[b, j] - mn) * inv + f32(0.5)))
            q1 = min(15, trunc_int((x[b, 16 + j] - mn) * inv + f32(0.5)))
            out[b, 4 + j] = (q0 & 0xFF) | ((q1 << 4) & 0xFF)


@njit(**_JIT)
def encode_q5_0(x, out):
    # block_q5_0 { half d; u8 qh[4]; u8 qs[16]; }  bit j of the little-endian qh = bit 4 of q(j)
    for b in range(x.shape[0]):
        d = _abs_max(x, b) / f32(-16.0)
        inv = f32(1.0) / d if d != 0 else f32(0.0)
        put_f16(out, b, 0, d)
        qh = 0
        for j in range(16):
            q0 = min(31, trunc_int(x[b, j] * inv + f32(16.5)))
            q1 = min(31, trunc_int(x[b, 16 + j] * inv + f32(16.5)))
            out[b, 6 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4)
            qh |= ((q0 & 0x10) >> 4) << j
            qh |= ((q1 & 0x10) >> 4) << (j + 16)
        for k in range(4):
            out[b, 2 + k] = (qh >> (8 * k)) & 0xFF


@njit(**_JIT)
def encode_q5_1(x, out):
    # block_q5_1 { half d; half m; u8 qh[4]; u8 qs[16]; }
    for b in range(x.shape[0]):
        mn, mx = _min_max(x, b)
        d = (mx - mn) / f32(31.0)
        inv = f32(1.0) / d if d != 0 else f32(0.0)
        put_f16(out, b, 0, d)
        put_f16(out, b, 2, mn)
        qh = 0
        for j in range(16):
            q0 = trunc_int((x[b, j] - mn) * inv + f32(0.5)) & 0xFF
            q1 = trunc_int((x[b, 16 + j] - mn) * inv + f32(0.5)) & 0xFF
            out[b, 8 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4)
            qh |= ((q0 & 0x10) >> 4) << j
            qh |= ((q1 & 0x10) >> 4) << (j + 16)
        for k in range(4):
            out[b, 4 + k] = (qh >> (8 * k)) & 0xFF


@njit(**_JIT)
def encode_q8_0(x, out):
    # block_q8_0 { half d; i8 qs[32]; }
    for b in range(x.shape[0]):
        amax = f32(0.0)
        for j in range(32):
            amax = max(amax, abs(x[b, j]))
        d = amax / f32(127.0)
        inv = f32(1.0) / d if d != 0 else f32(0.0)
        put_f16(out, b, 0, d)
        for j in range(32):
            out[b, 2 + j] = np.int64(roundf(x[b, j] * inv)) & 0xFF
