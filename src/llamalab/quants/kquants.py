"""K-quants: 256-value super-blocks of 16 or 32-value sub-blocks with quantized sub-scales.

Value order inside a super-block follows ggml's dequantize_row_q*_K; the packing is
described once in ``bits.py``. Quantizers are simple references (``kfit.py``), not
llama.cpp's error-minimizing search.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QK_K, BlockFormat, f16, f16_bytes, fields
from .bits import (
    pack_fields,
    pack_scale_min_k4,
    pack_scales_q3k,
    unpack_fields,
    unpack_scale_min_k4,
    unpack_scales_q3k,
)
from .kfit import fit_affine, fit_symmetric


class Q2_K(BlockFormat, qtype=T.Q2_K):
    # struct { uint8_t scales[16]; uint8_t qs[64]; ggml_half d; ggml_half dmin; }
    # x = d * (scales & 15) * q - dmin * (scales >> 4), 16 sub-blocks of 16, q 2-bit
    block_size, type_size = QK_K, 84

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        scales, qs, d, dmin = fields(blocks, 16, 64, 2, 2)
        dl = (f16(d) * (scales & 15).astype(np.float32)).reshape(n, 16, 1)
        ml = (f16(dmin) * (scales >> 4).astype(np.float32)).reshape(n, 16, 1)
        q = unpack_fields(qs, bits=2, group=32).reshape(n, 16, 16).astype(np.float32)
        return (dl * q - ml).reshape(n, QK_K)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = len(x)
        d, dmin, sc, m, q = fit_affine(x.reshape(n, 16, 16), qmax=3, levels=15, qtype_name="Q2_K")
        qs = pack_fields(q.reshape(n, QK_K), bits=2, group=32)  # (n, 64)
        return np.concatenate([sc | (m << 4), qs, f16_bytes(d), f16_bytes(dmin)], axis=1)


class Q3_K(BlockFormat, qtype=T.Q3_K):
    # struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; ggml_half d; }
    # x = d * (scale - 32) * (q - 4), q = 2 low bits (qs) | 1 high bit (hmask), 16 sub-blocks of 16
    block_size, type_size = QK_K, 110

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        hmask, qs, scales, d = fields(blocks, 32, 64, 12, 2)
        sc = unpack_scales_q3k(scales).astype(np.float32) - np.float32(32)  # (n, 16)
        dl = (f16(d) * sc).reshape(n, 16, 1)
        low = unpack_fields(qs, bits=2, group=32)  # (n, 256)
        high = unpack_fields(hmask, bits=1, group=32)  # (n, 256)
        q = (low | (high << 2)).astype(np.float32) - np.float32(4)  # a clear high bit means "minus 4"
        return (dl * q.reshape(n, 16, 16)).reshape(n, QK_K)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = len(x)
        d, sc, q = fit_symmetric(x.reshape(n, 16, 16), qneg=4, qpos=3, levels=31, qtype_name="Q3_K")
        u = (q.reshape(n, QK_K) + 4).astype(np.uint8)  # 0..7
        hmask = pack_fields(u >> 2, bits=1, group=32)  # (n, 32)
        qs = pack_fields(u & 3, bits=2, group=32)  # (n, 64)
        scales = pack_scales_q3k((sc + 32).astype(np.uint8))  # (n, 12)
        return np.concatenate([hmask, qs, scales, f16_bytes(d)], axis=1)


def _affine_k4(d, dmin, scales, q: np.ndarray) -> np.ndarray:
    """Shared tail of Q4_K/Q5_K: x = d * sc * q - dmin * m over 8 sub-blocks of 32."""
    n = len(q)
    sc, m = unpack_scale_min_k4(scales)  # (n, 8) each
    dl = (f16(d) * sc.astype(np.float32)).reshape(n, 8, 1)
    ml = (f16(dmin) * m.astype(np.float32)).reshape(n, 8, 1)
    return (dl * q.reshape(n, 8, 32).astype(np.float32) - ml).reshape(n, QK_K)


class Q4_K(BlockFormat, qtype=T.Q4_K):
    # struct { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[128]; }
    # x = d * sc * q - dmin * m, 6-bit sc and m per sub-block of 32, q 4-bit
    block_size, type_size = QK_K, 144

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, dmin, scales, qs = fields(blocks, 2, 2, 12, 128)
        return _affine_k4(d, dmin, scales, unpack_fields(qs, bits=4, group=32))

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = len(x)
        d, dmin, sc, m, q = fit_affine(x.reshape(n, 8, 32), qmax=15, levels=63, qtype_name="Q4_K")
        qs = pack_fields(q.reshape(n, QK_K), bits=4, group=32)  # (n, 128)
        return np.concatenate([f16_bytes(d), f16_bytes(dmin), pack_scale_min_k4(sc, m), qs], axis=1)


class Q5_K(BlockFormat, qtype=T.Q5_K):
    # struct { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; }
    # x = d * sc * q - dmin * m, 6-bit sc and m per sub-block of 32, q = 4 low bits | 1 high bit
    block_size, type_size = QK_K, 176

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        d, dmin, scales, qh, qs = fields(blocks, 2, 2, 12, 32, 128)
        q = unpack_fields(qs, bits=4, group=32) | (unpack_fields(qh, bits=1, group=32) << 4)  # (n, 256)
        return _affine_k4(d, dmin, scales, q)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = len(x)
        d, dmin, sc, m, q = fit_affine(x.reshape(n, 8, 32), qmax=31, levels=63, qtype_name="Q5_K")
        q = q.reshape(n, QK_K)
        qh = pack_fields(q >> 4, bits=1, group=32)  # (n, 32)
        qs = pack_fields(q & 15, bits=4, group=32)  # (n, 128)
        return np.concatenate([f16_bytes(d), f16_bytes(dmin), pack_scale_min_k4(sc, m), qh, qs], axis=1)


class Q6_K(BlockFormat, qtype=T.Q6_K):
    # struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; ggml_half d; }
    # x = d * scales * (q - 32), q = 4 low bits (ql) | 2 high bits (qh), 16 sub-blocks of 16
    block_size, type_size = QK_K, 210

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        ql, qh, scales, d = fields(blocks, 128, 64, 16, 2)
        dl = (f16(d) * scales.view(np.int8).astype(np.float32)).reshape(n, 16, 1)
        q = unpack_fields(ql, bits=4, group=64) | (unpack_fields(qh, bits=2, group=32) << 4)  # (n, 256)
        q = q.astype(np.float32) - np.float32(32)
        return (dl * q.reshape(n, 16, 16)).reshape(n, QK_K)

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = len(x)
        d, sc, q = fit_symmetric(x.reshape(n, 16, 16), qneg=32, qpos=31, levels=127, qtype_name="Q6_K")
        u = (q.reshape(n, QK_K) + 32).astype(np.uint8)  # 0..63
        ql = pack_fields(u & 15, bits=4, group=64)  # (n, 128)
        qh = pack_fields(u >> 4, bits=2, group=32)  # (n, 64)
        return np.concatenate([ql, qh, sc.view(np.uint8), f16_bytes(d)], axis=1)
