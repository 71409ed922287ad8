"""Large-batch products (prefill): dequantize W in row panels, multiply with BLAS.

For n vectors of x, the FLOPs grow with n while W is read once, so past a handful
of vectors the fastest path is SGEMM: a panel of W's rows is dequantized into a
reusable float32 buffer (``parallel.dequantize_rows``) and ``X @ panel.T`` goes to
OpenBLAS, written straight into the matching columns of ``out``.
"""

from __future__ import annotations

import numpy as np

from .parallel import dequantize_rows

PANEL_BYTES = 1 << 21  # float32 panel size: large enough for BLAS, small enough to stay in cache


def matmul_blas(qt: int, data: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """out (n, rows) = X (n, cols) @ W.T, W given as validated (qt, data (rows, row_bytes))."""
    rows, cols = out.shape[1], X.shape[1]
    panel = max(1, min(rows, PANEL_BYTES // (4 * cols)))
    buf = np.empty((panel, cols), np.float32)  # (panel, cols)
    for r0 in range(0, rows, panel):
        k = min(panel, rows - r0)
        dequantize_rows(qt, data, r0, buf[:k])
        np.matmul(X, buf[:k].T, out=out[:, r0 : r0 + k])  # (n, cols) @ (cols, k) -> (n, k)
