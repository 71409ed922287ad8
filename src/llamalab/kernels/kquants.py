"""Row kernels for the 256-value K-quant formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Each format has one IR *decoder* (``_decode_*``) that turns a block into
    codes   8 vectors <32 x i8> of unsigned codes, group g = values 32g..32g+31
    scale   <16 x float>, one scale per 16 values, or <8 x float>, one per 32 (Q4_K, Q5_K)
    offset  integer subtracted from every code (Q3_K: 4, Q6_K: 32), or 0
    mins    <8 x float> per 32 values, or <16 x float> per 16 values, or None
    centre  for unsigned codes with a min: the code midpoint (8 or 16) used to
            shrink the activation rounding error (see activation.py), else 0
so that  value[v] = scale[v // (256 / len(scale))] * (codes[v] - offset) - mins[v // (256 / len(mins))].
The same decoder feeds the dot product (``dot_*``, integer dots against the
quantized activation) and the dequantizer (``deq_row_*``, for the BLAS path).

The dot takes the codes two groups at a time, g and g + 2 (how Q4_K and Q5_K hold them:
the low or high nibbles of 64 bytes), against the activation's bytes in the same pairs
(activation.py), with two ``vpdpbusd``; each pair's 16 lanes are scaled and summed into two
float chains that a row folds once. A block's own numbers (d, dmin, the 6-bit scales) are
unpacked in general registers, off the vector ports. On Zen 4 this read Q4_K rows from memory
at 16.5-17.4 GB/s at 1 thread (kernels_bench.py --only stream) against 11.1 for the 16-bit
dot of widened codes folded per block, which was bound by its instructions.

Against the 8-bit activation (``bits=8``: the ``dot8_*`` kernels; ``dot_*`` and ``dot_many_*`` take
them or the 16-bit ``dot16_*`` as ``tuning.KQUANT_INT8`` says, the int8 matvec backend of products.py) a pair of groups takes one ``vpdpbusd`` instead of two, and its 64 activation bytes
one load instead of two; the rest is the same code. Q4_K rows from memory at 1 thread on the
Zen 4 machine: 18.3-21.7 GB/s against 14.6-17.8 (llvm-mca znver4: 19 cycles a block against 24.6).

Layouts (bytes per block), with ggml's field names:
    Q2_K  (84)  scales[16] (lo4 = scale, hi4 = min) | qs[64] (2-bit) | d f16 | dmin f16
    Q3_K (110)  hmask[32] (3rd bit) | qs[64] (2-bit) | scales[12] (6-bit, -32) | d f16
    Q4_K (144)  d f16 | dmin f16 | scales[12] (6-bit scale+min per 32) | qs[128] (4-bit)
    Q5_K (176)  d f16 | dmin f16 | scales[12] | qh[32] (5th bit) | qs[128] (4-bit)
    Q6_K (210)  ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales int8[16] | d f16
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import tuning
from .activation import XB, XB8, XD, XD8, XERR, XERR8, XSQ8, XSQ16, XSUM
from .legacy import MANY, by_row_length
from .simd import (
    HAS_VNNI, PREFETCH_BYTES, _F32, _I8, _I16, _I32, _broadcast, _dot_i16x32, _dot_u8s8x64, _f16_splat, _fma, _fold8, _half_to_float,
    _hsum8, _idx, _load, _prefetch, _ptr, _splat, _vec, _widen,
)

# No fast-math: the vector work is explicit IR, and scalar code kept in source order makes
# every entry point (matvec, matvec_many, matmul) give bitwise-identical rows.
FASTMATH = False
# _nrt=False: these functions allocate nothing, and without reference counting no
# atomic incref/decref of the array arguments is left in the per-row code.
_I64 = ir.IntType(64)
# The codes are dotted with xq's two bytes (activation.py, "byte dots") where the CPU has
# byte VNNI; elsewhere widened to 16 bits and dotted with xq (pmaddwd).
BYTE_DOTS = HAS_VNNI


def _c64(v: int):
    return ir.Constant(_I64, v)


def _at(builder, base, offset: int):
    return builder.gep(base, [ir.Constant(_I64, offset)])


def _lshr(builder, v, k: int):
    return builder.lshr(v, _splat(_I8, v.type.count, k)) if k else v


def _and(builder, v, mask: int):
    return builder.and_(v, _splat(_I8, v.type.count, mask))


def _shl(builder, v, k: int):
    return builder.shl(v, _splat(_I8, v.type.count, k)) if k else v


def _pairs16(builder, v8):
    """<8 x float> per 32 values -> <16 x float> per 16 values."""
    return builder.shuffle_vector(v8, v8, _idx([i // 2 for i in range(16)]))


def _scale16(builder, scale):
    """A decoder's scale as <16 x float>, one per 16 values."""
    return scale if scale.type.count == 16 else _pairs16(builder, scale)


def _k4_scales(builder, p):
    """Q4_K/Q5_K 12 scale bytes -> <16 x float>: the 8 six-bit scales, then the 8 six-bit mins.

    bytes 0-3: low 6 bits = sc[0..3], top 2 bits = high bits of sc[4..7]
    bytes 4-7: low 6 bits = m[0..3],  top 2 bits = high bits of m[4..7]
    bytes 8-11: low nibble = low bits of sc[4..7], high nibble = low bits of m[4..7]
    Unpacked as three 32-bit words in general registers (as ggml does), which keeps the
    vector units for the dots.
    """
    i32p = builder.bitcast(p, _I32.as_pointer())
    u0, u1, u2 = (builder.load(builder.gep(i32p, [_c64(k)]), align=1) for k in range(3))
    c = lambda v: ir.Constant(_I32, v)  # noqa: E731
    low6, low4, two = c(0x3F3F3F3F), c(0x0F0F0F0F), c(0x03030303)
    top = lambda u: builder.shl(builder.and_(builder.lshr(u, c(6)), two), c(4))  # noqa: E731
    words = [builder.and_(u0, low6), builder.or_(builder.and_(u2, low4), top(u0)),
             builder.and_(u1, low6), builder.or_(builder.and_(builder.lshr(u2, c(4)), low4), top(u1))]
    v = ir.Constant(_vec(_I32, 4), ir.Undefined)
    for k, w in enumerate(words):
        v = builder.insert_element(v, w, ir.Constant(_I32, k))
    return builder.uitofp(builder.bitcast(v, _vec(_I8, 16)), _vec(_F32, 16))


def _dd(builder, p):
    """The two f16 at p (d, dmin) -> <16 x float>: d in lanes 0-7, dmin in lanes 8-15."""
    pair = builder.bitcast(builder.load(builder.bitcast(p, _I32.as_pointer()), align=1), _vec(_I16, 2))
    return builder.shuffle_vector(_half_to_float(builder, pair), ir.Constant(_vec(_F32, 2), ir.Undefined),
                                  _idx([0] * 8 + [1] * 8))


def _decode_q2_k(builder, p):
    sc = _load(builder, p, _vec(_I8, 16))
    dd = _dd(builder, _at(builder, p, 80))  # d in lanes 0-7, dmin in 8-15
    d, dmin = (builder.extract_element(dd, ir.Constant(_I32, k)) for k in (0, 8))
    scale = builder.fmul(builder.uitofp(_and(builder, sc, 15), _vec(_F32, 16)), _broadcast(builder, d, 16))
    mins = builder.fmul(builder.uitofp(_lshr(builder, sc, 4), _vec(_F32, 16)), _broadcast(builder, dmin, 16))
    codes = []
    for n in range(2):
        qs = _load(builder, _at(builder, p, 16 + 32 * n), _vec(_I8, 32))
        codes += [_and(builder, _lshr(builder, qs, 2 * j), 3) for j in range(4)]
    return codes, scale, 0, mins, 0


def _decode_q3_k(builder, p):
    hmask = _load(builder, p, _vec(_I8, 32))
    b = _load(builder, _at(builder, p, 96), _vec(_I8, 12))
    d16 = _f16_splat(builder, _at(builder, p, 108))
    # scale k: low 4 bits from byte k % 8 (low nibble if k < 8), high 2 bits from byte 8 + k % 4 at bit 2 * (k // 4)
    low = builder.shuffle_vector(b, b, _idx([k % 8 for k in range(16)]))
    low = _and(builder, builder.lshr(low, ir.Constant(_vec(_I8, 16), [0] * 8 + [4] * 8)), 15)
    high = builder.shuffle_vector(b, b, _idx([8 + k % 4 for k in range(16)]))
    high = _and(builder, builder.lshr(high, ir.Constant(_vec(_I8, 16), [2 * (k // 4) for k in range(16)])), 3)
    sc = builder.sub(builder.or_(low, _shl(builder, high, 4)), _splat(_I8, 16, 32))
    scale = builder.fmul(builder.sitofp(sc, _vec(_F32, 16)), d16)
    codes = []
    for n in range(2):
        qs = _load(builder, _at(builder, p, 32 + 32 * n), _vec(_I8, 32))
        for j in range(4):
            hbit = _and(builder, _lshr(builder, hmask, 4 * n + j), 1)  # set: value = q, clear: q - 4
            codes.append(builder.or_(_and(builder, _lshr(builder, qs, 2 * j), 3), _shl(builder, hbit, 2)))
    return codes, scale, 4, None, 0


def _decode_q4_k(builder, p):
    sm = builder.fmul(_k4_scales(builder, _at(builder, p, 4)), _dd(builder, p))  # (16,) d sc, dmin m
    scale, mins = (builder.shuffle_vector(sm, sm, _idx(range(k, k + 8))) for k in (0, 8))
    codes = []
    for i in range(4):
        qs = _load(builder, _at(builder, p, 16 + 32 * i), _vec(_I8, 32))
        codes += [_and(builder, qs, 15), _lshr(builder, qs, 4)]
    return codes, scale, 0, mins, 8


def _decode_q5_k(builder, p):
    sm = builder.fmul(_k4_scales(builder, _at(builder, p, 4)), _dd(builder, p))  # (16,) d sc, dmin m
    scale, mins = (builder.shuffle_vector(sm, sm, _idx(range(k, k + 8))) for k in (0, 8))
    qh = _load(builder, _at(builder, p, 16), _vec(_I8, 32))
    codes = []
    for i in range(4):
        qs = _load(builder, _at(builder, p, 48 + 32 * i), _vec(_I8, 32))
        for half, nib in enumerate((_and(builder, qs, 15), _lshr(builder, qs, 4))):
            bit = _and(builder, _lshr(builder, qh, 2 * i + half), 1)
            codes.append(builder.or_(nib, _shl(builder, bit, 4)))
    return codes, scale, 0, mins, 16


def _decode_q6_k(builder, p):
    sc = _load(builder, _at(builder, p, 192), _vec(_I8, 16))
    scale = builder.fmul(builder.sitofp(sc, _vec(_F32, 16)), _f16_splat(builder, _at(builder, p, 208)))
    codes = []
    for n in range(2):
        ql = [_load(builder, _at(builder, p, 64 * n + 32 * h), _vec(_I8, 32)) for h in range(2)]
        qh = _load(builder, _at(builder, p, 128 + 32 * n), _vec(_I8, 32))
        for g in range(4):
            low = ql[g & 1]
            low = _lshr(builder, low, 4) if g >= 2 else _and(builder, low, 15)
            codes.append(builder.or_(low, _shl(builder, _and(builder, _lshr(builder, qh, 2 * g), 3), 4)))
    return codes, scale, 32, None, 0


def _emit_block_dot(builder, decode, nbytes, p, xq_ptrs, xm_ptrs, nb, blk, accs, l1=True, bits=16):
    """accs[v] += (the 256-value block at p) . (block blk of activation v), for every v;
    the block is decoded once for all activations. accs[v]: (chain, chain, corrections),
    pointers to <16 x float>, <16 x float>, <8 x float>, folded once per row.
    bits: 16 (xq, or its two bytes) or 8 (the 8-bit activation x8, activation.py)."""
    for line in range(0, nbytes, 64):
        _prefetch(builder, p, PREFETCH_BYTES + line, l1)
    codes, scale, offset, mins, centre = decode(builder, p)
    if BYTE_DOTS:  # the code pairs, built once for all activations
        pairs = [builder.shuffle_vector(codes[g], codes[g + 2], _idx(range(64))) for g in (0, 1, 4, 5)]
    xd_at, sq_at, err_at = (XD8, XSQ8, XERR8) if bits == 8 else (XD, XSQ16, XERR)
    for pxq, pxm, (c0, c1, cacc) in zip(xq_ptrs, xm_ptrs, accs):
        section = lambda start, per: builder.gep(pxm, [builder.add(builder.mul(nb, _c64(start)), builder.mul(blk, _c64(per)))])  # noqa: E731
        xd8 = _load(builder, section(xd_at, 8), _vec(_F32, 8))
        per = 256 // scale.type.count  # values per scale: 16 or 32
        sx = builder.fmul(scale, xd8 if per == 32 else _pairs16(builder, xd8))  # weight scale * activation scale
        chains = [builder.load(c0), builder.load(c1)]  # two FMA chains: half the latency
        if BYTE_DOTS:  # bytes for groups g, g + 2: lanes 0-7 = group g, 8-15 = group g + 2
            pb = builder.bitcast(section(XB8 if bits == 8 else XB, 64 if bits == 8 else 128), _I8.as_pointer())
            for k, (g, pair) in enumerate(zip((0, 1, 4, 5), pairs)):
                if bits == 8:
                    idot = _dot_u8s8x64(builder, pair, _load(builder, _at(builder, pb, 64 * k), _vec(_I8, 64)))
                else:
                    low, high = (_load(builder, _at(builder, pb, 128 * k + h), _vec(_I8, 64)) for h in (0, 64))
                    idot = _dot_u8s8x64(builder, low, pair, builder.shl(_dot_u8s8x64(builder, pair, high), _splat(_I32, 16, 8)))
                sv = builder.shuffle_vector(sx, sx, _idx([(32 * g + 64 * (i // 8) + 4 * (i % 8)) // per for i in range(16)]))
                chains[k % 2] = _fma(builder, builder.sitofp(idot, _vec(_F32, 16)), sv, chains[k % 2])
        else:
            px = builder.gep(pxq, [builder.mul(blk, _c64(256))])
            for g in range(8):
                xv = _load(builder, _at(builder, px, 32 * g), _vec(_I16, 32))
                idot = _dot_i16x32(builder, _widen(builder, codes[g]), xv)  # lanes 0-7: values 0-15, 8-15: 16-31
                sv = builder.shuffle_vector(sx, sx, _idx([(32 * g + 2 * i) // per for i in range(16)]))
                chains[g % 2] = _fma(builder, builder.sitofp(idot, _vec(_F32, 16)), sv, chains[g % 2])
        builder.store(chains[0], c0)
        builder.store(chains[1], c1)
        acc = builder.load(cacc)
        if offset:  # - offset * scale * (sum of the quantized x), per 16 values
            xsq16 = _load(builder, section(sq_at, 16), _vec(_F32, 16))
            acc = builder.fadd(acc, _fold8(builder, builder.fmul(builder.fmul(sx, xsq16), _splat(_F32, 16, -float(offset)))))
        if mins is not None and mins.type.count == 8:  # - min * (exact float sum of x), per 32 values
            acc = builder.fsub(acc, builder.fmul(mins, _load(builder, section(XSUM, 8), _vec(_F32, 8))))
        if mins is not None and mins.type.count == 16:  # - min * (sum of quantized x), per 16 values
            xsum16 = builder.fmul(_load(builder, section(sq_at, 16), _vec(_F32, 16)), _pairs16(builder, xd8))
            acc = builder.fsub(acc, _fold8(builder, builder.fmul(mins, xsum16)))
        if centre:  # + centre * scale * (sum of x's rounding errors), per 32: centred codes
            scale8 = scale if per == 32 else builder.shuffle_vector(scale, scale, _idx(range(0, 16, 2)))
            acc = _fma(builder, builder.fmul(scale8, _splat(_F32, 8, float(centre))), _load(builder, section(err_at, 8), _vec(_F32, 8)), acc)
        builder.store(acc, cacc)


def _emit_rows_dot(builder, decode, nbytes, prow, xq_ptrs, xm_ptrs, nb, l1=True, bits=16):
    """Dots of one row with each activation (pointers), as float32 values. Without byte VNNI
    the 8-bit variants are the 16-bit ones (set_matvec_backend never selects them there)."""
    bits = bits if BYTE_DOTS else 16
    accs = [(cgutils.alloca_once_value(builder, _splat(_F32, 16, 0.0)), cgutils.alloca_once_value(builder, _splat(_F32, 16, 0.0)),
             cgutils.alloca_once_value(builder, _splat(_F32, 8, 0.0))) for _ in xq_ptrs]
    with cgutils.for_range(builder, builder.udiv(nb, _c64(8))) as loop:
        blk = loop.index
        p = builder.gep(prow, [builder.mul(blk, _c64(nbytes))])
        _emit_block_dot(builder, decode, nbytes, p, xq_ptrs, xm_ptrs, nb, blk, accs, l1, bits)
    return [_hsum8(builder, builder.fadd(_fold8(builder, builder.fadd(builder.load(c0), builder.load(c1))), builder.load(cacc)))
            for c0, c1, cacc in accs]


def _make_row_dot(decode, nbytes: int, l1: bool = True, bits: int = 16):
    @intrinsic
    def row_dot(typingctx, row, xq, xm):
        """row . x for one row of this format (row: uint8 bytes, xq/xm: activation.py), against
        the 16-bit or the 8-bit activation (bits)."""

        def codegen(context, builder, sig, args):
            prow = context.make_array(sig.args[0])(context, builder, args[0]).data
            xqa = context.make_array(sig.args[1])(context, builder, args[1])
            pxm = context.make_array(sig.args[2])(context, builder, args[2]).data
            nb = builder.udiv(builder.extract_value(xqa.shape, 0), _c64(32))
            return _emit_rows_dot(builder, decode, nbytes, prow, [xqa.data], [pxm], nb, l1, bits)[0]

        return types.float32(row, xq, xm), codegen

    return row_dot


def _make_row_dot_many(decode, nbytes: int, bits: int = 16):
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
            stride, width = builder.extract_value(xqa.shape, 1), builder.extract_value(xma.shape, 1)  # elements per row
            vs = [builder.add(i0, _c64(v)) for v in range(MANY)]
            values = _emit_rows_dot(builder, decode, nbytes, prow, [builder.gep(xqa.data, [builder.mul(v, stride)]) for v in vs],
                                    [builder.gep(xma.data, [builder.mul(v, width)]) for v in vs], nb, bits=bits)
            rows = builder.extract_value(oa.shape, 1)
            for v, value in zip(vs, values):
                builder.store(value, builder.gep(oa.data, [builder.add(builder.mul(v, rows), r)]))
            return context.get_dummy_value()

        return types.none(row, xq, xm, i0, out, r), codegen

    return row_dot_many


def _make_block_deq(decode):
    @intrinsic
    def block_deq(typingctx, row, off, dst, doff):
        """dst[doff:doff+256] = the 256 values of the block at row[off:]."""

        def codegen(context, builder, sig, args):
            row, off, dst, doff = args
            codes, scale, offset, mins, centre = decode(builder, _ptr(context, builder, sig.args[0], row, off))
            pd = _ptr(context, builder, sig.args[2], dst, doff)
            for g in range(8):
                vals = builder.uitofp(codes[g], _vec(_F32, 32))
                if offset:
                    vals = builder.fsub(vals, _splat(_F32, 32, float(offset)))
                sv = builder.shuffle_vector(scale, scale, _idx([(32 * g + i) // (256 // scale.type.count) for i in range(32)]))
                vals = builder.fmul(vals, sv)
                if mins is not None:
                    per = 32 if mins.type.count == 8 else 16
                    mv = builder.shuffle_vector(mins, mins, _idx([(32 * g + i) // per for i in range(32)]))
                    vals = builder.fsub(vals, mv)
                builder.store(vals, builder.bitcast(_at(builder, pd, 32 * g), _vec(_F32, 32).as_pointer()), align=4)
            return context.get_dummy_value()

        return types.none(row, off, dst, doff), codegen

    return block_deq


_DECODERS = {"q2_k": (_decode_q2_k, 84), "q3_k": (_decode_q3_k, 110), "q4_k": (_decode_q4_k, 144),
             "q5_k": (_decode_q5_k, 176), "q6_k": (_decode_q6_k, 210)}

_row_dot_q2_k, _row_dot_q3_k, _row_dot_q4_k, _row_dot_q5_k, _row_dot_q6_k = (
    _make_row_dot(*_DECODERS[k]) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
_long_dot_q2_k, _long_dot_q3_k, _long_dot_q4_k, _long_dot_q5_k, _long_dot_q6_k = (  # weights into L2 only
    _make_row_dot(*_DECODERS[k], l1=False) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
_many16_q2_k, _many16_q3_k, _many16_q4_k, _many16_q5_k, _many16_q6_k = (
    _make_row_dot_many(*_DECODERS[k]) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
# against the 8-bit activation (int8, BYTE_DOTS machines only)
_row_dot8_q2_k, _row_dot8_q3_k, _row_dot8_q4_k, _row_dot8_q5_k, _row_dot8_q6_k = (
    _make_row_dot(*_DECODERS[k], bits=8) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
_long_dot8_q2_k, _long_dot8_q3_k, _long_dot8_q4_k, _long_dot8_q5_k, _long_dot8_q6_k = (
    _make_row_dot(*_DECODERS[k], l1=False, bits=8) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
_many8_q2_k, _many8_q3_k, _many8_q4_k, _many8_q5_k, _many8_q6_k = (
    _make_row_dot_many(*_DECODERS[k], bits=8) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
block_deq_q2_k, block_deq_q3_k, block_deq_q4_k, block_deq_q5_k, block_deq_q6_k = (
    _make_block_deq(_DECODERS[k][0]) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))


# ------------------------------------------------------------------ row dots and dequantizers
# row: uint8 (row_bytes,); xq: int16 (cols,); xm: f32 (39 * cols // 32,); dst: f32 (cols,)
dot16_q2_k, dot16_q3_k, dot16_q4_k, dot16_q5_k, dot16_q6_k = (by_row_length(short, long) for short, long in (
    (_row_dot_q2_k, _long_dot_q2_k), (_row_dot_q3_k, _long_dot_q3_k), (_row_dot_q4_k, _long_dot_q4_k),
    (_row_dot_q5_k, _long_dot_q5_k), (_row_dot_q6_k, _long_dot_q6_k)))
dot8_q2_k, dot8_q3_k, dot8_q4_k, dot8_q5_k, dot8_q6_k = (by_row_length(short, long, 8) for short, long in (
    (_row_dot8_q2_k, _long_dot8_q2_k), (_row_dot8_q3_k, _long_dot8_q3_k), (_row_dot8_q4_k, _long_dot8_q4_k),
    (_row_dot8_q5_k, _long_dot8_q5_k), (_row_dot8_q6_k, _long_dot8_q6_k)))


def _by_activation(for16, for8):
    """A row dot (row, xq, xm) against the activation ``tuning.KQUANT_INT8`` names, read on every
    call (a load and a well-predicted branch per row, next to hundreds of cycles of work)."""

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot(row, xq, xm):
        if tuning.flag(tuning.KQUANT_INT8) != 0:
            return for8(row, xq, xm)
        return for16(row, xq, xm)

    return dot


def _many_by_activation(for16, for8):
    """``row_dot_many`` (row, xq, xm, i0, out, r) against the activation ``tuning.KQUANT_INT8`` names."""

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot_many(row, xq, xm, i0, out, r):
        if tuning.flag(tuning.KQUANT_INT8) != 0:
            for8(row, xq, xm, i0, out, r)
        else:
            for16(row, xq, xm, i0, out, r)

    return dot_many


dot_q2_k, dot_q3_k, dot_q4_k, dot_q5_k, dot_q6_k = (_by_activation(a, b) for a, b in (
    (dot16_q2_k, dot8_q2_k), (dot16_q3_k, dot8_q3_k), (dot16_q4_k, dot8_q4_k), (dot16_q5_k, dot8_q5_k), (dot16_q6_k, dot8_q6_k)))
dot_many_q2_k, dot_many_q3_k, dot_many_q4_k, dot_many_q5_k, dot_many_q6_k = (_many_by_activation(a, b) for a, b in (
    (_many16_q2_k, _many8_q2_k), (_many16_q3_k, _many8_q3_k), (_many16_q4_k, _many8_q4_k), (_many16_q5_k, _many8_q5_k),
    (_many16_q6_k, _many8_q6_k)))


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q2_k(row, dst):
    for blk in range(dst.shape[0] // 256):
        block_deq_q2_k(row, blk * 84, dst, blk * 256)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q3_k(row, dst):
    for blk in range(dst.shape[0] // 256):
        block_deq_q3_k(row, blk * 110, dst, blk * 256)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q4_k(row, dst):
    for blk in range(dst.shape[0] // 256):
        block_deq_q4_k(row, blk * 144, dst, blk * 256)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q5_k(row, dst):
    for blk in range(dst.shape[0] // 256):
        block_deq_q5_k(row, blk * 176, dst, blk * 256)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_q6_k(row, dst):
    for blk in range(dst.shape[0] // 256):
        block_deq_q6_k(row, blk * 210, dst, blk * 256)
