"""The parallel regions: each entry point is one compiled call and one thread launch.
Their bodies hold only calls (array code inside a parallel function makes Numba's
parfor passes, and so the first compile, several times slower).

Work is cut into chunks of whole rows (about ``CHUNK_BYTES`` of weights each) and
``prange``'s static schedule hands each thread one contiguous run of chunks, so every
thread streams its own slice of the weight bytes. x is quantized once, before the
parallel loop. Arguments always arrive with fixed types (int64 codes, read-only uint8
C arrays, float32 C arrays), so each function is compiled exactly once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activation import META_PER_BLOCK, QBLOCK, quantize_q8
from .rows import dot_rows, dot_rows_many, is_quantized, row_dequantize

CHUNK_BYTES = 8192  # weight bytes per unit of parallel work


@njit(cache=True)
def _activation(x, quantized):
    """(xq, xm) for x, or empty arrays when no weight needs them."""
    n = x.shape[0] if quantized else 0
    xq = np.empty(n, np.int8)
    xm = np.empty(n // QBLOCK * META_PER_BLOCK, np.float32)
    if quantized:
        quantize_q8(x, xq, xm)
    return xq, xm


@njit(cache=True)
def _chunk_rows(w):
    """Rows per chunk for weight w (rows, row_bytes)."""
    return max(1, CHUNK_BYTES // max(1, w.shape[1]))


@njit(cache=True, parallel=True)
def matvec_rows(qt, w, x, out):
    """out (rows,) = w (rows, row_bytes) of type qt @ x (cols,)."""
    xq, xm = _activation(x, is_quantized(qt))
    rows = w.shape[0]
    step = _chunk_rows(w)
    for c in prange((rows + step - 1) // step):
        dot_rows(qt, w, c * step, min(rows, (c + 1) * step), x, xq, xm, out)


@njit(cache=True, parallel=True)
def matvec3_rows(qt0, w0, out0, qt1, w1, out1, qt2, w2, out2, x):
    """Three matvecs sharing x in one parallel region (an unused slot has 0 rows)."""
    xq, xm = _activation(x, is_quantized(qt0) or is_quantized(qt1) or is_quantized(qt2))
    s0, s1, s2 = _chunk_rows(w0), _chunk_rows(w1), _chunk_rows(w2)
    n0 = (w0.shape[0] + s0 - 1) // s0
    n1 = (w1.shape[0] + s1 - 1) // s1
    n2 = (w2.shape[0] + s2 - 1) // s2
    for c in prange(n0 + n1 + n2):
        if c < n0:
            dot_rows(qt0, w0, c * s0, min(w0.shape[0], (c + 1) * s0), x, xq, xm, out0)
        elif c < n0 + n1:
            k = c - n0
            dot_rows(qt1, w1, k * s1, min(w1.shape[0], (k + 1) * s1), x, xq, xm, out1)
        else:
            k = c - n0 - n1
            dot_rows(qt2, w2, k * s2, min(w2.shape[0], (k + 1) * s2), x, xq, xm, out2)


@njit(cache=True)
def _activations(X, quantized):
    """(xq, xm) for each row of X (n, cols): (n, cols) int8 and (n, 11 * nb) float32."""
    n, cols = X.shape
    m = cols if quantized else 0
    xq = np.empty((n, m), np.int8)  # (n, cols)
    xm = np.empty((n, m // QBLOCK * META_PER_BLOCK), np.float32)  # (n, 11 * nb)
    if quantized:
        for i in range(n):
            quantize_q8(X[i], xq[i], xm[i])
    return xq, xm


@njit(cache=True, parallel=True)
def matmul_rows(qt, w, X, out):
    """out (n, rows) = X (n, cols) @ w.T for small n: each weight row is read from memory
    once, and each block of it decoded once per 4 vectors (rows.dot_rows_many)."""
    xq, xm = _activations(X, is_quantized(qt))
    rows = w.shape[0]
    step = _chunk_rows(w)
    for c in prange((rows + step - 1) // step):
        dot_rows_many(qt, w, c * step, min(rows, (c + 1) * step), X, xq, xm, out)


@njit(cache=True, parallel=True)
def dequantize_rows(qt, w, r0, dst):
    """dst (k, cols) = rows r0 .. r0 + k of w, as float32."""
    for i in prange(dst.shape[0]):
        row_dequantize(qt, w[r0 + i], dst[i])
