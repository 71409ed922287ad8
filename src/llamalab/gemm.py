"""Batched products for prefill: dequantize one weight matrix at a time, then BLAS.

A 512-token prompt reuses every weight 512 times, so converting the blocks to float32
once per matrix (into a reusable buffer) and calling sgemm beats any per-block kernel.
"""

from __future__ import annotations

import numpy as np

from .decode_kernels import F16_TO_F32, code, embed_row  # noqa: F401  (embed_row: row-wise dequantizer)
from .tensor import QTensor
from numba import njit, prange

_buffers: dict[int, np.ndarray] = {}


def _scratch(n: int) -> np.ndarray:
    buf = _buffers.get(0)
    if buf is None or buf.size < n:
        buf = _buffers[0] = np.empty(n, np.float32)
    return buf[:n]


@njit(cache=True, parallel=True)
def _dequant_rows(c, w, rows, cols, out):
    """out (rows, cols) = the whole matrix in float32, rows in parallel."""
    row_bytes = w.size // rows
    for r in prange(rows):
        embed_row(c, w[r * row_bytes : (r + 1) * row_bytes], 0, cols, out[r])


def matmul(w: QTensor, x: np.ndarray) -> np.ndarray:
    """x (T, cols) @ W.T -> (T, rows), float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.cols:
        raise ValueError(f"{w.name}: input has shape {x.shape}, expected (T, {w.cols})")
    dense = _scratch(w.rows * w.cols).reshape(w.rows, w.cols)
    _dequant_rows(code(w.qtype), w.data.reshape(-1), w.rows, w.cols, dense)
    return x @ dense.T
