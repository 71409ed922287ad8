"""Row kernels for the 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Layouts (bytes per block; f16 = little-endian half; qs = packed codes):

    Q4_0 (18)  d f16 | qs[16]                 value[j] = d * (nib[j] - 8)
    Q4_1 (20)  d f16 | m f16 | qs[16]         value[j] = d * nib[j] + m
    Q5_0 (22)  d f16 | qh u32 | qs[16]        value[j] = d * (nib[j] | bit_j(qh) << 4) - 16 d
    Q5_1 (24)  d f16 | m f16 | qh u32 | qs[16]   value[j] = d * (...) + m
    Q8_0 (34)  d f16 | qs int8[32]            value[j] = d * qs[j]

    nib[j] = qs[j] & 15 for j < 16, qs[j - 16] >> 4 for j >= 16

``dot_*`` is one row against the quantized activation (``activation.py``), the
whole row loop written in IR (``_row_dot``). Per block: the integer dot starts from a
per-block constant (the ``- offset`` of Q4_0/Q5_0 codes, the centring of Q4_1/Q5_1),
two 256-bit ``vpdpwssd`` add 32 products of int16 codes and activations into 8 int32
lanes, and ``d * xd`` times those lanes goes into a float accumulator (two, alternating,
to hide the FMA latency). Q4_1/Q5_1 load
(d, m) as one pair and multiply it by (xd, xsum): the ``+ m * sum(x)`` term comes
along in the same instruction. ``deq_*`` writes one row as float32 (``gemm.py``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from numba.core import cgutils

from .activation import XDS, XI
from .simd import (
    LONG_ROW_X_BYTES, PREFETCH_BYTES, _F32, _I8, _I16, _I32, _broadcast, _dot_i16, _f16_splat, _fma, _half_to_float, _hsum8, _idx, _load, _prefetch,
    _ptr, _scaled_acc, _splat, _vec, _widen, load_f16,
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


def _store_affine(context, builder, codes_f, d, m, dst_ty, dst, doff):
    """dst[doff:doff+32] = codes_f * d + m."""
    vals = _fma(builder, codes_f, _broadcast(builder, d, 32), _broadcast(builder, m, 32))
    p = _ptr(context, builder, dst_ty, dst, doff, _vec(_F32, 32))
    builder.store(vals, p, align=4)


# ------------------------------------------------------------------ row dots in IR
_I64 = ir.IntType(64)


def _c64(v: int):
    return ir.Constant(_I64, v)


class _Block:
    """What the row loop needs from a format: its block size and one block's step."""

    def __init__(self, nbytes: int, pair_dm: bool, init: int | None, weights):
        self.nbytes = nbytes  # bytes per block
        self.pair_dm = pair_dm  # block starts with (d, m) f16 pair, else with d
        self.init = init  # which int32 start value in xm's XI section (None: 0)
        self.weights = weights  # (builder, block pointer) -> the 32 integer weights, <32 x i16>


def _nibbles16(builder, pqs):
    """16 bytes of nibbles at pqs -> (values 0-15, values 16-31) as <16 x i16> codes 0..15.
    Widened before unpacking: one vpmovzxbw per block and no byte shuffles."""
    q = builder.zext(_load(builder, pqs, _vec(_I8, 16)), _vec(_I16, 16))
    return builder.and_(q, _splat(_I16, 16, 15)), builder.lshr(q, _splat(_I16, 16, 4))


def _q4_weights(qs_off):
    def weights(builder, p):
        lo, hi = _nibbles16(builder, builder.gep(p, [_c64(qs_off)]))
        return builder.shuffle_vector(lo, hi, _idx(range(32)))

    return weights


def _q5_weights(qh_off):
    def weights(builder, p):
        pqh = builder.gep(p, [_c64(qh_off)])
        lo, hi = _nibbles16(builder, builder.gep(pqh, [_c64(4)]))
        qh = _load(builder, pqh, _vec(_I16, 2))  # bits of values 0-15, 16-31
        bit = ir.Constant(_vec(_I16, 16), [1 << j for j in range(16)])
        fifth = []
        for half in range(2):
            mask = builder.and_(builder.shuffle_vector(qh, qh, _idx([half] * 16)), bit)
            fifth.append(builder.select(builder.icmp_unsigned("!=", mask, _splat(_I16, 16, 0)), _splat(_I16, 16, 16),
                                        _splat(_I16, 16, 0)))
        return builder.shuffle_vector(builder.or_(lo, fifth[0]), builder.or_(hi, fifth[1]), _idx(range(32)))

    return weights


def _q8_weights(builder, p):
    return _widen(builder, _load(builder, builder.gep(p, [_c64(2)]), _vec(_I8, 32)), signed=True)


_FORMATS = {
    "q4_0": _Block(18, False, 0, _q4_weights(2)),
    "q4_1": _Block(20, True, 2, _q4_weights(4)),
    "q5_0": _Block(22, False, 1, _q5_weights(2)),
    "q5_1": _Block(24, True, 3, _q5_weights(4)),
    "q8_0": _Block(34, False, None, _q8_weights),
}


def _row_loop(builder, nb, block):
    """block(b, k) for every block b of a row, k = b % 2 naming one of two accumulator sets."""
    with cgutils.for_range(builder, builder.udiv(nb, _c64(2))) as loop:
        b = builder.mul(loop.index, _c64(2))
        block(b, 0)
        block(builder.add(b, _c64(1)), 1)
    with builder.if_then(builder.icmp_unsigned("!=", builder.urem(nb, _c64(2)), _c64(0))):
        block(builder.sub(nb, _c64(1)), 0)


def _emit_rows_dot(context, builder, fmt: _Block, prow, xq_ptrs, xm_ptrs, nb, l1=True):
    """Dots of one row with len(xq_ptrs) activations, each block decoded once: float32 values."""
    nv = len(xq_ptrs)
    pxi = [builder.bitcast(builder.gep(p, [builder.mul(nb, _c64(XI))]), _I32.as_pointer()) for p in xm_ptrs]
    pxds = [builder.gep(p, [builder.mul(nb, _c64(XDS))]) for p in xm_ptrs]
    chains = 2  # two alternating FMA chains hide the latency (and keep sums identical for any nv)
    accs = [[cgutils.alloca_once_value(builder, _splat(_F32, 8, 0.0)) for _ in range(chains)] for _ in range(nv)]
    corr = [[cgutils.alloca_once_value(builder, _splat(_F32, 2, 0.0)) for _ in range(chains)]  # lane 1: sum m * xsum
            for _ in range(nv)]

    def block(b, k):
        p = builder.gep(prow, [builder.mul(b, _c64(fmt.nbytes))])
        _prefetch(builder, p, PREFETCH_BYTES, l1)
        if fmt.pair_dm:
            dm = _half_to_float(builder, _load(builder, p, _vec(_I16, 2)))
        else:
            d = _f16_splat(builder, p, 8)
        w = fmt.weights(builder, p)
        for v in range(nv):
            if fmt.pair_dm:
                prod = builder.fmul(dm, _load(builder, builder.gep(pxds[v], [builder.mul(b, _c64(2))]), _vec(_F32, 2)))
                builder.store(builder.fadd(builder.load(corr[v][k]), prod), corr[v][k])
                s = builder.extract_element(prod, ir.Constant(_I32, 0))
            else:
                s = builder.fmul(d, _broadcast(builder, builder.load(builder.gep(xm_ptrs[v], [b])), 8))
            x = _load(builder, builder.gep(xq_ptrs[v], [builder.mul(b, _c64(32))]), _vec(_I16, 32))
            init = None
            if fmt.init is not None:
                start = builder.load(builder.gep(pxi[v], [builder.add(builder.mul(b, _c64(4)), _c64(fmt.init))]))
                init = builder.insert_element(ir.Constant(_vec(_I32, 8), [0] * 8), start, ir.Constant(_I32, 0))
            acc = accs[v][k % chains]
            builder.store(_scaled_acc(builder, builder.load(acc), _dot_i16(builder, w, x, init), s), acc)

    _row_loop(builder, nb, block)
    results = []
    for v in range(nv):
        total = builder.load(accs[v][0])
        for extra in accs[v][1:]:
            total = builder.fadd(total, builder.load(extra))
        m_sum = builder.fadd(builder.load(corr[v][0]), builder.load(corr[v][1]))
        results.append(builder.fadd(_hsum8(builder, total), builder.extract_element(m_sum, ir.Constant(_I32, 1))))
    return results


def _make_row_dot(fmt: _Block, l1: bool = True):
    @intrinsic
    def row_dot(typingctx, row, xq, xm):
        """row . x for one row of this format (row: uint8 bytes, xq/xm: activation.py)."""

        def codegen(context, builder, sig, args):
            prow = context.make_array(sig.args[0])(context, builder, args[0]).data
            xqa = context.make_array(sig.args[1])(context, builder, args[1])
            pxm = context.make_array(sig.args[2])(context, builder, args[2]).data
            nb = builder.udiv(builder.extract_value(xqa.shape, 0), _c64(32))
            return _emit_rows_dot(context, builder, fmt, prow, [xqa.data], [pxm], nb, l1)[0]

        return types.float32(row, xq, xm), codegen

    return row_dot


MANY = 4  # activations per pass of ``row_dot_many``


def _make_row_dot_many(fmt: _Block):
    @intrinsic
    def row_dot_many(typingctx, row, xq, xm, i0, out, r):
        """out[i0 + v, r] = row . x[i0 + v] for v < MANY, each weight block decoded once.
        xq: int16 (n, cols), xm: float32 (n, 39 * nb), out: float32 (n, rows)."""

        def codegen(context, builder, sig, args):
            row, xq, xm, i0, out, r = args
            prow = context.make_array(sig.args[0])(context, builder, row).data
            xqa = context.make_array(sig.args[1])(context, builder, xq)
            xma = context.make_array(sig.args[2])(context, builder, xm)
            oa = context.make_array(sig.args[4])(context, builder, out)
            nb = builder.udiv(builder.extract_value(xqa.shape, 1), _c64(32))
            xq_ptrs = [builder.gep(xqa.data, [builder.mul(builder.add(i0, _c64(v)), builder.extract_value(xqa.shape, 1))])
                       for v in range(MANY)]
            width = builder.extract_value(xma.shape, 1)
            xm_ptrs = [builder.gep(xma.data, [builder.mul(builder.add(i0, _c64(v)), width)]) for v in range(MANY)]
            values = _emit_rows_dot(context, builder, fmt, prow, xq_ptrs, xm_ptrs, nb)
            rows = builder.extract_value(oa.shape, 1)
            for v, value in enumerate(values):
                builder.store(value, builder.gep(oa.data, [builder.add(builder.mul(builder.add(i0, _c64(v)), rows), r)]))
            return context.get_dummy_value()

        return types.none(row, xq, xm, i0, out, r), codegen

    return row_dot_many


_row_dot_q4_0, _row_dot_q4_1, _row_dot_q5_0, _row_dot_q5_1, _row_dot_q8_0 = (
    _make_row_dot(_FORMATS[k]) for k in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"))
_long_dot_q4_0, _long_dot_q4_1, _long_dot_q5_0, _long_dot_q5_1, _long_dot_q8_0 = (  # weights into L2 only
    _make_row_dot(_FORMATS[k], l1=False) for k in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"))
LONG_COLS = LONG_ROW_X_BYTES // 2  # xq: 2 bytes per value


def by_row_length(short, long, bits: int = 16):
    """A row dot (row, xq, xm) that runs ``long`` (weights prefetched into L2 only) on rows of
    LONG_COLS values or more and ``short`` on the others: the same sums, other prefetch hints.
    The activation read per value is 2 bytes (bits 16) or 1 (bits 8): the threshold is in bytes of x."""
    cols = LONG_COLS * 16 // bits

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot(row, xq, xm):
        if xq.shape[0] >= cols:
            return long(row, xq, xm)
        return short(row, xq, xm)

    return dot


dot_many_q4_0, dot_many_q4_1, dot_many_q5_0, dot_many_q5_1, dot_many_q8_0 = (
    _make_row_dot_many(_FORMATS[k]) for k in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"))


# ------------------------------------------------------------------ dequantizer intrinsics
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
# row: uint8 (row_bytes,); xq: int16 (cols,); xm: f32 (39 * cols // 32,), see activation.py
dot_q4_0, dot_q4_1, dot_q5_0, dot_q5_1, dot_q8_0 = (by_row_length(short, long) for short, long in (
    (_row_dot_q4_0, _long_dot_q4_0), (_row_dot_q4_1, _long_dot_q4_1), (_row_dot_q5_0, _long_dot_q5_0),
    (_row_dot_q5_1, _long_dot_q5_1), (_row_dot_q8_0, _long_dot_q8_0)))


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
