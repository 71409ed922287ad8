"""Large-batch products (prefill): AMX bf16 tiles where the CPU has them, else BLAS.

For n vectors of x, the FLOPs grow with n while W is read once, so past a handful of
vectors the work is a real matrix product:

  * ``amx``: ``amx.matmul_amx`` (bf16 operands, float32 sums; ~3e-3 relative error).
  * ``blas``: a panel of W's rows is dequantized into a reusable float32 buffer
    (``parallel.dequantize_rows``) and ``X @ panel.T`` goes to OpenBLAS, written
    straight into the matching columns of ``out`` (exact float32 products).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from . import amx
from .parallel import dequantize_rows

PANEL_BYTES = 1 << 21  # float32 panel size: large enough for BLAS, small enough to stay in cache
BACKENDS = ("amx", "blas") if amx.AVAILABLE else ("blas",)
_backend = BACKENDS[0]


def set_backend(name: str) -> None:
    """Choose the large-batch backend: 'amx' (if available) or 'blas'."""
    global _backend
    if name not in BACKENDS:
        raise InvalidArgumentError(f"gemm backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The large-batch backend in use."""
    return _backend


def matmul_large(qt: int, data: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """out (n, rows) = X (n, cols) @ W.T, W given as validated (qt, data (rows, row_bytes))."""
    if _backend == "amx":
        amx.matmul_amx(qt, data, X, out)
    else:
        matmul_blas(qt, data, X, out)


def matmul_blas(qt: int, data: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """The BLAS path of ``matmul_large``."""
    rows, cols = out.shape[1], X.shape[1]
    panel = max(1, min(rows, PANEL_BYTES // (4 * cols)))
    buf = np.empty((panel, cols), np.float32)  # (panel, cols)
    for r0 in range(0, rows, panel):
        k = min(panel, rows - r0)
        dequantize_rows(qt, data, r0, buf[:k])
        np.matmul(X, buf[:k].T, out=out[:, r0 : r0 + k])  # (n, cols) @ (cols, k) -> (n, k)
