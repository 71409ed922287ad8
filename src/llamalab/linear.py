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
    """Apply several linears that share their input (Q/K/V, gate/up) in one go where supported."""
    first = linears[0]
    if isinstance(first, QuantLinear) and all(isinstance(l, QuantLinear) for l in linears) and x.shape[0] == 1:
        from . import kernels

        outs = kernels.matvec_many([l.qtensor for l in linears], x[0])
        return [o[None, :] for o in outs]
    return [l(x) for l in linears]


class QuantLinear:
    """y = x @ W.T computed by compiled kernels straight from the quantized blocks."""

    def __init__(self, w: QTensor):
        from . import kernels

        self.qtensor = kernels.prepare(w)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from . import kernels

        if x.shape[0] == 1:
            return kernels.matvec(self.qtensor, x[0])[None, :]  # (1, rows)
        return kernels.matmul(self.qtensor, x)  # (T, rows)


BACKENDS = {"reference": DenseLinear, "fast": QuantLinear}
