"""Scalar float32 helpers that behave exactly as ggml's C does, for the bit-exact encoders.

ggml's quantizers run in float32 with no fused multiply-add (llama.cpp's ggml-base is
built for baseline x86-64), so a Numba port that keeps every intermediate float32 and
every operation in C's order writes the same bytes. Three C idioms need care:

- ``nearest_int`` adds 1.5 * 2**23 and reads the low mantissa bits: round half to even
  for |x| < 2**22, and a defined (if meaningless) value outside, which the callers clamp.
- ``GGML_FP32_TO_FP16`` without F16C is the FP16 library's bit algorithm (round to nearest
  even, NaN -> 0x7E00); the encoders round-trip scales through it, as C does.
- C's float -> int casts truncate toward zero; ``roundf`` rounds half away from zero.

Numba promotes ``float32 op int`` and ``float32 op <python float>`` to float64, so every
constant and integer operand below is wrapped in ``f32``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

f32 = np.float32


@intrinsic
def _bits_of(typingctx, x):
    """float32 -> its IEEE bits as int32 (a register move)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float_of(typingctx, x):
    """int32 IEEE bits -> float32."""
    if x != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always")
def nearest_int(fval):
    """ggml's nearest_int(float): round half to even via the 1.5 * 2**23 trick."""
    val = f32(fval) + f32(12582912.0)
    return (np.int64(_bits_of(val)) & 0x007FFFFF) - 0x00400000


@njit(inline="always")
def fp32_to_fp16_bits(f):
    """ggml_compute_fp32_to_fp16: float32 -> uint16 bits (as int64), round to nearest even."""
    f = f32(f)
    base = (abs(f) * f32(2.0**112)) * f32(2.0**-110)
    w = np.int64(_bits_of(f)) & 0xFFFFFFFF
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = _float_of(np.int32((bias >> 1) + 0x07800000)) + base
    bits = np.int64(_bits_of(base)) & 0xFFFFFFFF
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    return (sign >> 16) | (0x7E00 if shl1_w > 0xFF000000 else nonsign)


@njit(inline="always")
def fp16_bits_to_fp32(h):
    """ggml_compute_fp16_to_fp32: uint16 bits -> float32 (exact)."""
    exp = (h >> 10) & 31
    mant = h & 1023
    if exp == 0:
        v = np.float64(mant) * 2.0**-24
    elif exp == 31:
        v = np.inf if mant == 0 else np.nan
    else:
        v = np.float64(1024 + mant) * 2.0 ** (exp - 25)
    return f32(-v if h & 0x8000 else v)


@njit(inline="always")
def put_f16(out, b, offset, value):
    """Store float32 ``value`` as a little-endian ggml half at out[b, offset:offset + 2];
    returns the float32 the half holds (what C reads back with GGML_FP16_TO_FP32)."""
    h = fp32_to_fp16_bits(value)
    out[b, offset] = h & 0xFF
    out[b, offset + 1] = h >> 8
    return fp16_bits_to_fp32(h)


@njit(inline="always")
def roundf(x):
    """C's roundf: half away from zero (float32 in, float32 out)."""
    a = abs(x)
    t = f32(np.trunc(a))
    if a - t >= f32(0.5):
        t = t + f32(1.0)
    return -t if x < 0 else t


@njit(inline="always")
def trunc_int(x):
    """C's (int) cast of a float: toward zero."""
    return np.int64(np.trunc(x))
