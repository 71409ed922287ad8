"""One row of any supported format: dot with x, or dequantize. Dispatch by ggml type code.

Compiled code cannot hold Python classes, so the format registry is this pair of
``if`` chains keyed by the ``GGMLQuantizationType`` values (frozen as constants).
The chain costs a few compares per row, next to hundreds of cycles of work.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit

from . import floats, kquants, legacy, tuning

F32, F16, BF16 = int(T.F32), int(T.F16), int(T.BF16)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = int(T.Q4_0), int(T.Q4_1), int(T.Q5_0), int(T.Q5_1), int(T.Q8_0)
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = int(T.Q2_K), int(T.Q3_K), int(T.Q4_K), int(T.Q5_K), int(T.Q6_K)

FLOAT_TYPES = frozenset({T.F32, T.F16, T.BF16})
QUANT_TYPES = frozenset({T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K})
KERNEL_TYPES = FLOAT_TYPES | QUANT_TYPES


@njit(cache=True, _nrt=False)
def is_quantized(qt):
    """True for the block formats whose dots use the quantized activation."""
    return qt != F32 and qt != F16 and qt != BF16


# What a product's weights need besides x (activation_kind; a product takes the largest of its weights'):
# nothing, the half activation (F16/BF16 rows under the int8 matvec backend, where floats.calibrate_f16
# found it the faster) or the block one.
# F16/BF16 rows in a product that also has block formats dot with x itself.
NO_ACTIVATION, HALF_ACTIVATION, BLOCK_ACTIVATION = 0, 1, 2


@njit(cache=True, _nrt=False)
def activation_kind(qt):
    if is_quantized(qt):
        return BLOCK_ACTIVATION
    if (qt == F16 or qt == BF16) and tuning.flag(tuning.HALF_X) != 0 and tuning.flag(tuning.F16_X32) == 0:
        return HALF_ACTIVATION
    return NO_ACTIVATION


@njit(cache=True, _nrt=False)
def row_dot(qt, row, x, xq, xm):
    """row (uint8 bytes of one row of type qt) . x; quantized types read (xq, xm) instead of x,
    F16/BF16 rows too when (xq, xm) is the half activation (activation.halve_x)."""
    if qt == Q4_1:
        return legacy.dot_q4_1(row, xq, xm)
    if qt == Q8_0:
        return legacy.dot_q8_0(row, xq, xm)
    if qt == Q4_K:
        return kquants.dot_q4_k(row, xq, xm)
    if qt == Q6_K:
        return kquants.dot_q6_k(row, xq, xm)
    if qt == Q4_0:
        return legacy.dot_q4_0(row, xq, xm)
    if qt == Q5_0:
        return legacy.dot_q5_0(row, xq, xm)
    if qt == Q5_1:
        return legacy.dot_q5_1(row, xq, xm)
    if qt == Q5_K:
        return kquants.dot_q5_k(row, xq, xm)
    if qt == Q3_K:
        return kquants.dot_q3_k(row, xq, xm)
    if qt == Q2_K:
        return kquants.dot_q2_k(row, xq, xm)
    if qt == F32:
        return floats.dot_f32(row, x)
    if qt == F16:
        return floats.dot_f16(row, x, xq, xm)
    if qt == BF16:
        return floats.dot_bf16(row, x, xq, xm)
    return np.float32(np.nan)  # unreachable: the Python entry points validate qt


@njit(cache=True, _nrt=False)
def dot_rows(qt, w, r0, r1, x, xq, xm, out):
    """out[r] = w[r] . x for r in r0..r1. The format is picked once per chunk and each
    loop has its row kernel inlined: a call per row costs as much as a small row's work."""
    if qt == Q4_1:
        for r in range(r0, r1):
            out[r] = legacy.dot_q4_1(w[r], xq, xm)
    elif qt == Q8_0:
        for r in range(r0, r1):
            out[r] = legacy.dot_q8_0(w[r], xq, xm)
    elif qt == Q4_K:
        for r in range(r0, r1):
            out[r] = kquants.dot_q4_k(w[r], xq, xm)
    elif qt == Q6_K:
        for r in range(r0, r1):
            out[r] = kquants.dot_q6_k(w[r], xq, xm)
    elif qt == Q4_0:
        for r in range(r0, r1):
            out[r] = legacy.dot_q4_0(w[r], xq, xm)
    elif qt == Q5_0:
        for r in range(r0, r1):
            out[r] = legacy.dot_q5_0(w[r], xq, xm)
    elif qt == Q5_1:
        for r in range(r0, r1):
            out[r] = legacy.dot_q5_1(w[r], xq, xm)
    elif qt == Q5_K:
        for r in range(r0, r1):
            out[r] = kquants.dot_q5_k(w[r], xq, xm)
    elif qt == Q3_K:
        for r in range(r0, r1):
            out[r] = kquants.dot_q3_k(w[r], xq, xm)
    elif qt == Q2_K:
        for r in range(r0, r1):
            out[r] = kquants.dot_q2_k(w[r], xq, xm)
    elif qt == F32:
        for r in range(r0, r1):
            out[r] = floats.dot_f32(w[r], x)
    elif qt == F16:
        floats.dot_rows_f16(w, r0, r1, x, xq, xm, out)
    elif qt == BF16:
        floats.dot_rows_bf16(w, r0, r1, x, xq, xm, out)


@njit(cache=True, _nrt=False)
def dot_rows_many(qt, w, r0, r1, X, xq, xm, out):
    """out[i, r] = w[r] . X[i] for r in r0..r1 and every i: quantized formats take the vectors
    legacy.MANY at a time, decoding each weight block once for all of them (the rest, and the
    float formats, one at a time with the row still in L1). xq, xm: each vector's activation,
    (n, cols) and (n, 39 nb) for block formats, (n, cols) and (n, 1) for the half one, else (n, 0)."""
    n = X.shape[0]
    full = n - n % legacy.MANY if is_quantized(qt) else 0
    for r in range(r0, r1):
        row = w[r]
        for i in range(0, full, legacy.MANY):
            if qt == Q4_1:
                legacy.dot_many_q4_1(row, xq, xm, i, out, r)
            elif qt == Q8_0:
                legacy.dot_many_q8_0(row, xq, xm, i, out, r)
            elif qt == Q4_K:
                kquants.dot_many_q4_k(row, xq, xm, i, out, r)
            elif qt == Q6_K:
                kquants.dot_many_q6_k(row, xq, xm, i, out, r)
            elif qt == Q4_0:
                legacy.dot_many_q4_0(row, xq, xm, i, out, r)
            elif qt == Q5_0:
                legacy.dot_many_q5_0(row, xq, xm, i, out, r)
            elif qt == Q5_1:
                legacy.dot_many_q5_1(row, xq, xm, i, out, r)
            elif qt == Q5_K:
                kquants.dot_many_q5_k(row, xq, xm, i, out, r)
            elif qt == Q3_K:
                kquants.dot_many_q3_k(row, xq, xm, i, out, r)
            elif qt == Q2_K:
                kquants.dot_many_q2_k(row, xq, xm, i, out, r)
        for i in range(full, n):
            out[i, r] = row_dot(qt, row, X[i], xq[i], xm[i])


@njit(cache=True, _nrt=False)
def row_dequantize(qt, row, dst):
    """dst (f32 (cols,)) = the values of one row of type qt."""
    if qt == Q4_1:
        legacy.deq_row_q4_1(row, dst)
    elif qt == Q8_0:
        legacy.deq_row_q8_0(row, dst)
    elif qt == Q4_K:
        kquants.deq_row_q4_k(row, dst)
    elif qt == Q6_K:
        kquants.deq_row_q6_k(row, dst)
    elif qt == Q4_0:
        legacy.deq_row_q4_0(row, dst)
    elif qt == Q5_0:
        legacy.deq_row_q5_0(row, dst)
    elif qt == Q5_1:
        legacy.deq_row_q5_1(row, dst)
    elif qt == Q5_K:
        kquants.deq_row_q5_k(row, dst)
    elif qt == Q3_K:
        kquants.deq_row_q3_k(row, dst)
    elif qt == Q2_K:
        kquants.deq_row_q2_k(row, dst)
    elif qt == F32:
        floats.deq_row_f32(row, dst)
    elif qt == F16:
        floats.deq_row_f16(row, dst)
    elif qt == BF16:
        floats.deq_row_bf16(row, dst)
