"""Row kernels for the float formats F32, F16 and BF16 (block size 1, any column count).

The row is read as raw bytes and converted in registers (16 values per step:
``vcvtph2ps`` for f16, a 16-bit shift for bf16); x stays float32, so these dots are
exact up to float32 summation order. A scalar loop handles the last cols % 16.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .simd import (
    PREFETCH_BYTES, F16, _F32, _I16, _I32, _fma, _half_to_float, _idx, _load, _prefetch, _ptr, _splat, _vec, load_f16,
)

# No fast-math: the vector work is explicit IR, and scalar code kept in source order makes
# every entry point (matvec, matvec_many, matmul) give bitwise-identical rows.
FASTMATH = False
# _nrt=False: these functions allocate nothing, and without reference counting no
# atomic incref/decref of the array arguments is left in the per-row code.
_F32_BYTES, _F16_BYTES = 4, 2


def _values16(builder, p, kind: str):
    """16 weights at byte pointer p -> <16 x float>."""
    if kind == "f32":
        return _load(builder, p, _vec(_F32, 16))
    bits = _load(builder, p, _vec(_I16, 16))
    if kind == "f16":
        return _half_to_float(builder, bits)
    wide = builder.shl(builder.zext(bits, _vec(_I32, 16)), _splat(_I32, 16, 16))  # bf16 = top half of an f32
    return builder.bitcast(wide, _vec(_F32, 16))


def _make_fma16(kind: str):
    @intrinsic
    def fma16(typingctx, acc, row, off, x, xoff):
        def codegen(context, builder, sig, args):
            acc, row, off, x, xoff = args
            p = _ptr(context, builder, sig.args[1], row, off)
            _prefetch(builder, p, PREFETCH_BYTES)
            w = _values16(builder, p, kind)
            xv = _load(builder, _ptr(context, builder, sig.args[3], x, xoff), _vec(_F32, 16))
            return _fma(builder, w, xv, acc)

        return F16(acc, row, off, x, xoff), codegen

    return fma16


def _make_deq16(kind: str):
    @intrinsic
    def deq16(typingctx, row, off, dst, doff):
        def codegen(context, builder, sig, args):
            row, off, dst, doff = args
            w = _values16(builder, _ptr(context, builder, sig.args[0], row, off), kind)
            builder.store(w, _ptr(context, builder, sig.args[2], dst, doff, _vec(_F32, 16)), align=4)
            return context.get_dummy_value()

        return types.none(row, off, dst, doff), codegen

    return deq16


fma16_f32, fma16_f16, fma16_bf16 = (_make_fma16(k) for k in ("f32", "f16", "bf16"))
deq16_f32, deq16_f16, deq16_bf16 = (_make_deq16(k) for k in ("f32", "f16", "bf16"))


@intrinsic
def zero16(typingctx):
    """A <16 x float> of zeros."""

    def codegen(context, builder, sig, args):
        return _splat(_F32, 16, 0.0)

    return F16(), codegen


@intrinsic
def add16(typingctx, a, b):
    """Lane-wise a + b of two <16 x float>."""

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return F16(a, b), codegen


@intrinsic
def hsum16(typingctx, v):
    """Sum of the 16 lanes of a <16 x float>."""

    def codegen(context, builder, sig, args):
        (s,) = args
        for n in (8, 4, 2):
            s = builder.fadd(builder.shuffle_vector(s, s, _idx(range(n))), builder.shuffle_vector(s, s, _idx(range(n, 2 * n))))
        return builder.fadd(builder.extract_element(s, ir.Constant(_I32, 0)), builder.extract_element(s, ir.Constant(_I32, 1)))

    return types.float32(v), codegen


@intrinsic
def load_f32(typingctx, arr, off):
    """The float32 at byte ``off`` of a uint8 array."""

    def codegen(context, builder, sig, args):
        return builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], _F32), align=1)

    return types.float32(arr, off), codegen


@intrinsic
def load_bf16(typingctx, arr, off):
    """The bf16 at byte ``off`` of a uint8 array, as float32."""

    def codegen(context, builder, sig, args):
        bits = builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], _I16), align=1)
        return builder.bitcast(builder.shl(builder.zext(bits, _I32), ir.Constant(_I32, 16)), _F32)

    return types.float32(arr, off), codegen


# ------------------------------------------------------------------ row dots (x: f32 (cols,))
@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_f32(row, x):
    n = x.shape[0]
    a0, a1, a2, a3 = zero16(), zero16(), zero16(), zero16()  # four FMA chains hide the FMA latency
    for j in range(0, n - 63, 64):
        a0 = fma16_f32(a0, row, j * _F32_BYTES, x, j)
        a1 = fma16_f32(a1, row, (j + 16) * _F32_BYTES, x, j + 16)
        a2 = fma16_f32(a2, row, (j + 32) * _F32_BYTES, x, j + 32)
        a3 = fma16_f32(a3, row, (j + 48) * _F32_BYTES, x, j + 48)
    for j in range(n - n % 64, n - 15, 16):
        a0 = fma16_f32(a0, row, j * _F32_BYTES, x, j)
    total = hsum16(add16(add16(a0, a1), add16(a2, a3)))
    for j in range(n - n % 16, n):
        total += load_f32(row, j * _F32_BYTES) * x[j]
    return total


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_f16(row, x):
    n = x.shape[0]
    a0, a1, a2, a3 = zero16(), zero16(), zero16(), zero16()  # four FMA chains hide the FMA latency
    for j in range(0, n - 63, 64):
        a0 = fma16_f16(a0, row, j * _F16_BYTES, x, j)
        a1 = fma16_f16(a1, row, (j + 16) * _F16_BYTES, x, j + 16)
        a2 = fma16_f16(a2, row, (j + 32) * _F16_BYTES, x, j + 32)
        a3 = fma16_f16(a3, row, (j + 48) * _F16_BYTES, x, j + 48)
    for j in range(n - n % 64, n - 15, 16):
        a0 = fma16_f16(a0, row, j * _F16_BYTES, x, j)
    total = hsum16(add16(add16(a0, a1), add16(a2, a3)))
    for j in range(n - n % 16, n):
        total += load_f16(row, j * _F16_BYTES) * x[j]
    return total


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_bf16(row, x):
    n = x.shape[0]
    a0, a1, a2, a3 = zero16(), zero16(), zero16(), zero16()  # four FMA chains hide the FMA latency
    for j in range(0, n - 63, 64):
        a0 = fma16_bf16(a0, row, j * _F16_BYTES, x, j)
        a1 = fma16_bf16(a1, row, (j + 16) * _F16_BYTES, x, j + 16)
        a2 = fma16_bf16(a2, row, (j + 32) * _F16_BYTES, x, j + 32)
        a3 = fma16_bf16(a3, row, (j + 48) * _F16_BYTES, x, j + 48)
    for j in range(n - n % 64, n - 15, 16):
        a0 = fma16_bf16(a0, row, j * _F16_BYTES, x, j)
    total = hsum16(add16(add16(a0, a1), add16(a2, a3)))
    for j in range(n - n % 16, n):
        total += load_bf16(row, j * _F16_BYTES) * x[j]
    return total


# ------------------------------------------------------------------ row dequantizers (dst: f32 (cols,))
@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_f32(row, dst):
    n = dst.shape[0]
    for j in range(0, n - 15, 16):
        deq16_f32(row, j * _F32_BYTES, dst, j)
    for j in range(n - n % 16, n):
        dst[j] = load_f32(row, j * _F32_BYTES)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_f16(row, dst):
    n = dst.shape[0]
    for j in range(0, n - 15, 16):
        deq16_f16(row, j * _F16_BYTES, dst, j)
    for j in range(n - n % 16, n):
        dst[j] = load_f16(row, j * _F16_BYTES)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def deq_row_bf16(row, dst):
    n = dst.shape[0]
    for j in range(0, n - 15, 16):
        deq16_bf16(row, j * _F16_BYTES, dst, j)
    for j in range(n - n % 16, n):
        dst[j] = load_bf16(row, j * _F16_BYTES)
