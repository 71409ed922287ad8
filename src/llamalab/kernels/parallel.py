"""The parallel regions: each entry point is one compiled call and one thread launch.

Threads split the output rows into contiguous chunks (``prange``'s static schedule),
so each thread streams its own slice of the weight bytes. x is quantized once, before
the parallel loop. Arguments always arrive with fixed types (int64 codes, read-only
uint8 C arrays, float32 C arrays), so each function is compiled exactly once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activation import META_PER_BLOCK, QBLOCK, quantize_q8
from .rows import is_quantized, row_dequantize, row_dot


@njit(cache=True)
def _activation(x, quantized):
    """(xq, xm) for x, or empty arrays when no weight needs them."""
    n = x.shape[0] if quantized else 0
    xq = np.empty(n, np.int8)
    xm = np.empty(n // QBLOCK * META_PER_BLOCK, np.float32)
    if quantized:
        quantize_q8(x, xq, xm)
    return xq, xm


@njit(cache=True, parallel=True)
def matvec_rows(qt, w, x, out):
    """out (rows,) = w (rows, row_bytes) of type qt @ x (cols,)."""
    xq, xm = _activation(x, is_quantized(qt))
    for r in prange(w.shape[0]):
        out[r] = row_dot(qt, w[r], x, xq, xm)


@njit(cache=True, parallel=True)
def matvec3_rows(qt0, w0, out0, qt1, w1, out1, qt2, w2, out2, x):
    """Three matvecs sharing x in one parallel region (an unused slot has 0 rows)."""
    xq, xm = _activation(x, is_quantized(qt0) or is_quantized(qt1) or is_quantized(qt2))
    n0, n1 = w0.shape[0], w1.shape[0]
    for i in prange(n0 + n1 + w2.shape[0]):
        if i < n0:
            out0[i] = row_dot(qt0, w0[i], x, xq, xm)
        elif i < n0 + n1:
            out1[i - n0] = row_dot(qt1, w1[i - n0], x, xq, xm)
        else:
            out2[i - n0 - n1] = row_dot(qt2, w2[i - n0 - n1], x, xq, xm)


@njit(cache=True, parallel=True)
def matmul_rows(qt, w, X, out):
    """out (n, rows) = X (n, cols) @ w.T for small n: each weight row is read from memory
    once and applied to all n vectors while it sits in L1."""
    n, cols = X.shape
    quantized = is_quantized(qt)
    m = cols if quantized else 0
    xq = np.empty((n, m), np.int8)  # (n, cols)
    xm = np.empty((n, m // QBLOCK * META_PER_BLOCK), np.float32)  # (n, 5 * nb)
    if quantized:
        for i in range(n):
            quantize_q8(X[i], xq[i], xm[i])
    for r in prange(w.shape[0]):
        row = w[r]
        for i in range(n):
            out[i, r] = row_dot(qt, row, X[i], xq[i], xm[i])


@njit(cache=True, parallel=True)
def dequantize_rows(qt, w, r0, dst):
    """dst (k, cols) = rows r0 .. r0 + k of w, as float32."""
    for i in prange(dst.shape[0]):
        row_dequantize(qt, w[r0 + i], dst[i])
