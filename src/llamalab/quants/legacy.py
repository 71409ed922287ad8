"""ggml's original 32-value block formats. Quantizers delegate to gguf-py (bit-exact with ggml's reference)."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize as gguf_quantize

from .base import BlockFormat, f16, fields
from .bits import unpack_fields


class _GgufQuantized(BlockFormat):  # shared base: quantize with gguf-py
    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        # gguf-py loops over groups of 16 rows: hand it all blocks as one row so it vectorizes
        row = np.ascontiguousarray(x, dtype=np.float32).reshape(1, -1)  # (1, n * block_size)
        return gguf_quantize(row, cls.qtype).reshape(len(x), cls.type_size)  # (n, type_size)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """qs uint8 (n, 16): values 0..15 low nibbles, 16..31 high nibbles -> uint8 (n, 32)."""
    return unpack_fields(qs, bits=4, group=16)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """qh uint8 (n, 4), a little-endian uint32 whose bit i belongs to value i -> uint8 (n, 32)."""
    return unpack_fields(qh, bits=1, group=1)


class Q8_0(_GgufQuantized, qtype=T.Q8_0):
    # struct { ggml_half d; int8_t qs[32]; }  x = d * qs
    block_size, type_size = 32, 34

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, qs = fields(blocks, 2, 32)
        return np.multiply(qs.view(np.int8), f16(d), dtype=np.float32)  # (n, 32), no int8->f32 temporary


class Q4_0(_GgufQuantized, qtype=T.Q4_0):
    # struct { ggml_half d; uint8_t qs[16]; }  x = d * (q - 8), q 4-bit
    block_size, type_size = 32, 18

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, qs = fields(blocks, 2, 16)
        q = _nibbles(qs).astype(np.float32) - np.float32(8)  # (n, 32)
        return f16(d) * q


class Q4_1(_GgufQuantized, qtype=T.Q4_1):
    # struct { ggml_half d; ggml_half m; uint8_t qs[16]; }  x = d * q + m, q 4-bit
    block_size, type_size = 32, 20

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, m, qs = fields(blocks, 2, 2, 16)
        q = _nibbles(qs).astype(np.float32)  # (n, 32)
        return f16(d) * q + f16(m)


class Q5_0(_GgufQuantized, qtype=T.Q5_0):
    # struct { ggml_half d; uint8_t qh[4]; uint8_t qs[16]; }  x = d * (q - 16), q = 4 low bits | 1 high bit
    block_size, type_size = 32, 22

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, qh, qs = fields(blocks, 2, 4, 16)
        q = (_nibbles(qs) | (_high_bits(qh) << 4)).astype(np.float32) - np.float32(16)  # (n, 32)
        return f16(d) * q


class Q5_1(_GgufQuantized, qtype=T.Q5_1):
    # struct { ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[16]; }  x = d * q + m, q 5-bit
    block_size, type_size = 32, 24

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, m, qh, qs = fields(blocks, 2, 2, 4, 16)
        q = (_nibbles(qs) | (_high_bits(qh) << 4)).astype(np.float32)  # (n, 32)
        return f16(d) * q + f16(m)
