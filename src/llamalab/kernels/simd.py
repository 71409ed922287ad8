"""SIMD building blocks for the Numba kernels, written as LLVM IR intrinsics.

Numba's auto-vectorizer does not see through the packed-bit block formats (and it
widens every integer to 64 bits), so the hot inner steps are spelled out here as
small LLVM vector programs. Numba code calls them like functions; LLVM inlines them
and keeps the accumulators in registers.

Most kernels are whole row loops written in IR (see legacy.py, kquants.py), with
float accumulators folded once per row (``_fold8``, ``_hsum8``). Where Numba code
holds vectors itself (floats.py), they are a Numba type, ``VecType`` (``F16`` is
``<16 x float>``, one zmm register).

Integer dot products: every quantized format's weights become groups of 32 int16
values (codes, zero- or sign-extended), dotted with 32 int16 activation values
(``activation.py``) by ``vpdpwssd``, which sums pairs of products into int32 lanes
(elsewhere a portable IR form that LLVM turns into ``pmaddwd``). The 32-value formats
have one scale per group and take ``_dot_i16``: two 256-bit instructions into 8 lanes,
which keeps them off the 512-bit ports. The K-quants, whose codes are unsigned and under
64, skip the widening where the CPU has VNNI: ``_dot_u8s8x64`` (``vpdpbusd``) dots 64 codes
with the bytes of 64 activation values twice (high bytes, then low; activation.py), exact
as the 16-bit dot and 1.2-1.7x as fast on Zen 4. Without VNNI they take ``_dot_i16x32``:
lanes 0-7 cover values 0-15 and lanes 8-15 values 16-31, scaled by ``<s0 x8, s1 x8>``.

The instruction set is chosen from the same CPU features Numba compiles for
(``NUMBA_CPU_FEATURES`` if set, else the host's), which are part of Numba's cache
key, so a cached kernel never runs on a CPU it was not built for.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic, models, register_model


def _cpu_features() -> set[str]:
    text = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return {f[1:] for f in str(text).split(",") if f.startswith("+")}


FEATURES = _cpu_features()
HAS_VNNI = ("avx512vnni" in FEATURES and "avx512vl" in FEATURES) or "avxvnni" in FEATURES
HAS_F16C = "f16c" in FEATURES or "avx512fp16" in FEATURES


class VecType(types.Type):
    """An LLVM vector ``<count x dtype>`` held in registers."""

    def __init__(self, dtype: types.Number, count: int):
        self.dtype = dtype
        self.count = count
        super().__init__(name=f"Vec({dtype}x{count})")


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be_type = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.count)
        super().__init__(dmm, fe_type, be_type)


F16 = VecType(types.float32, 16)

_I8, _I16, _I32, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()


def _vec(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


def _splat(t: ir.Type, n: int, value) -> ir.Constant:
    return ir.Constant(_vec(t, n), [value] * n)


def _idx(values) -> ir.Constant:
    values = list(values)
    return ir.Constant(_vec(_I32, len(values)), values)


def _llvm_fn(builder, name: str, ret: ir.Type, args: list[ir.Type]):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _ptr(context, builder, arrty, arr, index, elem: ir.Type | None = None):
    """Pointer to ``arr[index]`` (element units), optionally cast to ``elem*``."""
    data = context.make_array(arrty)(context, builder, arr).data
    p = builder.gep(data, [index])
    return builder.bitcast(p, elem.as_pointer()) if elem is not None else p


def _load(builder, ptr, vty: ir.Type):
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)


def _broadcast(builder, scalar, n: int):
    v = builder.insert_element(ir.Constant(_vec(scalar.type, n), ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, _idx([0] * n))


# Software prefetch distance for streaming weights. The hardware prefetchers alone left
# a single thread at ~8 GB/s on the SmolLM2 output head; 2-4 KB ahead gave ~11.5 GB/s.
PREFETCH_BYTES = 3072


# From this many bytes of x read per row (half of Zen 4's 32 KiB L1D), the weights are
# prefetched into L2 only (``prefetcht1``): streamed through L1 they evicted x, which every
# row reads again. Measured on Zen 4 over >= 160 MB of rows, 1 thread: Q4_K with 14,336 values
# per row 8.9 -> 14.0 GB/s, Q6_K 8.9 -> 12.2; F16 with 4,096 13.0-14.1 -> 16.3-17.6; rows
# reading less x lost 5-10% that way, so they keep ``prefetcht0``.
LONG_ROW_X_BYTES = 16384


def _prefetch(builder, p, distance: int, l1: bool = True):
    """Hint: the cache line at p + distance will be read soon (never faults); into L1
    (``prefetcht0``) or L2 only (``prefetcht1``, l1=False)."""
    fn = _llvm_fn(builder, "llvm.prefetch.p0", ir.VoidType(), [p.type, _I32, _I32, _I32])
    target = builder.gep(p, [ir.Constant(ir.IntType(64), distance)])
    builder.call(fn, [target, ir.Constant(_I32, 0), ir.Constant(_I32, 3 if l1 else 2), ir.Constant(_I32, 1)])


def _fma(builder, a, b, c):
    n = a.type.count
    fn = _llvm_fn(builder, f"llvm.fma.v{n}f32", a.type, [a.type] * 3)
    return builder.call(fn, [a, b, c])


def _half_to_float(builder, bits16):
    """f16 bit pattern (i16, or <n x i16>) -> f32, exact (subnormals, inf, nan kept)."""
    if HAS_F16C:
        ht = ir.HalfType() if not isinstance(bits16.type, ir.VectorType) else _vec(ir.HalfType(), bits16.type.count)
        ft = _F32 if not isinstance(bits16.type, ir.VectorType) else _vec(_F32, bits16.type.count)
        return builder.fpext(builder.bitcast(bits16, ht), ft)
    # Portable: rebuild the float from its fields. Normal and subnormal halves are
    # handled by scaling the shifted magnitude with 2**112; inf/nan get exponent 255.
    vec = isinstance(bits16.type, ir.VectorType)
    n = bits16.type.count if vec else 1

    def c(t, v):
        return _splat(t, n, v) if vec else ir.Constant(t, v)

    ft = _vec(_F32, n) if vec else _F32
    it = _vec(_I32, n) if vec else _I32
    h = builder.zext(bits16, it)
    sign = builder.shl(builder.and_(h, c(_I32, 0x8000)), c(_I32, 16))
    mag = builder.shl(builder.and_(h, c(_I32, 0x7FFF)), c(_I32, 13))
    scaled = builder.fmul(builder.bitcast(mag, ft), c(_F32, 2.0**112))
    is_special = builder.icmp_unsigned(">=", mag, c(_I32, 0x7C00 << 13))
    special = builder.bitcast(builder.or_(mag, c(_I32, 0x7F800000)), ft)
    value = builder.select(is_special, special, scaled)
    return builder.bitcast(builder.or_(builder.bitcast(value, it), sign), ft)


def _float_to_half(builder, v):
    """f32 (or <n x float>) -> f16 bit pattern (i16 or <n x i16>), rounded to nearest even
    (overflow to inf, nan kept): ``vcvtps2ph`` with F16C, else integer steps on the bits."""
    vec = isinstance(v.type, ir.VectorType)
    n = v.type.count if vec else 1
    if HAS_F16C:
        return builder.bitcast(builder.fptrunc(v, _vec(ir.HalfType(), n) if vec else ir.HalfType()), _vec(_I16, n) if vec else _I16)

    def c(t, x):
        return _splat(t, n, x) if vec else ir.Constant(t, x)

    it, ft = (_vec(_I32, n), _vec(_F32, n)) if vec else (_I32, _F32)
    u = builder.bitcast(v, it)
    sign = builder.and_(builder.lshr(u, c(_I32, 16)), c(_I32, 0x8000))
    a = builder.and_(u, c(_I32, 0x7FFFFFFF))
    odd = builder.and_(builder.lshr(a, c(_I32, 13)), c(_I32, 1))
    normal = builder.lshr(builder.add(builder.add(a, c(_I32, 0xFFF - 0x38000000)), odd), c(_I32, 13))  # rebias, round
    small = builder.sub(builder.bitcast(builder.fadd(builder.bitcast(a, ft), c(_F32, 0.5)), it), c(_I32, 0x3F000000))
    special = builder.select(builder.icmp_unsigned(">", a, c(_I32, 0x7F800000)), c(_I32, 0x7E00), c(_I32, 0x7C00))
    h = builder.select(builder.icmp_unsigned("<", a, c(_I32, 0x38800000)), small, normal)  # below 2^-14: subnormal
    h = builder.select(builder.icmp_unsigned(">=", a, c(_I32, 0x477FF000)), special, h)  # rounds past 65504: inf
    return builder.trunc(builder.or_(h, sign), _vec(_I16, n) if vec else _I16)


def _f16_splat(builder, p, n: int = 16):
    """The f16 at byte pointer p in n float lanes. Broadcast before it is converted:
    loaded as a scalar, LLVM put the half in a vector register by ``vpinsrw``, which merges into
    whatever register it picks, here a row's accumulator, and every block then waited for the
    previous one (llvm-mca znver4, cycles a block: Q6_K 39 against 18 of throughput, Q4_0 37 against 16)."""
    half = builder.load(builder.bitcast(p, _I16.as_pointer()), align=1)
    return _half_to_float(builder, _broadcast(builder, half, n))


def _dot16(builder, w, x, acc=None):
    """acc (<8 x i32>) + sums of pairs of products w[i] * x[i] (<16 x i16> each): one ``vpdpwssd``."""
    v8i = _vec(_I32, 8)
    if acc is None:
        acc = ir.Constant(v8i, [0] * 8)
    if HAS_VNNI:
        fn = _llvm_fn(builder, "llvm.x86.avx512.vpdpwssd.256", v8i, [v8i, v8i, v8i])
        return builder.call(fn, [acc, builder.bitcast(w, v8i), builder.bitcast(x, v8i)])
    # Portable: |w * x| < 2**23 here, so pairs of int32 products never overflow.
    prod = builder.mul(builder.sext(w, _vec(_I32, 16)), builder.sext(x, _vec(_I32, 16)))
    return builder.add(acc, builder.add(builder.shuffle_vector(prod, prod, _idx(range(0, 16, 2))),
                                        builder.shuffle_vector(prod, prod, _idx(range(1, 16, 2)))))


def _dot_u8s8x64(builder, a, b, acc=None):
    """acc (<16 x i32>) + the products a[i] * b[i] (<64 x i8> each; a unsigned, b signed),
    summed 4 to a lane: one 512-bit ``vpdpbusd`` (needs HAS_VNNI)."""
    v16i = _vec(_I32, 16)
    fn = _llvm_fn(builder, "llvm.x86.avx512.vpdpbusd.512", v16i, [v16i, v16i, v16i])
    acc = ir.Constant(v16i, [0] * 16) if acc is None else acc
    return builder.call(fn, [acc, builder.bitcast(a, v16i), builder.bitcast(b, v16i)])


def _halves(builder, v):
    """<32 x T> -> its values 0-15 and 16-31."""
    return builder.shuffle_vector(v, v, _idx(range(16))), builder.shuffle_vector(v, v, _idx(range(16, 32)))


def _dot_i16(builder, w, x, acc=None):
    """acc (<8 x i32>) + the products w[i] * x[i] (<32 x i16> each), summed 4 to a lane."""
    (w0, w1), (x0, x1) = _halves(builder, w), _halves(builder, x)
    return _dot16(builder, w1, x1, _dot16(builder, w0, x0, acc))


def _dot_i16x32(builder, w, x):
    """Sums of pairs of products w[i] * x[i] (<32 x i16> each) as <16 x i32>: lanes 0-7 sum
    values 0-15, lanes 8-15 values 16-31 (one 512-bit ``vpdpwssd``)."""
    v16i = _vec(_I32, 16)
    if HAS_VNNI and "avx512bw" in FEATURES:
        fn = _llvm_fn(builder, "llvm.x86.avx512.vpdpwssd.512", v16i, [v16i, v16i, v16i])
        return builder.call(fn, [ir.Constant(v16i, [0] * 16), builder.bitcast(w, v16i), builder.bitcast(x, v16i)])
    (w0, w1), (x0, x1) = _halves(builder, w), _halves(builder, x)
    return builder.shuffle_vector(_dot16(builder, w0, x0), _dot16(builder, w1, x1), _idx(range(16)))


def _widen(builder, codes, signed: bool = False):
    """<32 x i8> codes -> <32 x i16>, zero-extended (unsigned codes) or sign-extended."""
    return (builder.sext if signed else builder.zext)(codes, _vec(_I16, 32))


def _scaled_acc(builder, acc, idot, scale):
    """acc + float(idot) * scale, with scale a float scalar or a vector as wide as idot."""
    f = builder.sitofp(idot, _vec(_F32, idot.type.count))
    if not isinstance(scale.type, ir.VectorType):
        scale = _broadcast(builder, scale, idot.type.count)
    return _fma(builder, f, scale, acc)


# ---------------------------------------------------------------- generic helpers


def _fold8(builder, v16):
    """<16 x float> -> <8 x float>, the sum of its halves (lanes then only matter summed)."""
    return builder.fadd(builder.shuffle_vector(v16, v16, _idx(range(8))), builder.shuffle_vector(v16, v16, _idx(range(8, 16))))


def _hsum8(builder, x):
    """Sum of the 8 lanes of an <8 x float>, in a fixed pairwise order."""
    s = builder.fadd(builder.shuffle_vector(x, x, _idx(range(4))), builder.shuffle_vector(x, x, _idx(range(4, 8))))
    s = builder.fadd(builder.shuffle_vector(s, s, _idx([0, 1])), builder.shuffle_vector(s, s, _idx([2, 3])))
    return builder.fadd(builder.extract_element(s, ir.Constant(_I32, 0)), builder.extract_element(s, ir.Constant(_I32, 1)))


@intrinsic
def load_f16(typingctx, arr, off):
    """The f16 stored little-endian at byte ``off`` of a uint8 array, as float32."""

    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], args[1], _I16)
        return _half_to_float(builder, builder.load(p, align=1))

    return types.float32(arr, off), codegen


@intrinsic
def claim(typingctx, counter):
    """counter[0] += 1 atomically (counter: a 1-element int64 array); returns the value before.
    Threads that claim work items one at a time from a shared counter share them by speed: one
    whose core another process holds takes fewer instead of holding the others back."""

    def codegen(context, builder, sig, args):
        p = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", p, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(counter), codegen
