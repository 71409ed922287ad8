"""Row kernels for the float formats F32, F16 and BF16 (block size 1, any column count).

The row is read as raw bytes and converted in registers (16 values per step:
``vcvtph2ps`` for f16, a 16-bit shift for bf16). F32 rows, and F16/BF16 rows under the 'int'
matvec backend, dot with x as float32: exact up to float32 summation order. Under 'int8' (the
default) F16/BF16 rows dot with the half activation where ``calibrate_f16`` measures it the
faster (activation.halve_x: x scaled by a power of two and rounded to f16, as llama.cpp rounds x
for F16 weights): within 2^-11 sum|w x| of the float32 dot, and read from memory 10-50% faster on
the AMD EPYC machines (activation.py has the figures). A scalar loop handles the last cols % 16.

F32 weights are read with or without software prefetches, whichever streams faster on
this machine (``calibrate_f32``, measured once per process before the first F32 weight is
used). On the AMD EPYC (Zen 4) machine the hardware prefetchers alone streamed F32 rows
~20% faster (21.3 against 17.9 GB/s, mean of 3 alternated runs over 3 shapes), and
llama2.c's stories15M/110M decode rose from 0.82x/0.70x of llama2.c to 0.97x/0.92x;
the software prefetch was added on the Intel machine, where it helped quantized rows.

F16 and BF16 rows shorter than LONG_COLS are prefetched into L1 (``prefetcht0``), into L2 only
(``prefetcht1``) or not at all, as ``calibrate_f16`` measures fastest (once per process, before the
first such weight is used; longer rows always take ``prefetcht1``). On the Intel machine one
``prefetcht0`` per line was the faster (15.1-15.4 against 14.5-14.8 GB/s); on the AMD EPYC (Zen 4) one
the three varied with the host more than with the hint (``kernels_bench.py --only stream --formats F16
--f16-prefetch l1|l2|none``: 14.0-21.1, 16.6-17.5, 14.8-22.7 GB/s at 1 thread, 2026-12-02).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import tuning
from .activation import HALF_META, halve_x
from .simd import (
    LONG_ROW_X_BYTES, PREFETCH_BYTES, F16, _F32, _I16, _I32, _fma, _half_to_float, _idx, _load, _prefetch, _ptr, _splat, _vec, load_f16,
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


def _make_fma16(kind: str, prefetch: bool = True, l1: bool = True, half_x: bool = False):
    """acc + 16 weights of ``kind`` at byte ``off`` of row * x[xoff:xoff+16]; x float32, or
    int16 f16 bit patterns (half_x)."""

    @intrinsic
    def fma16(typingctx, acc, row, off, x, xoff):
        def codegen(context, builder, sig, args):
            acc, row, off, x, xoff = args
            p = _ptr(context, builder, sig.args[1], row, off)
            if prefetch:
                _prefetch(builder, p, PREFETCH_BYTES, l1)
            w = _values16(builder, p, kind)
            xp = _ptr(context, builder, sig.args[3], x, xoff)
            xv = _half_to_float(builder, _load(builder, xp, _vec(_I16, 16))) if half_x else _load(builder, xp, _vec(_F32, 16))
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


fma16_f32, fma16_f32_hw, fma16_f32_l2 = _make_fma16("f32"), _make_fma16("f32", prefetch=False), _make_fma16("f32", l1=False)
LONG_COLS = LONG_ROW_X_BYTES // 4  # x: float32
LONG_HALF_COLS = LONG_ROW_X_BYTES // 2  # x: f16
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
def half_at(typingctx, xh, j):
    """xh[j] (f16 bits in an int16 array) as float32."""

    def codegen(context, builder, sig, args):
        return _half_to_float(builder, builder.load(_ptr(context, builder, sig.args[0], args[0], args[1]), align=2))

    return types.float32(xh, j), codegen


@njit(cache=True, _nrt=False)
def _f32_at(x, j):
    return x[j]


@intrinsic
def load_bf16(typingctx, arr, off):
    """The bf16 at byte ``off`` of a uint8 array, as float32."""

    def codegen(context, builder, sig, args):
        bits = builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], _I16), align=1)
        return builder.bitcast(builder.shl(builder.zext(bits, _I32), ir.Constant(_I32, 16)), _F32)

    return types.float32(arr, off), codegen


# ------------------------------------------------------------------ row dots (x: f32 (cols,))
def _make_dot(fma16, width: int, load_one, fma16_quiet=None, x_at=_f32_at):
    """A row dot over weights of ``width`` bytes per value, 16 at a time by fma16.

    fma16_quiet (the same step without its prefetch) takes every other step when 16 values
    are half a cache line (2-byte formats): one prefetch per line, not two. Measured on the
    Intel AMX machine over 973 MB of 1B-shaped F16 rows, 1 thread: 15.1-15.4 GB/s against
    14.5-14.8 with a prefetch per step (a plain float32 sum of the same bytes: 15.3-15.8)."""
    odd = fma16 if fma16_quiet is None else fma16_quiet

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot(row, x):
        n = x.shape[0]
        a0, a1, a2, a3 = zero16(), zero16(), zero16(), zero16()  # four FMA chains hide the FMA latency
        for j in range(0, n - 63, 64):
            a0 = fma16(a0, row, j * width, x, j)
            a1 = odd(a1, row, (j + 16) * width, x, j + 16)
            a2 = fma16(a2, row, (j + 32) * width, x, j + 32)
            a3 = odd(a3, row, (j + 48) * width, x, j + 48)
        for j in range(n - n % 64, n - 15, 16):
            a0 = fma16(a0, row, j * width, x, j)
        total = hsum16(add16(add16(a0, a1), add16(a2, a3)))
        for j in range(n - n % 16, n):
            total += load_one(row, j * width) * x_at(x, j)
        return total

    return dot


def _make_dot4(fma16, width: int, load_one, fma16_quiet, x_at):
    """dot4(w, r, x, out, scale): out[r + i] = (w[r + i] . x) * scale for i < 4, each row summed exactly
    as ``_make_dot``'s dot sums it (the same four chains, tail and order: bitwise the same), with
    each 16 values of x loaded once for the four rows: for rows whose x fills L1. F16 rows of 8,192
    values, ``kernels_bench.py --only stream --formats F16``, 1 thread, Zen 4, 2026-12-02: 20.2-20.7
    GB/s against 18.1-19.1 one at a time on the half activation, 18.5-19.9 against 14.5-15.0 on x in f32."""
    odd = fma16_quiet

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot4(w, r, x, out, scale):
        n = x.shape[0]
        w0, w1, w2, w3 = w[r], w[r + 1], w[r + 2], w[r + 3]
        a0, a1, a2, a3 = zero16(), zero16(), zero16(), zero16()
        b0, b1, b2, b3 = zero16(), zero16(), zero16(), zero16()
        c0, c1, c2, c3 = zero16(), zero16(), zero16(), zero16()
        d0, d1, d2, d3 = zero16(), zero16(), zero16(), zero16()  # row i's chains: a_i, b_i, c_i, d_i
        for j in range(0, n - 63, 64):
            o0, o1, o2, o3 = j * width, (j + 16) * width, (j + 32) * width, (j + 48) * width
            a0, a1, a2, a3 = fma16(a0, w0, o0, x, j), odd(a1, w0, o1, x, j + 16), fma16(a2, w0, o2, x, j + 32), odd(a3, w0, o3, x, j + 48)
            b0, b1, b2, b3 = fma16(b0, w1, o0, x, j), odd(b1, w1, o1, x, j + 16), fma16(b2, w1, o2, x, j + 32), odd(b3, w1, o3, x, j + 48)
            c0, c1, c2, c3 = fma16(c0, w2, o0, x, j), odd(c1, w2, o1, x, j + 16), fma16(c2, w2, o2, x, j + 32), odd(c3, w2, o3, x, j + 48)
            d0, d1, d2, d3 = fma16(d0, w3, o0, x, j), odd(d1, w3, o1, x, j + 16), fma16(d2, w3, o2, x, j + 32), odd(d3, w3, o3, x, j + 48)
        for j in range(n - n % 64, n - 15, 16):
            a0, b0 = fma16(a0, w0, j * width, x, j), fma16(b0, w1, j * width, x, j)
            c0, d0 = fma16(c0, w2, j * width, x, j), fma16(d0, w3, j * width, x, j)
        t0 = hsum16(add16(add16(a0, a1), add16(a2, a3)))
        t1 = hsum16(add16(add16(b0, b1), add16(b2, b3)))
        t2 = hsum16(add16(add16(c0, c1), add16(c2, c3)))
        t3 = hsum16(add16(add16(d0, d1), add16(d2, d3)))
        for j in range(n - n % 16, n):
            xj = x_at(x, j)
            t0 += load_one(w0, j * width) * xj
            t1 += load_one(w1, j * width) * xj
            t2 += load_one(w2, j * width) * xj
            t3 += load_one(w3, j * width) * xj
        out[r], out[r + 1], out[r + 2], out[r + 3] = t0 * scale, t1 * scale, t2 * scale, t3 * scale

    return dot4


# Each format's variants differ only in their prefetch hints: bitwise the same sums.
_dot_f32_soft, _dot_f32_hw, _dot_f32_l2 = (_make_dot(f, _F32_BYTES, load_f32) for f in (fma16_f32, fma16_f32_hw, fma16_f32_l2))
PF_NONE, PF_L1, PF_L2 = 0, 1, 2  # tuning.F16_PREFETCH: how F16/BF16 rows under LONG_COLS values are prefetched


def _make_half_dot(kind: str, load_one):
    """(dot(row, x, xq, xm), dot_rows(w, r0, r1, x, xq, xm, out)) for 2-byte rows of ``kind``: against
    the half activation when xm is one (xq: f16 bits of x * s, xm = (1/s,)), else against x;
    prefetched as tuning.F16_PREFETCH says; long rows four at a time (``_make_dot4``)."""
    f32 = [_make_dot(_make_fma16(kind, **hint), _F16_BYTES, load_one, _make_fma16(kind, prefetch=False))
           for hint in ({}, {"l1": False}, {"prefetch": False})]
    half = [_make_dot(_make_fma16(kind, half_x=True, **hint), _F16_BYTES, load_one,
                      _make_fma16(kind, prefetch=False, half_x=True), half_at)
            for hint in ({}, {"l1": False}, {"prefetch": False})]
    (f32_l1, f32_l2, f32_hw), (half_l1, half_l2, half_hw) = f32, half
    f32_l2x4 = _make_dot4(_make_fma16(kind, l1=False), _F16_BYTES, load_one, _make_fma16(kind, prefetch=False), _f32_at)
    half_l2x4 = _make_dot4(_make_fma16(kind, l1=False, half_x=True), _F16_BYTES, load_one,
                           _make_fma16(kind, prefetch=False, half_x=True), half_at)

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot(row, x, xq, xm):
        mode = tuning.flag(tuning.F16_PREFETCH)
        if xm.shape[0] == HALF_META:
            if x.shape[0] >= LONG_HALF_COLS or mode == PF_L2:
                return half_l2(row, xq) * xm[0]
            if mode == PF_NONE:
                return half_hw(row, xq) * xm[0]
            return half_l1(row, xq) * xm[0]
        if x.shape[0] >= LONG_COLS or mode == PF_L2:
            return f32_l2(row, x)
        if mode == PF_NONE:
            return f32_hw(row, x)
        return f32_l1(row, x)

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def dot_rows(w, r0, r1, x, xq, xm, out):
        """out[r] = dot(w[r], x, xq, xm) for r in r0..r1, bitwise."""
        r = r0
        if xm.shape[0] == HALF_META and x.shape[0] >= LONG_HALF_COLS:
            while r + 4 <= r1:
                half_l2x4(w, r, xq, out, xm[0])
                r += 4
        elif xm.shape[0] != HALF_META and x.shape[0] >= LONG_COLS:
            while r + 4 <= r1:
                f32_l2x4(w, r, x, out, np.float32(1.0))
                r += 4
        for i in range(r, r1):
            out[i] = dot(w[i], x, xq, xm)

    return dot, dot_rows


dot_f16, dot_rows_f16 = _make_half_dot("f16", load_f16)
dot_bf16, dot_rows_bf16 = _make_half_dot("bf16", load_bf16)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def dot_f32(row, x):
    if not tuning.flag(tuning.F32_SOFT_PREFETCH):
        return _dot_f32_hw(row, x)
    if x.shape[0] >= LONG_COLS:
        return _dot_f32_l2(row, x)
    return _dot_f32_soft(row, x)


@njit(cache=True, _nrt=False)
def _stream_f32(w, x, out, soft):
    for r in range(w.shape[0]):
        out[r] = _dot_f32_soft(w[r], x) if soft else _dot_f32_hw(w[r], x)


def _fastest(run, choices, rounds: int):
    """The choice whose ``run(choice)`` is fastest: each run once first (compile or load, not
    counted), then ``rounds`` alternated timings, best of them per choice."""
    import time

    for choice in choices:
        run(choice, warm=True)
    best = dict.fromkeys(choices, float("inf"))
    for _ in range(rounds):
        for choice in choices:
            t0 = time.perf_counter()
            run(choice)
            best[choice] = min(best[choice], time.perf_counter() - t0)
    return min(choices, key=best.__getitem__)


_calibrated = False


def calibrate_f32(rounds: int = 5) -> bool:
    """Choose, once per process, whether F32 rows are prefetched in software: both ways
    timed over 64 MiB of rows (beyond any L3 here), alternated, best of ``rounds``.
    ~0.2 s, paid by processes that use an F32 weight. Returns the choice."""
    global _calibrated
    if not _calibrated:
        cols = 1024
        w = np.full((16384, cols), 1.0, np.float32).view(np.uint8)  # (rows, row bytes): 64 MiB, pages written
        x, out = np.ones(cols, np.float32), np.empty(16384, np.float32)
        soft = _fastest(lambda soft, warm=False: _stream_f32(w[:16] if warm else w, x, out, soft), (True, False), rounds)
        tuning.set(tuning.F32_SOFT_PREFETCH, int(soft))
        _calibrated = True
    return bool(tuning.get(tuning.F32_SOFT_PREFETCH))


@njit(cache=True, _nrt=False)
def _stream_f16(w, x, xq, xm, out):
    for r in range(w.shape[0]):
        out[r] = dot_f16(w[r], x, xq, xm)


_calibrated_f16 = False


def calibrate_f16(rounds: int = 5) -> int:
    """Choose, once per process, how F16/BF16 rows under LONG_COLS values are prefetched (PF_L1,
    PF_L2, PF_NONE) and, under the int8 matvec backend (tuning.HALF_X), whether they dot with the
    half activation or with x in float32 (tuning.F16_X32): each way timed over 64 MiB of rows of
    2,048 values (the common row length of the seeds' models), alternated, best of ``rounds``;
    ~0.3 s, paid by processes that use such a weight. Returns the prefetch choice.

    Why x too: the half activation halves the bytes of x each row reads, and on the AMD EPYC (Zen 4)
    machines F16 rows streamed 10-50% faster with it (activation.py); on the Intel AMX machine rows of
    2,048 values streamed at 13.7 GB/s with it and 16.6 with x in float32, and the 1B's F16 decode
    went from 5.8 to 6.5 tok/s at 1 thread (11.0 to 12.5 at 2) with x in float32. x in float32 is
    also the exact one: choosing it never costs accuracy."""
    global _calibrated_f16
    if not _calibrated_f16:
        cols = 2048
        w = np.full((16384, cols), np.float16(1.0)).view(np.uint8)  # (rows, row bytes): 64 MiB, pages written
        x, out = np.ones(cols, np.float32), np.empty(16384, np.float32)
        xq, xm = np.empty(cols, np.int16), np.empty(HALF_META, np.float32)
        halve_x(x, xq, xm)
        no_meta = np.empty(0, np.float32)
        kinds = (0, 1) if tuning.get(tuning.HALF_X) else (1,)  # 0: the half activation, 1: x in float32

        def run(choice, warm=False):
            x32, mode = choice
            tuning.set(tuning.F16_PREFETCH, mode)  # read by dot_f16 on every row
            _stream_f16(w[:16] if warm else w, x, xq, no_meta if x32 else xm, out)

        x32, mode = _fastest(run, [(k, m) for k in kinds for m in (PF_L1, PF_L2, PF_NONE)], rounds)
        tuning.set(tuning.F16_PREFETCH, mode)
        tuning.set(tuning.F16_X32, x32 if tuning.get(tuning.HALF_X) else 0)
        _calibrated_f16 = True
    return tuning.get(tuning.F16_PREFETCH)


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
