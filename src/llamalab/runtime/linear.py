"""Matrix products over weights, swapped into the model as a layer.

``DenseLinear`` is the plain NumPy reference: the weight dequantized once to float32
and multiplied with BLAS, as a NumPy port such as llama3.np would do it.
``QuantLinear`` is the fast path: the weight stays in its block format (a view of the
file) and compiled kernels do the products.
"""

from __future__ import annotations

import numpy as np

from .tensor import QTensor


class DenseLinear:
    """y = x @ W.T with W dequantized lazily to float32 (the reference path)."""

    def __init__(self, w: QTensor):
        self.qtensor = w
        self._w: np.ndarray | None = None

    @property
    def weight(self) -> np.ndarray:
        if self._w is None:
            self._w = self.qtensor.dequantize()  # (rows, cols) float32
        return self._w

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T  # (T, cols) @ (cols, rows) -> (T, rows)


def fused(linears, x: np.ndarray) -> list[np.ndarray]:
    """Apply several linears that share their input (Q/K/V, gate/up)."""
    return [l(x) for l in linears]


class QuantLinear:
    """y = x @ W.T with W kept in its block format (the fast path).

    Single tokens go through the compiled decode step (`decode.py`), which reads
    `qtensor` directly; this object serves batched inputs (prefill, batched decode).
    """

    def __init__(self, w: QTensor):
        from .. import kernels

        self.qtensor = kernels.prepare(w)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from .. import kernels

        return kernels.matmul(self.qtensor, x)  # (T, cols) -> (T, rows)


BACKENDS = {"reference": DenseLinear, "fast": QuantLinear}
