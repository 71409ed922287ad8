"""Row kernels for the 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Layouts (bytes per block; f16 = little-endian half; qs = packed codes):

    Q4_0 (18)  d f16 | qs[16]                 value[j] = d * (nib[j] - 8)
    Q4_1 (20)  d f16 | m f16 | qs[16]         value[j] = d * nib[j] + m
    Q5_0 (22)  d f16 | qh u32 | qs[16]        value[j] = d * (nib[j] | bit_j(qh) << 4) - 16 d
    Q5_1 (24)  d f16 | m f16 | qh u32 | qs[16]   value[j] = d * (...) + m
    Q8_0 (34)  d f16 | qs int8[32]            value[j] = d * qs[j]

    nib[j] = qs[j] & 15 for j < 16, qs[j - 16] >> 4 for j >= 16

``dot_*`` is one row against the quantized activation (``activation.py``):
per block, ``d * xd * idot(codes, xq)`` goes into an 8-lane accumulator; the
``+ m`` term uses the exact float sum of x, the ``- offset`` term the int sum of xq;
Q4_1/Q5_1 add ``c * d * xerr`` so their rounding error is that of centred codes q - c.
``deq_*`` writes one row as float32 (for the BLAS path of ``gemm.py``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .simd import (
    F8, _F32, _I8, _broadcast, _llvm_fn, _dot_u8s8, _fma, _idx, _load, _ptr, _scaled_acc, _splat, _vec, add8, at, hsum8, load_f16, zero8,
)

# No fast-math: the vector work is explicit IR, and scalar code kept in source order makes
# every entry point (matvec, matvec_many, matmul) give bitwise-identical rows.
FASTMATH = False
# _nrt=False: these functions allocate nothing, and without reference counting no
# atomic incref/decref of the array arguments is left in the per-row code.


# ------------------------------------------------------------------ IR unpackers
def _codes_q4(builder, p):
    """16 bytes of nibbles at p -> <32 x i8> codes 0..15 (low nibbles first)."""
    q = _load(builder, p, _vec(_I8, 16))
    lo = builder.and_(q, _splat(_I8, 16, 15))
    hi = builder.lshr(q, _splat(_I8, 16, 4))
    return builder.shuffle_vector(lo, hi, _idx(range(32)))


def _codes_q5(builder, pqh, pqs):
    """qh (4 bytes) + qs (16 bytes) -> <32 x i8> codes 0..31."""
    qh = _load(builder, pqh, _vec(_I8, 4))
    spread = builder.shuffle_vector(qh, qh, _idx([j // 8 for j in range(32)]))  # byte j//8 for value j
    bit = builder.and_(spread, ir.Constant(_vec(_I8, 32), [1 << (j % 8) for j in range(32)]))
    high = builder.select(builder.icmp_unsigned("!=", bit, _splat(_I8, 32, 0)), _splat(_I8, 32, 16), _splat(_I8, 32, 0))
    return builder.or_(_codes_q4(builder, pqs), high)


def _abs_and_signed_x(builder, w, x):
    """For int8 w, x: (|w| as u8, x * sign(w)), so that |w| * x' == w * x."""
    fn = _llvm_fn(builder, "llvm.abs.v32i8", w.type, [w.type, ir.IntType(1)])
    u = builder.call(fn, [w, ir.Constant(ir.IntType(1), 0)])  # abs(-128) = 0x80 = 128 as u8
    neg = builder.icmp_signed("<", w, _splat(_I8, 32, 0))
    return u, builder.select(neg, builder.sub(_splat(_I8, 32, 0), x), x)


def _store_affine(context, builder, codes_f, d, m, dst_ty, dst, doff):
    """dst[doff:doff+32] = codes_f * d + m."""
    vals = _fma(builder, codes_f, _broadcast(builder, d, 32), _broadcast(builder, m, 32))
    p = _ptr(context, builder, dst_ty, dst, doff, _vec(_F32, 32))
    builder.store(vals, p, align=4)


# ------------------------------------------------------------------ intrinsics
@intrinsic
def fma_q4(typingctx, acc, scale, row, off, xq, xoff):
    """acc + scale * idot(nibbles of row[off:off+16], xq[xoff:xoff+32])."""

    def codegen(context, builder, sig, args):
        acc, scale, row, off, xq, xoff = args
        codes = _codes_q4(builder, _ptr(context, builder, sig.args[2], row, off))
        x = _load(builder, _ptr(context, builder, sig.args[4], xq, xoff), _vec(_I8, 32))
        return _scaled_acc(builder, acc, _dot_u8s8(builder, codes, x), scale)

    return F8(acc, scale, row, off, xq, xoff), codegen


@intrinsic
def fma_q5(typingctx, acc, scale, row, off, xq, xoff):
    """acc + scale * idot(5-bit codes of qh = row[off:off+4], qs = row[off+4:off+20], xq[xoff:xoff+32])."""

    def codegen(context, builder, sig, args):
        acc, scale, row, off, xq, xoff = args
        pqh = _ptr(context, builder, sig.args[2], row, off)
        pqs = builder.gep(pqh, [ir.Constant(ir.IntType(64), 4)])
        codes = _codes_q5(builder, pqh, pqs)
        x = _load(builder, _ptr(context, builder, sig.args[4], xq, xoff), _vec(_I8, 32))
        return _scaled_acc(builder, acc, _dot_u8s8(builder, codes, x), scale)

    return F8(acc, scale, row, off, xq, xoff), codegen


@intrinsic
def fma_q8(typingctx, acc, scale, row, off, xq, xoff):
    """acc + scale * idot(int8 row[off:off+32], xq[xoff:xoff+32])."""

    def codegen(context, builder, sig, args):
        acc, scale, row, off, xq, xoff = args
        w = _load(builder, _ptr(context, builder, sig.args[2], row, off), _vec(_I8, 32))
        x = _load(builder, _ptr(context, builder, sig.args[4], xq, xoff), _vec(_I8, 32))
        u, xs = _abs_and_signed_x(builder, w, x)
        return _scaled_acc(builder, acc, _dot_u8s8(builder, u, xs), scale)

    return F8(acc, scale, row, off, xq, xoff), codegen


@intrinsic
def deq_q4(typingctx, row, off, d, m, dst, doff):
    """dst[doff:doff+32] = d * nibbles(row[off:off+16]) + m."""

    def codegen(context, builder, sig, args):
        row, off, d, m, dst, doff = args
        codes = _codes_q4(builder, _ptr(context, builder, sig.args[0], row, off))
        _store_affine(context, builder, builder.uitofp(codes, _vec(_F32, 32)), d, m, sig.args[4], dst, doff)
        return context.get_dummy_value()

    return types.none(row, off, d, m, dst, doff), codegen


@intrinsic
def deq_q5(typingctx, row, off, d, m, dst, doff):
    """dst[doff:doff+32] = d * codes5(qh = row[off:off+4], qs = row[off+4:off+20]) + m."""

    def codegen(context, builder, sig, args):
        row, off, d, m, dst, doff = args
        pqh = _ptr(context, builder, sig.args[0], row, off)
        codes = _codes_q5(builder, pqh, builder.gep(pqh, [ir.Constant(ir.IntType(64), 4)]))
        _store_affine(context, builder, builder.uitofp(codes, _vec(_F32, 32)), d, m, sig.args[4], dst, doff)
        return context.get_dummy_value()

    return types.none(row, off, d, m, dst, doff), codegen


@intrinsic
def deq_q8(typingctx, row, off, d, dst, doff):
    """dst[doff:doff+32] = d * int8 row[off:off+32]."""

    def codegen(context, builder, sig, args):
        row, off, d, dst, doff = args
        w = _load(builder, _ptr(context, builder, sig.args[0], row, off), _vec(_I8, 32))
        zero = ir.Constant(_F32, 0.0)
        _store_affine(context, builder, builder.sitofp(w, _vec(_F32, 32)), d, zero, sig.args[3], dst, doff)
        return context.get_dummy_value()

    return types.none(row, off, d, dst, doff), codegen


# ------------------------------------------------------------------ row dots
# row: uint8 (row_bytes,); xq: int8 (cols,); xm: f32 (5 * nb,), see activation.py.
# Blocks go in pairs into two accumulators: one chain of FMAs would wait on its own
# latency (4 cycles) every block.
@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_q4_0(row, xq, xm):
    nb = xq.shape[0] // 32
    acc0, acc1 = zero8(), zero8()
    corr = np.float32(0.0)
    for b in range(0, nb - 1, 2):
        s0 = load_f16(row, b * 18) * at(xm, b)
        s1 = load_f16(row, b * 18 + 18) * at(xm, b + 1)
        acc0 = fma_q4(acc0, s0, row, b * 18 + 2, xq, b * 32)
        acc1 = fma_q4(acc1, s1, row, b * 18 + 20, xq, b * 32 + 32)
        corr += s0 * (at(xm, 2 * nb + 2 * b) + at(xm, 2 * nb + 2 * b + 1)) + s1 * (at(xm, 2 * nb + 2 * b + 2) + at(xm, 2 * nb + 2 * b + 3))
    if nb % 2:
        b = nb - 1
        s0 = load_f16(row, b * 18) * at(xm, b)
        acc0 = fma_q4(acc0, s0, row, b * 18 + 2, xq, b * 32)
        corr += s0 * (at(xm, 2 * nb + 2 * b) + at(xm, 2 * nb + 2 * b + 1))
    return hsum8(add8(acc0, acc1)) - np.float32(8.0) * corr


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_q4_1(row, xq, xm):
    nb = xq.shape[0] // 32
    acc0, acc1 = zero8(), zero8()
    corr = np.float32(0.0)
    for b in range(0, nb - 1, 2):
        d0 = load_f16(row, b * 20)
        d1 = load_f16(row, b * 20 + 20)
        acc0 = fma_q4(acc0, d0 * at(xm, b), row, b * 20 + 4, xq, b * 32)
        acc1 = fma_q4(acc1, d1 * at(xm, b + 1), row, b * 20 + 24, xq, b * 32 + 32)
        # + m * sum(x), and + 8 d * xerr for centred codes (activation.py)
        corr += (load_f16(row, b * 20 + 2) * at(xm, nb + b) + np.float32(8.0) * d0 * at(xm, 4 * nb + b)) + (
            load_f16(row, b * 20 + 22) * at(xm, nb + b + 1) + np.float32(8.0) * d1 * at(xm, 4 * nb + b + 1))
    if nb % 2:
        b = nb - 1
        d0 = load_f16(row, b * 20)
        acc0 = fma_q4(acc0, d0 * at(xm, b), row, b * 20 + 4, xq, b * 32)
        corr += load_f16(row, b * 20 + 2) * at(xm, nb + b) + np.float32(8.0) * d0 * at(xm, 4 * nb + b)
    return hsum8(add8(acc0, acc1)) + corr


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_q5_0(row, xq, xm):
    nb = xq.shape[0] // 32
    acc0, acc1 = zero8(), zero8()
    corr = np.float32(0.0)
    for b in range(0, nb - 1, 2):
        s0 = load_f16(row, b * 22) * at(xm, b)
        s1 = load_f16(row, b * 22 + 22) * at(xm, b + 1)
        acc0 = fma_q5(acc0, s0, row, b * 22 + 2, xq, b * 32)
        acc1 = fma_q5(acc1, s1, row, b * 22 + 24, xq, b * 32 + 32)
        corr += s0 * (at(xm, 2 * nb + 2 * b) + at(xm, 2 * nb + 2 * b + 1)) + s1 * (at(xm, 2 * nb + 2 * b + 2) + at(xm, 2 * nb + 2 * b + 3))
    if nb % 2:
        b = nb - 1
        s0 = load_f16(row, b * 22) * at(xm, b)
        acc0 = fma_q5(acc0, s0, row, b * 22 + 2, xq, b * 32)
        corr += s0 * (at(xm, 2 * nb + 2 * b) + at(xm, 2 * nb + 2 * b + 1))
    return hsum8(add8(acc0, acc1)) - np.float32(16.0) * corr


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_q5_1(row, xq, xm):
    nb = xq.shape[0] // 32
    acc0, acc1 = zero8(), zero8()
    corr = np.float32(0.0)
    for b in range(0, nb - 1, 2):
        d0 = load_f16(row, b * 24)
        d1 = load_f16(row, b * 24 + 24)
        acc0 = fma_q5(acc0, d0 * at(xm, b), row, b * 24 + 4, xq, b * 32)
        acc1 = fma_q5(acc1, d1 * at(xm, b + 1), row, b * 24 + 28, xq, b * 32 + 32)
        corr += (load_f16(row, b * 24 + 2) * at(xm, nb + b) + np.float32(16.0) * d0 * at(xm, 4 * nb + b)) + (
            load_f16(row, b * 24 + 26) * at(xm, nb + b + 1) + np.float32(16.0) * d1 * at(xm, 4 * nb + b + 1))
    if nb % 2:
        b = nb - 1
        d0 = load_f16(row, b * 24)
        acc0 = fma_q5(acc0, d0 * at(xm, b), row, b * 24 + 4, xq, b * 32)
        corr += load_f16(row, b * 24 + 2) * at(xm, nb + b) + np.float32(16.0) * d0 * at(xm, 4 * nb + b)
    return hsum8(add8(acc0, acc1)) + corr


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_q8_0(row, xq, xm):
    nb = xq.shape[0] // 32
    acc0, acc1 = zero8(), zero8()
    for b in range(0, nb - 1, 2):
        acc0 = fma_q8(acc0, load_f16(row, b * 34) * at(xm, b), row, b * 34 + 2, xq, b * 32)
        acc1 = fma_q8(acc1, load_f16(row, b * 34 + 34) * at(xm, b + 1), row, b * 34 + 36, xq, b * 32 + 32)
    if nb % 2:
        b = nb - 1
        acc0 = fma_q8(acc0, load_f16(row, b * 34) * at(xm, b), row, b * 34 + 2, xq, b * 32)
    return hsum8(add8(acc0, acc1))


# ------------------------------------------------------------------ row dequantizers
@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q4_0(row, dst):
    for b in range(row.shape[0] // 18):
        d = load_f16(row, b * 18)
        deq_q4(row, b * 18 + 2, d, np.float32(-8.0) * d, dst, b * 32)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q4_1(row, dst):
    for b in range(row.shape[0] // 20):
        deq_q4(row, b * 20 + 4, load_f16(row, b * 20), load_f16(row, b * 20 + 2), dst, b * 32)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q5_0(row, dst):
    for b in range(row.shape[0] // 22):
        d = load_f16(row, b * 22)
        deq_q5(row, b * 22 + 2, d, np.float32(-16.0) * d, dst, b * 32)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q5_1(row, dst):
    for b in range(row.shape[0] // 24):
        deq_q5(row, b * 24 + 4, load_f16(row, b * 24), load_f16(row, b * 24 + 2), dst, b * 32)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q8_0(row, dst):
    for b in range(row.shape[0] // 34):
        deq_q8(row, b * 34 + 2, load_f16(row, b * 34), dst, b * 32)
