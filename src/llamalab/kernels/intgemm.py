"""Prefill products in integers, for CPUs without AMX: 16-bit weights x 16-bit activations.

A large batch X (n, cols) @ W.T is a real matrix product, so the work must be in the
multiply-adds, not in decoding blocks or converting sums. Here:

  * each weight row is decoded once per call into 16-bit integers with one float scale
    per group of 32 values (``ws``) and, for formats with a min, one float offset per 16
    values (``wm``): value[v] = ws[v // 32] * w16[v] + wm[v // 16]. The K-quants' 6- and
    8-bit sub-scales of 16 values are multiplied into the codes (Q6_K: |(q - 32) sc|
    <= 4096), so no format loses a bit: the weights are exactly those of the reference;
  * each activation row is quantized once per call to 16 bits per group of 32 (as the
    decode path does: activation.py), with the exact float sums of every 16 values;
  * both sides are laid out so that one 512-bit ``vpdpwssd`` lane collects one group:
    a span of 16 groups (512 values) is a 16 x 16 matrix of int16 pairs, transposed
    (``_interleave``). After a span's 16 instructions a register holds the integer dots
    of 16 groups, and one convert and one FMA with the vector ws * xd scale them all;
  * the microkernel (``_micro``) holds a 3 x 6 tile of (weight row, activation row)
    accumulators: per 18 ``vpdpwssd``, 9 loads and 1/16 of a scaling step.

Half-precision weights (F16, BF16) take the 16-bit path too, each group of 32 rounded to
13-bit codes with one float scale (``_dec_half``), against 14-bit activations: 4095 x 16383
x 32 fits an int32 lane. The error (~2e-4 of the output's norm on Gaussian data) is of the
order of F16's own rounding and of llama.cpp's F16 path, which rounds the activations to f16;
BLAS on float32 panels stays exact and ``auto`` times both (without AMX the integers won:
vpdpwssd does 32 multiply-adds per instruction to the float FMA's 16).

Accuracy: the activation rounding only, as in the decode path (<= 1.5e-5 of a group's
largest |x| per value; ~3e-5 of the output's norm on Gaussian data). Q6_K's folded
weights reach 4096, so its activations use 15 bits (sums of 32 products stay in int32).

``matmul_int8`` is the same product with 8-bit activations (``vpdpbusd``: twice the
multiply-adds per instruction, half the bytes), as llama.cpp's CPU kernels round them:
activation codes + 128 as unsigned bytes against signed weight bytes (code - centre), the
128 x sum(w) of each group subtracted after the span. The codes go in unscaled (they fit
a byte); Q2_K, Q3_K and Q6_K, whose scales cover 16 values, sum and scale the two halves of
each group apart (``halves``: a group's first and last four dwords). The error is llama.cpp's
(activations to 1/254 of a group's largest |x|, ~5e-3 of the output's norm on Gaussian data).

Rows are padded to whole spans (zeros): cols = 576 (SmolLM2) does 1024 values of work
per row, so ``gemm`` picks this path or BLAS per weight shape by measured speed.
No repacking at load: the decoded panel of ``TILE_ROWS`` rows lives in each thread's
scratch for the call (24 x cols x 2 bytes), so there is no extra memory and no load time.
Everything around the multiply-adds works a span at a time, 16 groups at once: a group's
largest |x| (activations) or |w| (F16/BF16) comes from one transposing tree of maxima for
the span and one vector division serves it (``_transposed_tree``); per group, a horizontal
reduction and a scalar division had cost more than the rest of the rounding.
"""

from __future__ import annotations

import numba
import numpy as np
from gguf import GGMLQuantizationType as T
from llvmlite import binding as ll
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import floats, kquants, legacy
from .activation import _tree_sum
from .amx import _transpose16
from .simd import FEATURES, HAS_VNNI, _F32, _I16, _I32, _broadcast, claim, _half_to_float, _idx, _llvm_fn, _load, _ptr, _splat, _vec

SPAN = 512  # values per span: 16 groups of 32, one per vpdpwssd lane
R, A = 3, 6  # register tile: weight rows x activation rows (best of alternated runs, 2026-12-01: 3 x 6 was 0-17% faster than 3 x 4; 2 x 6 and 4 x 4 no better)
TILE_ROWS = 8 * R  # weight rows decoded per tile (a multiple of R)
SPAN_BLOCK = 4  # spans per pass over a tile (6 activation rows x 2048 values x 2 bytes = 24 KB: half of L1; 8 was no faster)
INT8_TYPES = frozenset({T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K})
INT_TYPES = INT8_TYPES | {T.F16, T.BF16}  # half-precision weights rounded to 13 bits per group of 32 (below)
FLOAT_CODE_MAX = 4095.0  # |code| of a half-precision weight: 4095 x 16383 x 32 < 2**31, no int32 overflow
_WITH_MINS = frozenset({T.Q4_1, T.Q5_1, T.Q2_K, T.Q4_K, T.Q5_K})
_I64 = ir.IntType(64)
_USE_VNNI512 = HAS_VNNI and "avx512bw" in FEATURES and "avx512vnni" in FEATURES
# LLVM's x86 machine combiner splits a vpdpwssd on a long dependency chain into vpmaddwd +
# vpaddd (CPUs without the "fast-dpwssd" tuning): twice the uops on the two ports that run
# 512-bit integer work; measured here it halved the microkernel's speed. It only reassociates
# integer or fast-math arithmetic, so no other kernel's results change.
ll.set_option("", "-x86-machine-combiner=false")


def _c64(v: int):
    return ir.Constant(_I64, v)


def _data(context, builder, ty, arr):
    return context.make_array(ty)(context, builder, arr).data


# ---------------------------------------------------------------- decoders: one row -> w16, ws, wm
_LEGACY_CENTRE = {"q4_0": 8, "q4_1": 8, "q5_0": 16, "q5_1": 16, "q8_0": 0}


def _legacy_decoder(name: str):
    fmt = legacy._FORMATS[name]
    centre = _LEGACY_CENTRE[name]

    @intrinsic
    def decode(typingctx, row, w16, ws, wm):
        """One row of 32-value blocks: w16[32b + j] = code - centre, ws[b] = d, wm[2b], wm[2b+1] = m + centre d."""

        def codegen(context, builder, sig, args):
            prow = _data(context, builder, sig.args[0], args[0])
            ra = context.make_array(sig.args[0])(context, builder, args[0])
            pw = _data(context, builder, sig.args[1], args[1])
            pws = _data(context, builder, sig.args[2], args[2])
            pwm = _data(context, builder, sig.args[3], args[3])
            nb = builder.udiv(builder.extract_value(ra.shape, 0), _c64(fmt.nbytes))
            with cgutils.for_range(builder, nb) as loop:
                b = loop.index
                p = builder.gep(prow, [builder.mul(b, _c64(fmt.nbytes))])
                w = fmt.weights(builder, p)  # <32 x i16>
                if centre:
                    w = builder.sub(w, _splat(_I16, 32, centre))
                builder.store(w, builder.bitcast(builder.gep(pw, [builder.mul(b, _c64(32))]), w.type.as_pointer()), align=2)
                if fmt.pair_dm:
                    dm = _half_to_float(builder, _load(builder, p, _vec(_I16, 2)))
                    d = builder.extract_element(dm, ir.Constant(_I32, 0))
                    m = builder.fadd(builder.extract_element(dm, ir.Constant(_I32, 1)),
                                     builder.fmul(d, ir.Constant(_F32, float(centre))))
                    pm = builder.gep(pwm, [builder.mul(b, _c64(2))])
                    builder.store(m, pm)
                    builder.store(m, builder.gep(pm, [_c64(1)]))
                else:
                    d = _half_to_float(builder, builder.load(builder.bitcast(p, _I16.as_pointer()), align=1))
                builder.store(d, builder.gep(pws, [b]))
            return context.get_dummy_value()

        return types.none(row, w16, ws, wm), codegen

    return decode


# K-quants: where the super-block's d lives (for the formats whose sub-scales are folded into
# the codes), and the centre subtracted from unsigned codes that have a min.
_K_D = {"q2_k": 80, "q3_k": 108, "q6_k": 208}
_K_CENTRE = {"q2_k": 2, "q4_k": 8, "q5_k": 16}


def _kquant_decoder(name: str, per16: bool = False):
    """per16: the codes unscaled (they fit a byte) and ws one scale per 16 values, for the
    8-bit path of the formats with 16-value sub-blocks; else scales per 16 are folded."""
    decode, nbytes = kquants._DECODERS[name]
    fold = name in _K_D and not per16  # scales per 16 values: integers folded into the codes, ws = d
    centre = _K_CENTRE.get(name, 0)

    @intrinsic
    def decode_row(typingctx, row, w16, ws, wm):
        """One row of 256-value super-blocks into w16 (int16), ws (per 32), wm (per 16)."""

        def codegen(context, builder, sig, args):
            prow = _data(context, builder, sig.args[0], args[0])
            ra = context.make_array(sig.args[0])(context, builder, args[0])
            pw = _data(context, builder, sig.args[1], args[1])
            pws = _data(context, builder, sig.args[2], args[2])
            pwm = _data(context, builder, sig.args[3], args[3])
            nsb = builder.udiv(builder.extract_value(ra.shape, 0), _c64(nbytes))
            v8f, v16f = _vec(_F32, 8), _vec(_F32, 16)
            with cgutils.for_range(builder, nsb) as loop:
                blk = loop.index
                p = builder.gep(prow, [builder.mul(blk, _c64(nbytes))])
                codes, scale, offset, mins, _ = decode(builder, p)
                scale = kquants._scale16(builder, scale)  # (16,) per 16 values
                if fold:
                    d = _half_to_float(builder, builder.load(builder.bitcast(builder.gep(p, [_c64(_K_D[name])]), _I16.as_pointer()), align=1))
                    nonzero = builder.fcmp_ordered("!=", d, ir.Constant(_F32, 0.0))
                    ratio = builder.fdiv(scale, builder.shuffle_vector(
                        builder.insert_element(ir.Constant(v16f, ir.Undefined), d, ir.Constant(_I32, 0)),
                        ir.Constant(v16f, ir.Undefined), _idx([0] * 16)))  # exact: the sub-scale integers
                    isc = builder.select(nonzero, builder.fptosi(ratio, _vec(_I32, 16)), ir.Constant(_vec(_I32, 16), [0] * 16))
                    isc = builder.trunc(isc, _vec(_I16, 16))
                    group_scale = builder.shuffle_vector(
                        builder.insert_element(ir.Constant(v8f, ir.Undefined), d, ir.Constant(_I32, 0)),
                        ir.Constant(v8f, ir.Undefined), _idx([0] * 8))
                elif not per16:
                    group_scale = builder.shuffle_vector(scale, scale, _idx(range(0, 16, 2)))
                pwb = builder.gep(pw, [builder.mul(blk, _c64(256))])
                for g in range(8):
                    w = builder.zext(codes[g], _vec(_I16, 32))
                    sub = offset + centre
                    if sub:
                        w = builder.sub(w, _splat(_I16, 32, sub))
                    if fold:
                        w = builder.mul(w, builder.shuffle_vector(isc, isc, _idx([2 * g] * 16 + [2 * g + 1] * 16)))
                    builder.store(w, builder.bitcast(builder.gep(pwb, [_c64(32 * g)]), w.type.as_pointer()), align=2)
                if per16:
                    builder.store(scale, builder.bitcast(builder.gep(pws, [builder.mul(blk, _c64(16))]), v16f.as_pointer()), align=4)
                else:
                    builder.store(group_scale, builder.bitcast(builder.gep(pws, [builder.mul(blk, _c64(8))]), v8f.as_pointer()), align=4)
                if mins is not None:  # wm per 16 values: centre * scale - min
                    m16 = mins if mins.type.count == 16 else builder.shuffle_vector(mins, mins, _idx([h // 2 for h in range(16)]))
                    wmv = builder.fsub(builder.fmul(scale, _splat(_F32, 16, float(centre))), m16)
                    builder.store(wmv, builder.bitcast(builder.gep(pwm, [builder.mul(blk, _c64(16))]), v16f.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.none(row, w16, ws, wm), codegen

    return decode_row


_dec_q4_0, _dec_q4_1, _dec_q5_0, _dec_q5_1, _dec_q8_0 = (_legacy_decoder(k) for k in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"))
_dec_q2_k, _dec_q3_k, _dec_q4_k, _dec_q5_k, _dec_q6_k = (_kquant_decoder(k) for k in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"))
_dec16_q2_k, _dec16_q3_k, _dec16_q6_k = (_kquant_decoder(k, per16=True) for k in ("q2_k", "q3_k", "q6_k"))

Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = int(T.Q4_0), int(T.Q4_1), int(T.Q5_0), int(T.Q5_1), int(T.Q8_0)
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = int(T.Q2_K), int(T.Q3_K), int(T.Q4_K), int(T.Q5_K), int(T.Q6_K)
F16, BF16 = int(T.F16), int(T.BF16)


def _transposed_tree(builder, vecs, op):
    """16 vectors of 16 -> one whose lane g is vecs[g]'s lanes combined by op, in _tree_sum's
    order: pairs of vectors -> one holding half the lanes of each (15 ops, 30 shuffles)."""
    level = list(vecs)
    for chunk in (8, 4, 2, 1):
        lo = _idx(j for j in range(32) if (j // chunk) % 2 == 0)
        hi = _idx(j for j in range(32) if (j // chunk) % 2 == 1)
        level = [op(builder.shuffle_vector(a, b, lo), builder.shuffle_vector(a, b, hi)) for a, b in zip(level[::2], level[1::2])]
    return level[0]


def _span_absmax(builder, values):
    """<16 x float>: lane g = the largest |v| of group g of a span, values(g, h) its halves.
    On the bits: non-negative floats order as their integers do."""
    v16f, v16i = _vec(_F32, 16), _vec(_I32, 16)
    fabs = _llvm_fn(builder, "llvm.fabs.v16f32", v16f, [v16f])
    umax = _llvm_fn(builder, "llvm.umax.v16i32", v16i, [v16i, v16i])
    level = [builder.call(umax, [builder.bitcast(builder.call(fabs, [values(g, h)]), v16i) for h in (0, 1)])
             for g in range(16)]
    return builder.bitcast(_transposed_tree(builder, level, lambda a, b: builder.call(umax, [a, b])), v16f)


def _store_span_codes(builder, values, inv, offset, pointer):
    """Codes rint(v * inv[g]) (+ offset, a <16 x i32> or None) of each half of each group of a
    span, truncated to pointer(g, h)'s element type and stored there."""
    v16f, v16i = _vec(_F32, 16), _vec(_I32, 16)
    rint = _llvm_fn(builder, "llvm.rint.v16f32", v16f, [v16f])
    for g in range(16):
        scale = builder.shuffle_vector(inv, inv, _idx([g] * 16))
        for h in (0, 1):
            codes = builder.fptosi(builder.call(rint, [builder.fmul(values(g, h), scale)]), v16i)
            if offset is not None:
                codes = builder.add(codes, offset)
            p = pointer(g, h)
            builder.store(builder.trunc(codes, p.type.pointee), p, align=1)


def _natural(builder, first, second):
    """Two <16 x T> vectors of per-group halves (lane g: half 0, resp. 1, of group g) -> their
    32 values in natural order (2 g + h), as the per-16 arrays keep them."""
    return builder.shuffle_vector(first, second, _idx(i // 2 + 16 * (i % 2) for i in range(32)))


def _make_round_span(source: str):
    """The rounding of one span (16 groups of 32) of a row of source values ("f16", "bf16": the
    row's bytes; "f32": floats) to 13-bit codes, all 16 groups at once: the 16 largest |w| are
    gathered into one vector by a tree of 15 max steps, so one vector division serves the span
    (per group, a horizontal reduction and a scalar division cost ~3x the whole rounding)."""
    step = 2 if source != "f32" else 1  # array elements per value

    @intrinsic
    def round_span(typingctx, row, s, w16, ws):
        """Values SPAN s .. SPAN (s + 1) of row -> w16 codes (|code| <= FLOAT_CODE_MAX) at the same
        places, ws[16 s + g] = group g's largest |w| / FLOAT_CODE_MAX."""

        def codegen(context, builder, sig, args):
            row, s, w16, ws = args
            v16f, v16i, v16h = _vec(_F32, 16), _vec(_I32, 16), _vec(_I16, 16)
            base = builder.mul(s, _c64(SPAN))
            prow = _data(context, builder, sig.args[0], row)

            def values(g, h):  # <16 x float>: values 16 h .. of group g
                at = builder.mul(builder.add(base, _c64(32 * g + 16 * h)), _c64(step))
                p = builder.gep(prow, [at])
                if source == "f32":
                    return _load(builder, p, v16f)
                bits = _load(builder, p, v16h)
                if source == "f16":
                    return _half_to_float(builder, bits)
                return builder.bitcast(builder.shl(builder.zext(bits, v16i), _splat(_I32, 16, 16)), v16f)

            amax = _span_absmax(builder, values)
            d = builder.fmul(amax, _splat(_F32, 16, 1.0 / FLOAT_CODE_MAX))
            builder.store(d, _ptr(context, builder, sig.args[3], ws, builder.mul(s, _c64(16)), v16f), align=4)
            inv = builder.select(builder.fcmp_ordered(">", amax, _splat(_F32, 16, 0.0)),
                                 builder.fdiv(_splat(_F32, 16, FLOAT_CODE_MAX), amax), _splat(_F32, 16, 0.0))
            _store_span_codes(builder, values, inv, None, lambda g, h: _ptr(
                context, builder, sig.args[2], w16, builder.add(base, _c64(32 * g + 16 * h)), v16h))
            return context.get_dummy_value()

        return types.none(row, s, w16, ws), codegen

    return round_span


_round_span_f16, _round_span_bf16, _round_span_f32 = (_make_round_span(k) for k in ("f16", "bf16", "f32"))


@njit(cache=True, _nrt=False)
def _dec_half(qt, row, vals, w16, ws):
    """F16 or BF16 row -> codes of 13 bits per group of 32 (|code| <= FLOAT_CODE_MAX), ws = the
    group's largest |w| / FLOAT_CODE_MAX. The rounding error (<= 1.2e-4 of the group's largest
    |w|) is of the order of F16's own and 1/16 of bf16's; llama.cpp's F16 path rounds the
    activations to f16 instead. Whole spans straight from the row's bytes; the last partial
    one through vals ((>= w16's length,) float32 scratch, zero past cols)."""
    cols = row.shape[0] // 2
    full = cols // SPAN
    for s in range(full):
        if qt == F16:
            _round_span_f16(row, s, w16, ws)
        else:
            _round_span_bf16(row, s, w16, ws)
    if full * SPAN < cols:
        tail = row[full * SPAN * 2 :]
        if qt == F16:
            floats.deq_row_f16(tail, vals[full * SPAN : cols])
        else:
            floats.deq_row_bf16(tail, vals[full * SPAN : cols])
        _round_span_f32(vals, full, w16, ws)


@njit(cache=True, _nrt=False)
def decode_row(qt, row, w16, ws, wm):
    """w16 (>= cols,) int16, ws (>= cols / 32,), wm (>= cols / 16,) float32 from one row of type qt."""
    if qt == Q4_K:
        _dec_q4_k(row, w16, ws, wm)
    elif qt == Q6_K:
        _dec_q6_k(row, w16, ws, wm)
    elif qt == Q4_1:
        _dec_q4_1(row, w16, ws, wm)
    elif qt == Q8_0:
        _dec_q8_0(row, w16, ws, wm)
    elif qt == Q4_0:
        _dec_q4_0(row, w16, ws, wm)
    elif qt == Q5_K:
        _dec_q5_k(row, w16, ws, wm)
    elif qt == Q5_0:
        _dec_q5_0(row, w16, ws, wm)
    elif qt == Q5_1:
        _dec_q5_1(row, w16, ws, wm)
    elif qt == Q3_K:
        _dec_q3_k(row, w16, ws, wm)
    elif qt == Q2_K:
        _dec_q2_k(row, w16, ws, wm)


@njit(cache=True, _nrt=False)
def decode_row16(qt, row, w16, ws, wm):
    """For the formats with 16-value sub-blocks (Q2_K, Q3_K, Q6_K): w16 unscaled codes minus
    their centre, ws (>= cols / 16,) one scale per 16 values, wm as decode_row's."""
    if qt == Q6_K:
        _dec16_q6_k(row, w16, ws, wm)
    elif qt == Q3_K:
        _dec16_q3_k(row, w16, ws, wm)
    elif qt == Q2_K:
        _dec16_q2_k(row, w16, ws, wm)


@njit(cache=True, _nrt=False)
def has_16_value_scales(qt):
    return qt == Q2_K or qt == Q3_K or qt == Q6_K


@njit(cache=True, _nrt=False)
def has_mins(qt):
    return qt == Q4_1 or qt == Q5_1 or qt == Q2_K or qt == Q4_K or qt == Q5_K


# ---------------------------------------------------------------- layout: one span -> 16 lanes of groups
@intrinsic
def _interleave(typingctx, src, soff, dst, doff):
    """dst[doff:doff+SPAN] = src[soff:soff+SPAN] (one span of 16 groups of 32 values) laid out
    so that lane l of each 16-dword vector holds group l: 16-bit values, pair k of group l lands
    in dword 16 k + l; 8-bit values, quad k of group l in dword 16 k + l (8 vectors)."""
    quads = src.dtype.bitwidth == 8
    per_vector = 64 if quads else 32  # values per 512-bit vector

    def codegen(context, builder, sig, args):
        src, soff, dst, doff = args
        ps = _ptr(context, builder, sig.args[0], src, soff)
        pd = _ptr(context, builder, sig.args[2], dst, doff)
        v16i = _vec(_I32, 16)
        if quads:  # a group is 8 dwords: transpose 16 x 8 as the top half of a 16 x 16
            v8i = _vec(_I32, 8)
            rows = [_load(builder, builder.gep(ps, [_c64(32 * l)]), v8i) for l in range(16)]
            rows = [builder.shuffle_vector(r, r, _idx(list(range(8)) * 2)) for r in rows]
            cols = _transpose16(builder, rows)[:8]
        else:
            cols = _transpose16(builder, [_load(builder, builder.gep(ps, [_c64(32 * l)]), v16i) for l in range(16)])
        for k, col in enumerate(cols):
            builder.store(col, builder.bitcast(builder.gep(pd, [_c64(per_vector * k)]), v16i.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(src, soff, dst, doff), codegen


# ---------------------------------------------------------------- the microkernel
def _dp(builder, acc, w, x, quads=False):
    """acc (<16 x i32>) + sums of pairs of products of w, x (<16 x i32> holding int16 pairs);
    with quads, of four products of x's unsigned bytes and w's signed ones."""
    v16i = _vec(_I32, 16)
    if quads:
        if _USE_VNNI512:
            return builder.call(_llvm_fn(builder, "llvm.x86.avx512.vpdpbusd.512", v16i, [v16i] * 3), [acc, x, w])
        x32 = builder.zext(builder.bitcast(x, _vec(ir.IntType(8), 64)), _vec(_I32, 64))
        w32 = builder.sext(builder.bitcast(w, _vec(ir.IntType(8), 64)), _vec(_I32, 64))
        prod = builder.mul(w32, x32)
        quad = [builder.shuffle_vector(prod, prod, _idx(range(j, 64, 4))) for j in range(4)]
        return builder.add(acc, builder.add(builder.add(quad[0], quad[1]), builder.add(quad[2], quad[3])))
    if _USE_VNNI512:
        fn = _llvm_fn(builder, "llvm.x86.avx512.vpdpwssd.512", v16i, [v16i, v16i, v16i])
        return builder.call(fn, [acc, w, x])
    # Portable form (LLVM turns it into pmaddwd + add): |products| < 2**28, pairs fit int32.
    w32 = builder.sext(builder.bitcast(w, _vec(_I16, 32)), _vec(_I32, 32))
    x32 = builder.sext(builder.bitcast(x, _vec(_I16, 32)), _vec(_I32, 32))
    prod = builder.mul(w32, x32)
    pairs = builder.add(builder.shuffle_vector(prod, prod, _idx(range(0, 32, 2))),
                        builder.shuffle_vector(prod, prod, _idx(range(1, 32, 2))))
    return builder.add(acc, pairs)


# The microkernel's inner loop runs over the 16 steps of a span. Unrolled (as LLVM does when it
# knows the count) the 8 accumulators' loads get scheduled so badly that half of them spill to
# the stack; so the count is read from memory LLVM cannot
# see into, an external symbol bound to a NumPy buffer (as pool.py does).
_STEPS_SYMBOL = "llamalab_intgemm_steps"
_steps = np.array([16, 8, 4], np.int64)  # steps per span (16-bit, 8-bit) or per half span (8-bit) (lives as long as the process)
ll.add_symbol(_STEPS_SYMBOL, _steps.ctypes.data)


def _steps_symbol(builder):
    g = builder.module.globals.get(_STEPS_SYMBOL)
    if g is None:
        g = ir.GlobalVariable(builder.module, _I64, _STEPS_SYMBOL)
        g.linkage = "external"
    return g


def _half(builder, lo, hi, h: int):
    """From a span's 32 per-16 values in natural order (lo: groups 0-7, hi: 8-15, each as pairs
    of halves), half h of each of the 16 groups: lane l = value 2 l + h."""
    return builder.shuffle_vector(lo, hi, _idx(range(h, 32, 2)))


def _lane_sums(builder, vecs):
    """The lane sums of float vectors of 16 (scalars), in _tree_sum's order (the same bits), 16 at a
    time by a transposing tree: 15 adds for 16 sums where one at a time takes 4 adds and 4 shuffles each."""
    out = []
    for i in range(0, len(vecs) - 15, 16):
        total = _transposed_tree(builder, vecs[i : i + 16], builder.fadd)
        out += [builder.extract_element(total, ir.Constant(_I32, g)) for g in range(16)]
    return out + [_tree_sum(builder, v) for v in vecs[len(out):]]


def _make_micro(with_mins: bool, halves: bool = False):
    @intrinsic
    def micro(typingctx, pw, pws, pwm, wsum, r0, xq, xd, xs, a0, s0, s1, ot):
        """ot[a0 + a, r0 + r] += the dots over spans s0..s1 of panel row r0 + r and activation
        row a0 + a, for r < R, a < A. pw (rows, cols_p) int16 (or int8) interleaved, pws (rows,
        cols_p / 32), pwm (rows, cols_p / 16) float32, wsum (rows, cols_p / 32) int32 (8-bit:
        128 x each group's sum of w); xq, xd, xs the same for activations (8-bit: codes + 128,
        uint8); ot (n_pad, rows) f32. halves (8-bit only): weights scaled per 16 values, so each
        group's two halves (its first and last four dwords) are summed and scaled apart, pws and
        wsum then per 16 values (rows, cols_p / 16) in natural order."""
        quads = pw.dtype.bitwidth == 8
        split = halves and quads

        def codegen(context, builder, sig, args):
            pw, pws, pwm, wsum, r0, xq, xd, xs, a0, s0, s1, ot = args
            arrs = [context.make_array(sig.args[i])(context, builder, args[i]) for i in (0, 1, 2, 5, 6, 7, 11, 3)]
            (wa, wsa, wma, xqa, xda, xsa, oa, wsuma) = arrs
            cols_p = builder.extract_value(wa.shape, 1)
            ng, nh = builder.extract_value(wsa.shape, 1), builder.extract_value(wma.shape, 1)
            nsum = builder.extract_value(wsuma.shape, 1)
            xng, xnh = builder.extract_value(xda.shape, 1), builder.extract_value(xsa.shape, 1)
            xcols = builder.extract_value(xqa.shape, 1)
            v16i, v16f = _vec(_I32, 16), _vec(_F32, 16)
            rows_w = [builder.add(r0, _c64(r)) for r in range(R)]
            rows_x = [builder.add(a0, _c64(a)) for a in range(A)]
            w_base = [builder.bitcast(builder.gep(wa.data, [builder.mul(r, cols_p)]), _I32.as_pointer()) for r in rows_w]
            wsum_base = [builder.gep(wsuma.data, [builder.mul(r, nsum)]) for r in rows_w]
            x_base = [builder.bitcast(builder.gep(xqa.data, [builder.mul(a, xcols)]), _I32.as_pointer()) for a in rows_x]
            ws_base = [builder.gep(wsa.data, [builder.mul(r, ng)]) for r in rows_w]
            xd_base = [builder.gep(xda.data, [builder.mul(a, xng)]) for a in rows_x]
            wm_base = [builder.gep(wma.data, [builder.mul(r, nh)]) for r in rows_w]
            xs_base = [builder.gep(xsa.data, [builder.mul(a, xnh)]) for a in rows_x]
            accs = [[cgutils.alloca_once_value(builder, _splat(_F32, 16, 0.0)) for _ in range(A)] for _ in range(R)]
            idots = [[cgutils.alloca_once(builder, v16i) for _ in range(A)] for _ in range(R)]
            steps = builder.load(builder.gep(_steps_symbol(builder), [_c64(2 if split else int(quads))]))  # hidden from LLVM
            fma = _llvm_fn(builder, "llvm.fma.v16f32", v16f, [v16f] * 3)

            def pair(base, at, vty):  # the 32 per-16 values of span s: (groups 0-7, groups 8-15)
                return _load(builder, builder.gep(base, [at]), vty), _load(builder, builder.gep(base, [builder.add(at, _c64(16))]), vty)

            with cgutils.for_range_slice(builder, s0, s1, _c64(1)) as (s, _):
                dw = builder.mul(s, _c64(SPAN // (4 if quads else 2)))  # dwords per span
                g, h32 = builder.mul(s, _c64(16)), builder.mul(s, _c64(32))
                xdv = [_load(builder, builder.gep(b, [g]), v16f) for b in xd_base]
                if split:
                    ws_pairs = [pair(b, h32, v16f) for b in ws_base]
                    sum_pairs = [pair(b, h32, v16i) for b in wsum_base]
                for part in (0, 1) if split else (0,):
                    for row in idots:
                        for p in row:
                            builder.store(ir.Constant(v16i, [0] * 16), p)
                    start = builder.add(dw, _c64(64 * part))
                    # A real loop over the steps (its trip count hidden from LLVM, which otherwise unrolls
                    # it and schedules the accumulators' loads so badly that it spills half of them).
                    with cgutils.for_range(builder, steps) as kloop:
                        off = builder.add(start, builder.mul(kloop.index, _c64(16)))
                        wv = [_load(builder, builder.gep(b, [off]), v16i) for b in w_base]
                        xv = [_load(builder, builder.gep(b, [off]), v16i) for b in x_base]
                        for r in range(R):
                            for a in range(A):
                                builder.store(_dp(builder, builder.load(idots[r][a]), wv[r], xv[a], quads), idots[r][a])
                    idot = [[builder.load(idots[r][a]) for a in range(A)] for r in range(R)]
                    if split:
                        sums = [_half(builder, *sp, part) for sp in sum_pairs]
                        wsv = [_half(builder, *wp, part) for wp in ws_pairs]
                    else:
                        sums = [_load(builder, builder.gep(b, [g]), v16i) for b in wsum_base] if quads else None
                        wsv = [_load(builder, builder.gep(b, [g]), v16f) for b in ws_base]
                    if quads:  # the codes were offset by 128: take 128 x sum(w) back off
                        idot = [[builder.sub(idot[r][a], sums[r]) for a in range(A)] for r in range(R)]
                    for r in range(R):
                        for a in range(A):
                            acc = builder.call(fma, [builder.sitofp(idot[r][a], v16f), builder.fmul(wsv[r], xdv[a]),
                                                     builder.load(accs[r][a])])
                            builder.store(acc, accs[r][a])
                if with_mins:  # sum over lanes at the end: the min terms need not line up with the groups
                    wmv = [pair(b, h32, v16f) for b in wm_base]
                    xsv = [pair(b, h32, v16f) for b in xs_base]
                    for r in range(R):
                        for a in range(A):
                            acc = builder.call(fma, [wmv[r][0], xsv[a][0], builder.load(accs[r][a])])
                            builder.store(builder.call(fma, [wmv[r][1], xsv[a][1], acc]), accs[r][a])
            orows = builder.extract_value(oa.shape, 1)
            pairs = [(r, a) for r in range(R) for a in range(A)]
            sums = _lane_sums(builder, [builder.load(accs[r][a]) for r, a in pairs])
            for (r, a), total in zip(pairs, sums):
                po = builder.gep(oa.data, [builder.add(builder.mul(rows_x[a], orows), rows_w[r])])
                builder.store(builder.fadd(builder.load(po), total), po)
            return context.get_dummy_value()

        return types.none(pw, pws, pwm, wsum, r0, xq, xd, xs, a0, s0, s1, ot), codegen

    return micro


_micro, _micro_mins = _make_micro(False), _make_micro(True)
_micro_halves, _micro_halves_mins = _make_micro(False, halves=True), _make_micro(True, halves=True)


# ---------------------------------------------------------------- the driver
def _make_quantize_span(code_bits: int):
    @intrinsic
    def quantize_span(typingctx, x, s, qmax, offset, xq, xd, xs):
        """Span s (16 groups of 32) of an activation row x: codes rint(x / d) + offset in xq's
        type at the same places, d = the group's largest |x| / qmax in xd[16 s + g], the exact
        sums of each 16 values in xs[32 s ..] (natural order). All 16 groups at once: their
        maxima and sums by transposing trees, one vector division for the span."""

        def codegen(context, builder, sig, args):
            x, s, qmax, offset, xq, xd, xs = args
            v16f = _vec(_F32, 16)
            vq = _vec(ir.IntType(code_bits), 16)
            base = builder.mul(s, _c64(SPAN))
            px = _ptr(context, builder, sig.args[0], x, base)

            def values(g, h):
                return _load(builder, builder.gep(px, [_c64(32 * g + 16 * h)]), v16f)

            amax = _span_absmax(builder, values)
            d = builder.fdiv(amax, _broadcast(builder, qmax, 16))
            builder.store(d, _ptr(context, builder, sig.args[5], xd, builder.mul(s, _c64(16)), v16f), align=4)
            inv = builder.select(builder.fcmp_ordered(">", d, _splat(_F32, 16, 0.0)),
                                 builder.fdiv(_splat(_F32, 16, 1.0), d), _splat(_F32, 16, 0.0))
            sums = _natural(builder, *(_transposed_tree(builder, [values(g, h) for g in range(16)], builder.fadd)
                                       for h in (0, 1)))
            builder.store(sums, _ptr(context, builder, sig.args[6], xs, builder.mul(s, _c64(32)), sums.type), align=4)
            _store_span_codes(builder, values, inv, _broadcast(builder, offset, 16), lambda g, h: _ptr(
                context, builder, sig.args[4], xq, builder.add(base, _c64(32 * g + 16 * h)), vq))
            return context.get_dummy_value()

        return types.none(x, s, qmax, offset, xq, xd, xs), codegen

    return quantize_span


_quantize_span8, _quantize_span16 = _make_quantize_span(8), _make_quantize_span(16)


@njit(cache=True, _nrt=False)
def _quantize_span(x, s, qmax, offset, xq_row, xd, xs):
    """Span s of x in xq_row's code width (int8/uint8 rows: 8-bit codes, int16: 16-bit)."""
    if xq_row.itemsize == 1:
        _quantize_span8(x, s, qmax, offset, xq_row, xd, xs)
    else:
        _quantize_span16(x, s, qmax, offset, xq_row, xd, xs)


@njit(cache=True, _nrt=False)
def _activation_row(x, qmax, offset, xq_row, xqi, xd, xs, xpad):
    """One activation row: codes (+ offset) per group of 32 in xq_row's type, interleaved into xqi,
    scales xd, exact sums xs per 16, a span at a time (``_quantize_span``). A last partial span
    is copied into xpad ((cols_p,) float32, zero past cols) and quantized from there: the
    groups past cols come out as zero codes, scales and sums."""
    cols = x.shape[0]
    full = cols // SPAN
    for s in range(full):
        _quantize_span(x, s, qmax, offset, xq_row, xd, xs)
    if full * SPAN < cols:
        for j in range(full * SPAN, cols):
            xpad[j] = x[j]
        _quantize_span(xpad, full, qmax, offset, xq_row, xd, xs)
    for s in range(xqi.shape[0] // SPAN):
        _interleave(xq_row, s * SPAN, xqi, s * SPAN)


@njit(cache=True)
def _activation_chunk(X, c, step, qmax, offset, xqi, xd, xs):
    xq_row = np.full(xqi.shape[1], offset, xqi.dtype)  # (cols_p,) zero codes beyond cols
    xpad = np.zeros(xqi.shape[1] if X.shape[1] % SPAN else 0, np.float32)  # (cols_p,) a row's last span, zero padded
    for i in range(c * step, min(X.shape[0], (c + 1) * step)):
        _activation_row(X[i], qmax, offset, xq_row, xqi[i], xd[i], xs[i], xpad)


def _make_span_sums(halves: bool):
    @intrinsic
    def span_sums(typingctx, pw, s, wsum):
        """wsum[16 s + l] = 128 x the sum of group l's codes in span s of one interleaved 8-bit
        row pw (8 vectors: quad k of group l in dword 16 k + l), by vpdpbusd against bytes of
        128: lane l of the sum of the 8 vectors is group l's. halves: the first and last four
        vectors (each group's two halves) apart, wsum[32 s + 2 l + h] (per 16 values)."""

        def codegen(context, builder, sig, args):
            pw, s, wsum = args
            v16i = _vec(_I32, 16)
            base = _ptr(context, builder, sig.args[0], pw, builder.mul(s, _c64(SPAN)))
            x128 = _splat(_I32, 16, -0x7F7F7F80)  # 0x80808080: four unsigned bytes of 128
            zero = ir.Constant(v16i, [0] * 16)
            parts = []
            for h in (0, 1) if halves else (0,):
                acc = zero
                for k in range(4 * h, 4 * h + 4) if halves else range(8):
                    acc = _dp(builder, acc, _load(builder, builder.gep(base, [_c64(64 * k)]), v16i), x128, quads=True)
                parts.append(acc)
            if halves:
                out = _natural(builder, *parts)
                at = builder.mul(s, _c64(32))
            else:
                out, at = parts[0], builder.mul(s, _c64(16))
            builder.store(out, _ptr(context, builder, sig.args[2], wsum, at, out.type), align=4)
            return context.get_dummy_value()

        return types.none(pw, s, wsum), codegen

    return span_sums


_span_sums, _span_sums_halves = _make_span_sums(False), _make_span_sums(True)


@intrinsic
def _narrow_span(typingctx, row16, s, row8):
    """row8 (SPAN,) = span s of row16 as bytes (the codes fit one)."""

    def codegen(context, builder, sig, args):
        row16, s, row8 = args
        vh, vb = _vec(_I16, 32), _vec(ir.IntType(8), 32)
        src = _ptr(context, builder, sig.args[0], row16, builder.mul(s, _c64(SPAN)))
        dst = _ptr(context, builder, sig.args[2], row8, _c64(0))
        for k in range(SPAN // 32):
            w = _load(builder, builder.gep(src, [_c64(32 * k)]), vh)
            builder.store(builder.trunc(w, vb), builder.bitcast(builder.gep(dst, [_c64(32 * k)]), vb.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(row16, s, row8), codegen


@njit(cache=True)
def _tile(qt, w, t, xqi, xd, xs, out, pw, pws, pwm, wsum, row16, row8, vals, ot):
    """Rows t * TILE_ROWS .. of out: decode the tile's weight rows once into pw (TILE_ROWS,
    cols_p) (int16, or int8 for 8-bit activations), then run every activation row. The
    scratch (pws, pwm, wsum, row16, row8, vals, ot) is the calling thread's, reused for
    every tile it claims: allocated per tile, it made an F16 weight's decoding ~1.8x slower."""
    rows = w.shape[0]
    n = out.shape[0]
    n_pad, cols_p = xqi.shape
    spans = cols_p // SPAN
    r0 = t * TILE_ROWS
    nr = min(TILE_ROWS, rows - r0)
    halves = pw.itemsize == 1 and has_16_value_scales(qt)  # 8-bit codes scaled per 16 values
    wide = pw.itemsize == 2
    for j in range(nr):
        if qt == F16 or qt == BF16:
            _dec_half(qt, w[r0 + j], vals, row16, pws[j])
        elif halves:
            decode_row16(qt, w[r0 + j], row16, pws[j], pwm[j])
        else:
            decode_row(qt, w[r0 + j], row16, pws[j], pwm[j])
        for s in range(spans):
            if wide:
                _interleave(row16, s * SPAN, pw[j], s * SPAN)
            else:  # the span's 8-bit codes, laid out, then each group's sum from the layout
                _narrow_span(row16, s, row8)
                _interleave(row8, 0, pw[j], s * SPAN)
                if halves:
                    _span_sums_halves(pw[j], s, wsum[j])
                else:
                    _span_sums(pw[j], s, wsum[j])
    ot[:] = 0.0
    mins = has_mins(qt)
    for s0 in range(0, spans, SPAN_BLOCK):
        s1 = min(spans, s0 + SPAN_BLOCK)
        for a0 in range(0, n_pad, A):
            for rr in range(0, nr, R):
                if halves and mins:
                    _micro_halves_mins(pw, pws, pwm, wsum, rr, xqi, xd, xs, a0, s0, s1, ot)
                elif halves:
                    _micro_halves(pw, pws, pwm, wsum, rr, xqi, xd, xs, a0, s0, s1, ot)
                elif mins:
                    _micro_mins(pw, pws, pwm, wsum, rr, xqi, xd, xs, a0, s0, s1, ot)
                else:
                    _micro(pw, pws, pwm, wsum, rr, xqi, xd, xs, a0, s0, s1, ot)
    for i in range(n):
        for j in range(nr):
            out[i, r0 + j] = ot[i, j]


@njit(cache=True)
def _tiles(qt, w, counter, xqi, xd, xs, out, wbits):
    """One thread's share: tiles claimed one at a time until none is left, on scratch of its own."""
    n_tiles = (w.shape[0] + TILE_ROWS - 1) // TILE_ROWS
    n_pad, cols_p = xqi.shape
    pw = np.zeros((TILE_ROWS, cols_p), wbits)  # (tile rows, cols_p) interleaved
    per = 16 if pw.itemsize == 1 and has_16_value_scales(qt) else 32  # values per weight scale
    pws = np.zeros((TILE_ROWS, cols_p // per), np.float32)
    pwm = np.zeros((TILE_ROWS, cols_p // 16), np.float32)
    wsum = np.zeros((TILE_ROWS, cols_p // per), np.int32)
    row16 = np.zeros(cols_p, np.int16)  # one decoded row, zero past cols
    row8 = np.zeros(SPAN, np.int8)  # one span of it in bytes (8-bit activations)
    vals = np.zeros(cols_p if qt == F16 or qt == BF16 else 0, np.float32)  # zero past cols
    ot = np.zeros((n_pad, TILE_ROWS), np.float32)
    t = claim(counter)
    while t < n_tiles:
        _tile(qt, w, t, xqi, xd, xs, out, pw, pws, pwm, wsum, row16, row8, vals, ot)
        t = claim(counter)


@njit(cache=True, parallel=True)
def _matmul(qt, w, X, out, xqi, qmax, offset, wbits, n_threads):
    """The product with activation codes in xqi's type (n_pad, cols_p), weights in wbits.
    Tiles are claimed from a shared counter, not split evenly up front: a thread whose core is
    taken by another process does less of the work instead of holding the others back.
    (The parallel regions hold only calls: Numba compiles array code inside one slowly.)"""
    n = X.shape[0]
    n_pad, cols_p = xqi.shape
    xd = np.zeros((n_pad, cols_p // 32), np.float32)
    xs = np.zeros((n_pad, cols_p // 16), np.float32)
    step = 8
    for c in prange((n + step - 1) // step):
        _activation_chunk(X, c, step, qmax, offset, xqi, xd, xs)
    counter = np.zeros(1, np.int64)
    # One claimer per thread, the count an argument: a module-level constant would be frozen into the cached
    # machine code (a process that compiled it with NUMBA_NUM_THREADS=1 left every later one on one thread), and
    # numba.get_num_threads() called in here makes the function uncacheable.
    for _ in prange(n_threads):
        _tiles(qt, w, counter, xqi, xd, xs, out, wbits)


def _padded(X: np.ndarray) -> tuple[int, int]:
    n, cols = X.shape
    return (n + A - 1) // A * A, (cols + SPAN - 1) // SPAN * SPAN


def _codes(X: np.ndarray, offset: int, dtype) -> np.ndarray:
    """The activation codes' buffer (n_pad, cols_p): the quantizer writes every row of X whole
    (zero codes past cols), so only the padding rows are filled here, with zero codes (offset)."""
    n_pad, cols_p = _padded(X)
    xqi = np.empty((n_pad, cols_p), dtype)
    xqi[X.shape[0] :] = offset
    return xqi


def matmul_int(qt: int, w: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """out (n, rows) = X (n, cols) @ W.T for a quantized W (rows, row_bytes) of type qt (INT_TYPES),
    16-bit activations."""
    qmax = np.float32(16383.0) if qt in (Q6_K, F16, BF16) else np.float32(32767.0)  # |w16| <= 4096 there
    if X.shape[1] % 32:  # half-precision rows of any length: the activations' last group padded with zeros
        X = np.pad(X, ((0, 0), (0, -X.shape[1] % 32)))
    _matmul(qt, w, X, out, _codes(X, 0, np.int16), qmax, np.int32(0), np.int16, numba.get_num_threads())


def matmul_int8(qt: int, w: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """The same with 8-bit activations (qt in INT8_TYPES)."""
    _matmul(qt, w, X, out, _codes(X, 128, np.uint8), np.float32(127.0), np.int32(128), np.int8,  # codes + 128
            numba.get_num_threads())
