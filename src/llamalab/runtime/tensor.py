"""A weight matrix as stored in the file: a block format and a read-only byte view.

``QTensor`` never copies: ``data`` is a view of the memory-mapped file, shaped
``(rows, row_bytes)`` so that row ``i`` holds the blocks of output feature ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType


@dataclass(frozen=True, eq=False)
class QTensor:
    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order: (rows, cols) = (out_features, in_features)
    data: np.ndarray  # uint8 (rows, row_bytes), read-only view of the file

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[-1]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def dequantize(self) -> np.ndarray:
        """The whole tensor as float32 (rows, cols): the reference path's view of it."""
        from ..quants import dequantize

        return dequantize(self.data, self.qtype).reshape(self.shape)

    def rows_f32(self, ids: np.ndarray) -> np.ndarray:
        """Dequantize selected rows only (embedding lookup). ids: int (n,) -> (n, cols)."""
        from ..quants import dequantize

        return dequantize(self.data[ids], self.qtype).reshape(len(ids), self.cols)


def row_bytes(qtype: GGMLQuantizationType, cols: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return cols // block * size
