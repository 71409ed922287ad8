"""Format dispatch for the compiled decode step: matvec and embedding rows by qtype code.

Weights arrive as flat uint8 views of the file; `code(qtype)` numbers the formats this
module can run, and `prepare(w)` converts any other format once (to float32).
"""

from __future__ import annotations

import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from numba import njit, prange

from .tensor import QTensor

F32, F16, Q8_0, Q4_0, Q4_1 = range(5)
CODES = {Q.F32: F32, Q.F16: F16, Q.Q8_0: Q8_0, Q.Q4_0: Q4_0, Q.Q4_1: Q4_1}

# f16 bit pattern -> float32: one 256 KiB table beats bit twiddling per value
F16_TO_F32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def code(qtype) -> int:
    return CODES[Q(qtype)]


def prepare(w: QTensor) -> QTensor:
    """w unchanged when a kernel runs its format, else converted once to float32 (with a notice)."""
    if w.qtype in CODES:
        return w
    print(f"llamalab: {w.name}: no compiled kernel for {w.qtype.name}; using a float32 copy", file=sys.stderr)
    f = w.dequantize().astype(np.float32)
    return QTensor(w.name, Q.F32, w.shape, f.view(np.uint8).reshape(w.rows, -1))


@njit(cache=True, inline="always")
def _f16(w, o):
    return F16_TO_F32[np.int64(w[o]) | (np.int64(w[o + 1]) << 8)]


@njit(cache=True, fastmath=True, parallel=True)
def _mv_f32(w, x, out):
    m = w.view(np.float32)
    cols = x.size
    for r in prange(out.size):
        acc = np.float32(0.0)
        base = r * cols
        for j in range(cols):
            acc += m[base + j] * x[j]
        out[r] = acc


@njit(cache=True, fastmath=True, parallel=True)
def _mv_f16(w, x, out):
    cols = x.size
    for r in prange(out.size):
        acc = np.float32(0.0)
        base = r * cols * 2
        for j in range(cols):
            acc += _f16(w, base + 2 * j) * x[j]
        out[r] = acc


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q8_0(w, x, out):
    nb = x.size // 32
    for r in prange(out.size):
        acc = np.float32(0.0)
        for b in range(nb):
            o = (r * nb + b) * 34
            s = np.float32(0.0)
            for j in range(32):
                s += np.float32(np.int8(w[o + 2 + j])) * x[b * 32 + j]
            acc += _f16(w, o) * s
        out[r] = acc


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q4(w, x, out, with_min):
    """Q4_0 (18-byte blocks: d, 16 bytes of nibbles, value = (q - 8) * d) and
    Q4_1 (20-byte blocks: d, m, nibbles, value = q * d + m); low nibbles are values 0..15."""
    nb = x.size // 32
    bs = 20 if with_min else 18
    qo = 4 if with_min else 2
    xsum = np.zeros(nb, np.float32)
    for b in range(nb):
        for j in range(32):
            xsum[b] += x[b * 32 + j]
    for r in prange(out.size):
        acc = np.float32(0.0)
        for b in range(nb):
            o = (r * nb + b) * bs
            s = np.float32(0.0)
            for j in range(16):
                byte = w[o + qo + j]
                s += np.float32(byte & 15) * x[b * 32 + j] + np.float32(byte >> 4) * x[b * 32 + 16 + j]
            d = _f16(w, o)
            if with_min:
                acc += d * s + _f16(w, o + 2) * xsum[b]
            else:
                acc += d * (s - np.float32(8.0) * xsum[b])
        out[r] = acc


@njit(cache=True)
def matvec_code(c, w, x, out):
    """out (rows,) = W @ x for W in format code c, stored as the flat bytes w."""
    if c == F32:
        _mv_f32(w, x, out)
    elif c == F16:
        _mv_f16(w, x, out)
    elif c == Q8_0:
        _mv_q8_0(w, x, out)
    elif c == Q4_0:
        _mv_q4(w, x, out, False)
    else:
        _mv_q4(w, x, out, True)


@njit(cache=True)
def embed_row(c, w, row, cols, out):
    """out (cols,) = row `row` of W dequantized."""
    if c == F32:
        out[:] = w.view(np.float32)[row * cols : (row + 1) * cols]
        return
    if c == F16:
        for j in range(cols):
            out[j] = _f16(w, (row * cols + j) * 2)
        return
    nb = cols // 32
    bs = 34 if c == Q8_0 else (20 if c == Q4_1 else 18)
    for b in range(nb):
        o = (row * nb + b) * bs
        d = _f16(w, o)
        if c == Q8_0:
            for j in range(32):
                out[b * 32 + j] = d * np.float32(np.int8(w[o + 2 + j]))
        else:
            qo = 4 if c == Q4_1 else 2
            m = _f16(w, o + 2) if c == Q4_1 else np.float32(-8.0) * d
            for j in range(16):
                byte = w[o + qo + j]
                out[b * 32 + j] = np.float32(byte & 15) * d + m
                out[b * 32 + 16 + j] = np.float32(byte >> 4) * d + m
