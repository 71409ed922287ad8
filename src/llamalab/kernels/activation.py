"""The activation side of the row dots: x (f32) -> 16-bit blocks of 32, or f16 values.

As in llama.cpp, x is quantized once per product and every weight block is then
dotted with it in integers: x[i] ~= xd[i // 32] * xq[i], xq int16 in [-32767, 32767].
llama.cpp uses 8 bits. 16 bits cost a widening of the weight codes to int16 per 32
values (for ``vpdpwssd``) and make the rounding 258 times smaller: the products agree
with the float reference to ~3e-5 instead of ~0.5%. Over SmolLM2's 30 layers, 8 bits
moved the decode logits by ~4%, and greedy text left the float model's after 5 to 40
tokens; with 16 bits it keeps to it (tests/test_real_model.py, 64 tokens).

The per-block numbers live in one flat float32 array ``xm`` of length 39 * nb
(nb = cols // 32), in sections so that kernels can load 2, 8 or 16 at once:

    xm[0:nb]        xd     scale of block b (max|x| / 32767)
    xm[nb:2nb]      xsum   exact float sum of block b    (the ``+ m`` terms)
    xm[2nb:4nb]     xsq16  sum of xq over each 16 values (the ``- offset`` terms)
    xm[4nb:5nb]     xerr   sum of the rounding errors x - xd * xq of block b
    xm[5nb:7nb]     (xd, xsum) of block b side by side: one load for (d, m) * (xd, xsum)
    xm[7nb:11nb]    int32 bit patterns, per block the start value of the integer dot:
                    -8 sq, -16 sq (the code offsets of Q4_0, Q5_0; sq = sum of xq),
                    round(8 xerr / xd), round(16 xerr / xd) (centring of Q4_1, Q5_1)
    xm[11nb:27nb]   xq's bytes, 64 per block, by pairs of blocks (4q, 4q+2), (4q+1, 4q+3): the
                    pair's 64 low bytes (unsigned), then its 64 high bytes (signed), so
                    xq = 256 * high + low exactly (the byte dots below); the last nb % 4
                    blocks 32 + 32 each. Pairs two apart match Q4_K's and Q5_K's nibbles:
                    the low (high) nibbles of 64 bytes of codes are groups g and g + 2.
    xm[27nb:28nb]   xd8    the block's 8-bit scale (max|x| / 127): the 8-bit activation, x ~= xd8 * x8,
    xm[28nb:29nb]   xerr8  sum of its rounding errors x - xd8 * x8     llama.cpp's rounding (int8 below)
    xm[29nb:31nb]   xsq8   sum of x8 over each 16 values
    xm[31nb:39nb]   x8     32 signed bytes per block, in the pair order of xq's bytes (4q, 4q+2), (4q+1, 4q+3)

int8: the K-quants' decode dots (kquants.py) can take the 8-bit activation instead, one
``vpdpbusd`` per 64 values instead of two, at llama.cpp's precision (~3e-4 of |w||x| per dot
against ~5e-7); ``kernels.set_matvec_backend`` chooses.

Half activation (``halve_x``, for F16 and BF16 rows under the int8 matvec backend, on machines
where floats.calibrate_f16 measures it faster than x in float32): x * s
rounded to f16, s a power of two that puts max|x| in [2^13, 2^14), and xm = (1/s,). llama.cpp
dots F16 rows with x rounded to f16 too, unscaled (an |x| over 65504 becomes inf there). Each
value is off by at most 2^-11 of itself, so a dot by at most 2^-11 sum|w x|. Why: two bytes of
x per weight value instead of four; on the AMD EPYC (Zen 4) machine F16 rows of 2,048 / 4,096 /
8,192 values streamed from memory at 24.0 / 26.4 / 19.1 GB/s against 22.3 / 19.1 / 15.0 with x
in f32 (``LLAMALAB_MATVEC=int8|int kernels_bench.py --only stream --formats F16``, 1 thread,
2026-12-02), and the 1B's F16 decode went from 7.1 to 10.5 tok/s (llama.cpp: 10.8).

Byte dots: the K-quants' codes are unsigned and below 64, so they fit either operand of
``vpdpbusd`` (unsigned x signed bytes, 4 products to an int32 lane). Two of them give
the exact 16-bit dot: codes . high (codes unsigned), shifted left 8, then low . codes
(the low bytes unsigned). That needs no widening of the codes to 16 bits and runs on
two groups of 32 values per 512-bit instruction (kquants.py has the figures).

Rounding error: at most xd/2 per value, i.e. 1.5e-5 of the block's largest |x|.
``xerr`` lets formats with unsigned codes (Q4_1, Q5_1, Q4_K, Q5_K: value = d*q + m,
q >= 0) dot with *centred* codes at no cost: d*(q-c).(x-e) + ... keeps the error
term d*(q-c).e instead of d*q.e, about half as large for 4-bit codes. (Q4_1 and Q5_1
add c * xerr / xd rounded to an integer: what is left is under xd/2, 1/25 of the term.)
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .simd import _F32, _I8, _I16, _I32, _broadcast, _float_to_half, _idx, _llvm_fn, _load, _ptr, _vec

QBLOCK = 32
QMAX = 32767.0  # the largest |xq|
QMAX8 = 127.0  # the largest |x8|
META_PER_BLOCK = 39
XD, XSUM, XSQ16, XERR, XDS, XI, XB = 0, 1, 2, 4, 5, 7, 11  # section starts, in units of nb
XD8, XERR8, XSQ8, XB8 = 27, 28, 29, 31  # the 8-bit activation's
HALF_META = 1  # the half activation's xm: (1/s,); a block activation's has >= 39 entries
_I64 = ir.IntType(64)


def _tree_sum(builder, v):
    """Sum of a float vector's lanes in a fixed pairwise order (deterministic)."""
    n = v.type.count
    while n > 1:
        n //= 2
        v = builder.fadd(builder.shuffle_vector(v, v, _idx(range(n))), builder.shuffle_vector(v, v, _idx(range(n, 2 * n))))
    return builder.extract_element(v, ir.Constant(_I32, 0))


@intrinsic
def _quantize_block(typingctx, x, xq, xm, b):
    """Quantize x[32b:32b+32] into xq and block b's entries of every xm section."""

    def codegen(context, builder, sig, args):
        x, xq, xm, b = args
        off = builder.mul(b, ir.Constant(_I64, QBLOCK))
        v = _load(builder, _ptr(context, builder, sig.args[0], x, off), _vec(_F32, 32))
        fabs = _llvm_fn(builder, "llvm.fabs.v32f32", v.type, [v.type])
        vmax = _llvm_fn(builder, "llvm.vector.reduce.fmax.v32f32", _F32, [v.type])
        amax = builder.call(vmax, [builder.call(fabs, [v])])
        total = _tree_sum(builder, v)
        d = builder.fdiv(amax, ir.Constant(_F32, QMAX))
        pos = builder.fcmp_ordered(">", d, ir.Constant(_F32, 0.0))
        inv = builder.select(pos, builder.fdiv(ir.Constant(_F32, 1.0), d), ir.Constant(_F32, 0.0))
        rint = _llvm_fn(builder, "llvm.rint.v32f32", v.type, [v.type])
        qf = builder.call(rint, [builder.fmul(v, _broadcast(builder, inv, 32))])  # integers in [-32767, 32767]
        q32 = builder.fptosi(qf, _vec(_I32, 32))
        builder.store(builder.trunc(q32, _vec(_I16, 32)), _ptr(context, builder, sig.args[1], xq, off, _vec(_I16, 32)), align=2)
        low = builder.trunc(q32, _vec(_I8, 32))
        high = builder.trunc(builder.ashr(q32, ir.Constant(_vec(_I32, 32), [8] * 32)), _vec(_I8, 32))
        vadd = _llvm_fn(builder, "llvm.vector.reduce.add.v16i32", _I32, [_vec(_I32, 16)])
        si0 = builder.call(vadd, [builder.shuffle_vector(q32, q32, _idx(range(16)))])
        si1 = builder.call(vadd, [builder.shuffle_vector(q32, q32, _idx(range(16, 32)))])
        s0, s1 = builder.sitofp(si0, _F32), builder.sitofp(si1, _F32)
        sq = builder.add(si0, si1)
        xma = context.make_array(sig.args[2])(context, builder, xm)
        nb = builder.extract_value(xma.shape, 0)
        nb = builder.udiv(nb, ir.Constant(_I64, META_PER_BLOCK))
        err = _tree_sum(builder, builder.fsub(v, builder.fmul(qf, _broadcast(builder, d, 32))))  # summed per value: no cancellation
        centre = builder.fdiv(err, builder.select(pos, d, ir.Constant(_F32, 1.0)))  # xerr / xd
        rint1 = _llvm_fn(builder, "llvm.rint.f32", _F32, [_F32])
        ints = (builder.mul(sq, ir.Constant(_I32, -8)), builder.mul(sq, ir.Constant(_I32, -16)),
                builder.fptosi(builder.call(rint1, [builder.fmul(centre, ir.Constant(_F32, 8.0))]), _I32),
                builder.fptosi(builder.call(rint1, [builder.fmul(centre, ir.Constant(_F32, 16.0))]), _I32))
        # the 8-bit activation: its scale, rounding error and sums per 16
        d8 = builder.fdiv(amax, ir.Constant(_F32, QMAX8))
        inv8 = builder.select(pos, builder.fdiv(ir.Constant(_F32, 1.0), d8), ir.Constant(_F32, 0.0))
        q8f = builder.call(rint, [builder.fmul(v, _broadcast(builder, inv8, 32))])  # integers in [-127, 127]
        q8 = builder.fptosi(q8f, _vec(_I32, 32))
        err8 = _tree_sum(builder, builder.fsub(v, builder.fmul(q8f, _broadcast(builder, d8, 32))))
        s8 = [builder.sitofp(builder.call(vadd, [builder.shuffle_vector(q8, q8, _idx(range(h, h + 16)))]), _F32) for h in (0, 16)]
        stores = [(XD, 1, 0, d), (XSUM, 1, 0, total), (XSQ16, 2, 0, s0), (XSQ16, 2, 1, s1), (XERR, 1, 0, err),
                  (XDS, 2, 0, d), (XDS, 2, 1, total)] + [(XI, 4, k, v) for k, v in enumerate(ints)] + [
                  (XD8, 1, 0, d8), (XERR8, 1, 0, err8), (XSQ8, 2, 0, s8[0]), (XSQ8, 2, 1, s8[1])]
        base = builder.bitcast(xma.data, _I32.as_pointer())
        for section, per, k, value in stores:  # xm[section * nb + per * b + k] = value
            idx = builder.add(builder.mul(nb, ir.Constant(_I64, section)),
                              builder.add(builder.mul(b, ir.Constant(_I64, per)), ir.Constant(_I64, k)))
            if value.type == _I32:
                builder.store(value, builder.gep(base, [idx]))
            else:
                builder.store(value, builder.gep(xma.data, [idx]))
        # block b's bytes, for b in a whole quad of blocks (b < 4 (nb // 4)): the quad holds the pairs
        # (4q, 4q + 2) then (4q + 1, 4q + 3); for xq each pair as 64 low bytes then 64 high bytes, for x8 as
        # 64 bytes; the last nb % 4 blocks: 32 low bytes, 32 high bytes each (xq), 32 bytes (x8)
        q, i = builder.udiv(b, ir.Constant(_I64, 4)), builder.urem(b, ir.Constant(_I64, 4))
        in_quad = builder.icmp_unsigned("<", b, builder.mul(builder.udiv(nb, ir.Constant(_I64, 4)), ir.Constant(_I64, 4)))

        def bytes_at(section: int, per: int):
            """Where block b's first 32 bytes go in a byte section of ``per`` floats a block."""
            paired = builder.add(builder.mul(q, ir.Constant(_I64, 4 * per)),  # in floats
                                 builder.add(builder.mul(builder.urem(i, ir.Constant(_I64, 2)), ir.Constant(_I64, 2 * per)),
                                             builder.mul(builder.udiv(i, ir.Constant(_I64, 2)), ir.Constant(_I64, 8))))
            start = builder.add(builder.mul(nb, ir.Constant(_I64, section)),
                                builder.select(in_quad, paired, builder.mul(b, ir.Constant(_I64, per))))
            return builder.gep(xma.data, [start])

        pb = bytes_at(XB, 16)
        gap = builder.select(in_quad, ir.Constant(_I64, 16), ir.Constant(_I64, 8))
        builder.store(low, builder.bitcast(pb, _vec(_I8, 32).as_pointer()), align=4)
        builder.store(high, builder.bitcast(builder.gep(pb, [gap]), _vec(_I8, 32).as_pointer()), align=4)
        builder.store(builder.trunc(q8, _vec(_I8, 32)), builder.bitcast(bytes_at(XB8, 8), _vec(_I8, 32).as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(x, xq, xm, b), codegen


@njit(cache=True, _nrt=False)
def quantize_x(x, xq, xm):
    """x: f32 (cols,), cols % 32 == 0 -> xq: int16 (cols,), xm: f32 (39 * cols // 32,)."""
    for b in range(x.shape[0] // QBLOCK):
        _quantize_block(x, xq, xm, b)


def _make_to_half(n: int):
    @intrinsic
    def to_half(typingctx, x, j, s, xh):
        """xh[j:j+n] = the f16 bit patterns of x[j:j+n] * s (round to nearest even)."""

        def codegen(context, builder, sig, args):
            x, j, s, xh = args
            v = builder.load(_ptr(context, builder, sig.args[0], x, j, _F32 if n == 1 else _vec(_F32, n)), align=4)
            bits = _float_to_half(builder, builder.fmul(v, s if n == 1 else _broadcast(builder, s, n)))
            builder.store(bits, _ptr(context, builder, sig.args[3], xh, j, bits.type), align=2)
            return context.get_dummy_value()

        return types.none(x, j, s, xh), codegen

    return to_half


_to_half16, _to_half1 = _make_to_half(16), _make_to_half(1)


@njit(cache=True, _nrt=False)
def halve_x(x, xh, xm):
    """x: f32 (cols,), any cols -> xh: int16 (cols,) f16 bits of x * s, xm: f32 (1,) = (1/s,).
    NaN in x stays NaN; without a finite nonzero |x|, s = 1."""
    amax = np.float32(0.0)
    for v in x:
        a = abs(v)
        if a > amax and a != np.inf:
            amax = a
    e = math.frexp(amax)[1] if amax > 0 else 14  # amax = f 2^e, f in [0.5, 1)
    e = min(max(e, -112), 128)  # s = 2^(14 - e) and 1/s both normal float32
    s = np.float32(math.ldexp(1.0, 14 - e))
    n = x.shape[0]
    for j in range(0, n - 15, 16):
        _to_half16(x, j, s, xh)
    for j in range(n - n % 16, n):
        _to_half1(x, j, s, xh)
    xm[0] = np.float32(math.ldexp(1.0, e - 14))
