"""Unquantized formats: a "block" is one value."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import BlockFormat


class F32(BlockFormat, qtype=T.F32):
    # struct { float x; }
    block_size, type_size = 1, 4

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return blocks.view(np.float32).copy()  # (n, 1)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32).view(np.uint8)  # (n, 4)


class F16(BlockFormat, qtype=T.F16):
    # struct { ggml_half x; }  IEEE binary16
    block_size, type_size = 1, 2

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return blocks.view(np.float16).astype(np.float32)  # (n, 1)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float16).view(np.uint8)  # (n, 2), round to nearest even


class BF16(BlockFormat, qtype=T.BF16):
    # struct { ggml_bf16_t x; }  the top 16 bits of an IEEE binary32
    block_size, type_size = 1, 2

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        bits = blocks.view(np.uint16).astype(np.uint32) << np.uint32(16)  # (n, 1)
        return bits.view(np.float32)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        # ggml_compute_fp32_to_bf16: NaNs keep their top bits and are made quiet, the rest round
        # to nearest even. (Same bytes as gguf-py's BF16 quantizer, which is ~100x slower.)
        u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)  # (n, 1)
        rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16  # no overflow for non-NaN u
        quiet_nan = (u >> 16) | np.uint32(0x40)
        top = np.where((u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000), quiet_nan, rounded)
        return top.astype(np.uint16).view(np.uint8)  # (n, 2)
