"""The block-format base class, its registry, and field slicing shared by every format.

A format turns ``(n_blocks, type_size)`` uint8 blocks into ``(n_blocks, block_size)``
float32 values and back. Subclasses register themselves by ``GGMLQuantizationType``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf import GGMLQuantizationType

FORMATS: dict[GGMLQuantizationType, type[BlockFormat]] = {}

QK_K = 256  # super-block size of the K-quants


class BlockFormat:
    """One ggml block format: sizes, a reference dequantizer and a quantizer."""

    qtype: ClassVar[GGMLQuantizationType]
    block_size: ClassVar[int]  # values per block
    type_size: ClassVar[int]  # bytes per block

    def __init_subclass__(cls, qtype: GGMLQuantizationType | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if qtype is None:  # a shared base, not a format
            return
        assert qtype not in FORMATS, f"{qtype.name} registered twice"
        cls.qtype = qtype
        FORMATS[qtype] = cls

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """uint8 (n_blocks, type_size) -> float32 (n_blocks, block_size)."""
        raise NotImplementedError

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        """float32 (n_blocks, block_size) -> uint8 (n_blocks, type_size)."""
        raise NotImplementedError


def fields(blocks: np.ndarray, *sizes: int) -> list[np.ndarray]:
    """Split (n_blocks, type_size) bytes into column views of the given byte widths, in order."""
    assert sum(sizes) == blocks.shape[1], (sizes, blocks.shape)
    edges = np.cumsum(sizes)[:-1]
    return np.split(blocks, edges, axis=1)


def f16(field: np.ndarray) -> np.ndarray:
    """A 2-byte little-endian half field, uint8 (n, 2) -> float32 (n, 1)."""
    return field.view(np.float16).astype(np.float32)


def f16_bytes(values: np.ndarray) -> np.ndarray:
    """float16 (n,) -> uint8 (n, 2), the inverse of ``f16``."""
    return np.ascontiguousarray(values, dtype=np.float16).reshape(-1, 1).view(np.uint8)
