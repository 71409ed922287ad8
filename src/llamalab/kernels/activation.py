"""The activation side of the integer dot products: x (f32) -> 8-bit blocks of 32.

As in llama.cpp, x is quantized once per product and every weight block is then
dotted with it in integers: x[i] ~= xd[i // 32] * xq[i], xq int8 in [-127, 127].
The per-block numbers live in one flat float32 array ``xm`` of length 5 * nb
(nb = cols // 32), in sections so that kernels can load 8 or 16 at once:

    xm[0:nb]        xd     scale of block b (max|x| / 127)
    xm[nb:2nb]      xsum   exact float sum of block b    (the ``+ m`` terms)
    xm[2nb:4nb]     xsq16  sum of xq over each 16 values (the ``- offset`` terms)
    xm[4nb:5nb]     xerr   sum of the rounding errors x - xd * xq of block b

Rounding error: at most xd/2 per value, i.e. 0.4% of the block's largest |x|.
``xerr`` lets formats with unsigned codes (Q4_1, Q5_1, Q4_K, Q5_K: value = d*q + m,
q >= 0) dot with *centred* codes at no cost: d*(q-c).(x-e) + ... keeps the error
term d*(q-c).e instead of d*q.e, about half as large for 4-bit codes.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .simd import _F32, _I8, _I32, _idx, _llvm_fn, _load, _ptr, _splat, _vec

QBLOCK = 32
META_PER_BLOCK = 5
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
    """Quantize x[32b:32b+32] into xq and the five xm entries of block b."""

    def codegen(context, builder, sig, args):
        x, xq, xm, b = args
        off = builder.mul(b, ir.Constant(_I64, QBLOCK))
        v = _load(builder, _ptr(context, builder, sig.args[0], x, off), _vec(_F32, 32))
        fabs = _llvm_fn(builder, "llvm.fabs.v32f32", v.type, [v.type])
        vmax = _llvm_fn(builder, "llvm.vector.reduce.fmax.v32f32", _F32, [v.type])
        amax = builder.call(vmax, [builder.call(fabs, [v])])
        total = _tree_sum(builder, v)
        d = builder.fdiv(amax, ir.Constant(_F32, 127.0))
        pos = builder.fcmp_ordered(">", d, ir.Constant(_F32, 0.0))
        inv = builder.select(pos, builder.fdiv(ir.Constant(_F32, 1.0), d), ir.Constant(_F32, 0.0))
        splat = builder.shuffle_vector(builder.insert_element(ir.Constant(v.type, ir.Undefined), inv, ir.Constant(_I32, 0)),
                                       ir.Constant(v.type, ir.Undefined), _idx([0] * 32))
        rint = _llvm_fn(builder, "llvm.rint.v32f32", v.type, [v.type])
        qf = builder.call(rint, [builder.fmul(v, splat)])  # integers in [-127, 127]
        q32 = builder.fptosi(qf, _vec(_I32, 32))
        builder.store(builder.trunc(q32, _vec(_I8, 32)), _ptr(context, builder, sig.args[1], xq, off, _vec(_I8, 32)), align=1)
        vadd = _llvm_fn(builder, "llvm.vector.reduce.add.v16i32", _I32, [_vec(_I32, 16)])
        s0 = builder.call(vadd, [builder.shuffle_vector(q32, q32, _idx(range(16)))])
        s1 = builder.call(vadd, [builder.shuffle_vector(q32, q32, _idx(range(16, 32)))])
        s0, s1 = builder.sitofp(s0, _F32), builder.sitofp(s1, _F32)
        xma = context.make_array(sig.args[2])(context, builder, xm)
        nb = builder.extract_value(xma.shape, 0)
        nb = builder.udiv(nb, ir.Constant(_I64, META_PER_BLOCK))
        dsplat = builder.shuffle_vector(builder.insert_element(ir.Constant(v.type, ir.Undefined), d, ir.Constant(_I32, 0)),
                                        ir.Constant(v.type, ir.Undefined), _idx([0] * 32))
        err = _tree_sum(builder, builder.fsub(v, builder.fmul(qf, dsplat)))  # summed per value: no cancellation
        for section, k, value in ((0, 0, d), (1, 0, total), (2, 0, s0), (2, 1, s1), (4, 0, err)):
            # index = section * nb + b (sections 0, 1, 4) or 2 * nb + 2 * b + k (xsq16)
            if section == 2:
                idx = builder.add(builder.mul(nb, ir.Constant(_I64, 2)), builder.add(builder.mul(b, ir.Constant(_I64, 2)), ir.Constant(_I64, k)))
            else:
                idx = builder.add(builder.mul(nb, ir.Constant(_I64, section)), b)
            builder.store(value, builder.gep(xma.data, [idx]))
        return context.get_dummy_value()

    return types.none(x, xq, xm, b), codegen


@njit(cache=True, _nrt=False)
def quantize_q8(x, xq, xm):
    """x: f32 (cols,), cols % 32 == 0 -> xq: int8 (cols,), xm: f32 (5 * cols // 32,)."""
    for b in range(x.shape[0] // QBLOCK):
        _quantize_block(x, xq, xm, b)
