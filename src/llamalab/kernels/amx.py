"""Batched products on Intel AMX (bf16 tiles), for prefill on Sapphire Rapids and later.

One AMX ``tdpbf16ps`` multiplies a 16x32 bf16 tile by a 32x16 bf16 tile into a 16x16
float32 tile: 8192 multiply-adds per instruction (one per ~8 ns here: over ten times the
AVX-512 FMA rate). So:

    X (n, cols) f32   -> Xb (n32, K) bf16, rows padded to 32 and cols to K = 32k
    W, 32 rows at a time: dequantized (rows.row_dequantize), rounded to bf16 and packed
        in AMX's "VNNI" order B[half][k/2][16 rows] = (W[r, k], W[r, k+1]) as uint32
    C (32 x 32 block of out) = sum over k of 4 tile products, in 4 tile registers

Operands are rounded to bf16 (8-bit mantissa, round to nearest even); products and
sums are float32. The relative error of an output is about 2**-9 / sqrt(terms) per
term, ~3e-3 of the output's norm in practice (the integer path with its 16-bit
activations: ~3e-5).

The tile kernel is textual LLVM IR (llvmlite's IR builder has no ``x86_amx`` type),
linked into the Numba library of ``tile_panel``; LLVM inserts the tile configuration.
Linux hands out AMX state only on request (``arch_prctl(ARCH_REQ_XCOMP_PERM)``), made
once at import; ``AVAILABLE`` is False when the CPU, the kernel or Numba's target
features say no, and callers then use BLAS.
"""

from __future__ import annotations

import ctypes
import os

import numba
import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .rows import row_dequantize
from .simd import FEATURES, _I16, _I32, _idx, _load, _ptr, _splat, _vec, claim

_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18
_I64 = ir.IntType(64)


def _request_amx() -> bool:
    """Whether AMX tiles are usable: the CPU has them, the kernel grants this process their
    state, and LLAMALAB_AMX is not 0 (0 makes this machine choose as one without AMX does)."""
    if os.environ.get("LLAMALAB_AMX", "").strip() == "0" or not {"amx-tile", "amx-bf16"} <= FEATURES:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


AVAILABLE = _request_amx()

_KERNEL = "llamalab_amx_bf16_panel"
_KERNEL_IR = r"""
declare x86_amx @llvm.x86.tileloadd64.internal(i16, i16, ptr, i64)
declare x86_amx @llvm.x86.tdpbf16ps.internal(i16, i16, i16, x86_amx, x86_amx, x86_amx)
declare void @llvm.x86.tilestored64.internal(i16, i16, ptr, i64, x86_amx)
declare x86_amx @llvm.x86.tilezero.internal(i16, i16)

; For t < nt: C[32t:32t+32, 0:32] (f32, row stride ldc bytes) = A[32t:32t+32, 0:32ks] (bf16, row
; stride lda bytes) . B, with B two halves of (16ks rows x 64 bytes) bf16 pairs (C columns 0-15,
; 16-31). Accumulators: 4 tiles (2 x 2 blocks of 16 x 16); per k step 2 A and 2 B tile loads.
; The tile configuration is loaded once per call, not once per 32 x 32 block.
define void @NAME(ptr %a, i64 %lda, i64 %nt, ptr %b, ptr %c, i64 %ldc, i64 %ks) #0 {
entry:
  %lda16 = mul i64 %lda, 16
  %lda32 = mul i64 %lda, 32
  %ldc16 = mul i64 %ldc, 16
  %ldc32 = mul i64 %ldc, 32
  %bhalf = mul i64 %ks, 1024
  %b_hi = getelementptr i8, ptr %b, i64 %bhalf
  br label %block
block:
  %t = phi i64 [0, %entry], [%t1, %stored]
  %aoff = mul i64 %t, %lda32
  %a_t = getelementptr i8, ptr %a, i64 %aoff
  %a_hi = getelementptr i8, ptr %a_t, i64 %lda16
  %z00 = call x86_amx @llvm.x86.tilezero.internal(i16 16, i16 64)
  %z01 = call x86_amx @llvm.x86.tilezero.internal(i16 16, i16 64)
  %z10 = call x86_amx @llvm.x86.tilezero.internal(i16 16, i16 64)
  %z11 = call x86_amx @llvm.x86.tilezero.internal(i16 16, i16 64)
  br label %loop
loop:
  %k = phi i64 [0, %block], [%k1, %loop]
  %c00 = phi x86_amx [%z00, %block], [%n00, %loop]
  %c01 = phi x86_amx [%z01, %block], [%n01, %loop]
  %c10 = phi x86_amx [%z10, %block], [%n10, %loop]
  %c11 = phi x86_amx [%z11, %block], [%n11, %loop]
  %koff = mul i64 %k, 64
  %pa0 = getelementptr i8, ptr %a_t, i64 %koff
  %pa1 = getelementptr i8, ptr %a_hi, i64 %koff
  %boff = mul i64 %k, 1024
  %pb0 = getelementptr i8, ptr %b, i64 %boff
  %pb1 = getelementptr i8, ptr %b_hi, i64 %boff
  %ta0 = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %pa0, i64 %lda)
  %ta1 = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %pa1, i64 %lda)
  %tb0 = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %pb0, i64 64)
  %tb1 = call x86_amx @llvm.x86.tileloadd64.internal(i16 16, i16 64, ptr %pb1, i64 64)
  %n00 = call x86_amx @llvm.x86.tdpbf16ps.internal(i16 16, i16 64, i16 64, x86_amx %c00, x86_amx %ta0, x86_amx %tb0)
  %n01 = call x86_amx @llvm.x86.tdpbf16ps.internal(i16 16, i16 64, i16 64, x86_amx %c01, x86_amx %ta0, x86_amx %tb1)
  %n10 = call x86_amx @llvm.x86.tdpbf16ps.internal(i16 16, i16 64, i16 64, x86_amx %c10, x86_amx %ta1, x86_amx %tb0)
  %n11 = call x86_amx @llvm.x86.tdpbf16ps.internal(i16 16, i16 64, i16 64, x86_amx %c11, x86_amx %ta1, x86_amx %tb1)
  %k1 = add i64 %k, 1
  %done = icmp eq i64 %k1, %ks
  br i1 %done, label %store, label %loop
store:
  %coff = mul i64 %t, %ldc32
  %c_t = getelementptr i8, ptr %c, i64 %coff
  %c_hi = getelementptr i8, ptr %c_t, i64 %ldc16
  %c_r = getelementptr i8, ptr %c_t, i64 64
  %c_hr = getelementptr i8, ptr %c_hi, i64 64
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %c_t, i64 %ldc, x86_amx %n00)
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %c_r, i64 %ldc, x86_amx %n01)
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %c_hi, i64 %ldc, x86_amx %n10)
  call void @llvm.x86.tilestored64.internal(i16 16, i16 64, ptr %c_hr, i64 %ldc, x86_amx %n11)
  br label %stored
stored:
  %t1 = add i64 %t, 1
  %tdone = icmp eq i64 %t1, %nt
  br i1 %tdone, label %exit, label %block
exit:
  ret void
}
attributes #0 = { "target-features"="+amx-tile,+amx-bf16" }
""".replace("NAME", _KERNEL)


@intrinsic
def _tile_panel_ir(typingctx, a, nt, b, c, coff, ks):
    """C[coff:] (nt blocks of 32 rows x 32 cols) = A (32 nt rows of bf16) . packed B, ks steps of 32."""

    def codegen(context, builder, sig, args):
        context.active_code_library.add_llvm_module(ll.parse_assembly(_KERNEL_IR))
        a, nt, b, c, coff, ks = args
        aa = context.make_array(sig.args[0])(context, builder, a)
        ca = context.make_array(sig.args[3])(context, builder, c)
        lda = builder.extract_value(aa.strides, 0)  # bytes per row of A
        ldc = builder.extract_value(ca.strides, 0)
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, _I64, _I64, i8p, i8p, _I64, _I64]), _KERNEL)
        pa = builder.bitcast(aa.data, i8p)
        pb = builder.bitcast(context.make_array(sig.args[2])(context, builder, b).data, i8p)
        pc = builder.bitcast(builder.gep(ca.data, [coff]), i8p)
        builder.call(fn, [pa, lda, nt, pb, pc, ldc, ks])
        return context.get_dummy_value()

    return types.none(a, nt, b, c, coff, ks), codegen


@njit(cache=True, _nrt=False)
def tile_panel(xb, packed, c, coff, ks):
    """The one place the AMX kernel is linked: all of xb (n32, K) uint16 times one packed panel
    (2, K/2, 16) uint32 of 32 weight rows, into c (n32, ldc) float32 from element coff on."""
    _tile_panel_ir(xb, xb.shape[0] // 32, packed, c, coff, ks)


def _bf16_bits(builder, v):
    """<n x float> -> <n x i16> bf16 bit patterns, rounded to nearest even."""
    n = v.type.count
    bits = builder.bitcast(v, _vec(_I32, n))
    odd = builder.and_(builder.lshr(bits, _splat(_I32, n, 16)), _splat(_I32, n, 1))
    rounded = builder.add(builder.add(bits, _splat(_I32, n, 0x7FFF)), odd)
    return builder.trunc(builder.lshr(rounded, _splat(_I32, n, 16)), _vec(_I16, n))


def _make_to_bf16(n: int):
    @intrinsic
    def to_bf16(typingctx, src, off, dst):
        """dst[off:off+n] = bf16(src[off:off+n])."""

        def codegen(context, builder, sig, args):
            src, off, dst = args
            v = _load(builder, _ptr(context, builder, sig.args[0], src, off), _vec(ir.FloatType(), n))
            builder.store(_bf16_bits(builder, v), _ptr(context, builder, sig.args[2], dst, off, _vec(_I16, n)), align=2)
            return context.get_dummy_value()

        return types.none(src, off, dst), codegen

    return to_bf16


_to_bf16_16, _to_bf16_1 = _make_to_bf16(16), _make_to_bf16(1)


def _transpose16(builder, rows):
    """16 vectors <16 x i32> (a 16 x 16 matrix by rows) -> the 16 columns, by four rounds
    of two-input shuffles: round b swaps the off-diagonal b x b blocks of each 2b x 2b block."""
    rows = list(rows)
    for b in (8, 4, 2, 1):
        out = list(rows)
        for i in range(16):
            if i & b:
                continue
            lo, hi = rows[i], rows[i + b]  # new lo[j] = j & b ? hi[j - b] : lo[j]; new hi[j] = j & b ? hi[j] : lo[j + b]
            out[i] = builder.shuffle_vector(lo, hi, _idx([16 + j - b if j & b else j for j in range(16)]))
            out[i + b] = builder.shuffle_vector(lo, hi, _idx([16 + j if j & b else j + b for j in range(16)]))
        rows = out
    return rows


@intrinsic
def _pack_16x32(typingctx, vals, r, k, dst):
    """dst[k/2 + t, i] = bf16 pair (vals[r + i, k + 2t], vals[r + i, k + 2t + 1]) for i, t < 16:
    vals (32, K) float32 rows, dst (K/2, 16) uint32 (one half of a packed panel)."""

    def codegen(context, builder, sig, args):
        vals, r, k, dst = args
        va = context.make_array(sig.args[0])(context, builder, vals)
        row_stride = builder.extract_value(va.strides, 0)  # bytes
        base = builder.bitcast(va.data, ir.IntType(8).as_pointer())
        rows = []
        for i in range(16):
            off = builder.add(builder.mul(builder.add(r, ir.Constant(_I64, i)), row_stride), builder.mul(k, ir.Constant(_I64, 4)))
            v = _load(builder, builder.gep(base, [off]), _vec(ir.FloatType(), 32))
            rows.append(builder.bitcast(_bf16_bits(builder, v), _vec(_I32, 16)))  # (lo = even k, hi = odd k)
        cols = _transpose16(builder, rows)
        pd = _ptr(context, builder, sig.args[3], dst, builder.mul(builder.udiv(k, ir.Constant(_I64, 2)), ir.Constant(_I64, 16)))
        for t in range(16):
            builder.store(cols[t], builder.bitcast(builder.gep(pd, [ir.Constant(_I64, 16 * t)]), _vec(_I32, 16).as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(vals, r, k, dst), codegen


@njit(cache=True, _nrt=False)
def _to_bf16_row(x, dst):
    n = x.shape[0]
    for k in range(0, n - 15, 16):
        _to_bf16_16(x, k, dst)
    for k in range(n - n % 16, n):
        _to_bf16_1(x, k, dst)


@njit(cache=True)
def _activations_bf16(X, n32, K):
    """X (n, cols) f32 -> (n32, K) bf16 bits, zero padded."""
    n, cols = X.shape
    xb = np.zeros((n32, K), np.uint16)  # (n32, K)
    for i in range(n):
        _to_bf16_row(X[i], xb[i, :cols])
    return xb


@njit(cache=True)
def _panel(qt, w, p, cols, xb, out, vals, packed, c):
    """Weight rows 32p .. 32p+32: dequantize into vals (32, K) (zero past cols), pack as bf16
    pairs into packed (2, K/2, 16), multiply with all of xb. The tiles are stored into c
    (n32, 32), a small scratch that stays in cache, then copied to out's columns: tile stores
    straight into a large out cost twice as much (write-allocate)."""
    n = out.shape[0]
    K = vals.shape[1]
    r0 = p * 32
    nr = min(w.shape[0], r0 + 32) - r0
    for j in range(nr):
        row_dequantize(qt, w[r0 + j], vals[j, :cols])
    for k in range(0, K, 32):
        _pack_16x32(vals, 0, k, packed[0])
        _pack_16x32(vals, 16, k, packed[1])
    tile_panel(xb, packed, c, 0, K // 32)
    for i in range(n):
        for j in range(nr):
            out[i, r0 + j] = c[i, j]


@njit(cache=True)
def _panels(qt, w, counter, cols, K, xb, out):
    """One thread's share: panels claimed one at a time, on scratch of its own (allocating
    and zeroing it per panel, 256 KB for K = 2048, cost half of a 128-row product)."""
    vals = np.zeros((32, K), np.float32)  # (32, K) a panel's rows, zero past cols
    packed = np.empty((2, K // 2, 16), np.uint32)  # (half, k/2, row in half) bf16 pairs
    c = np.empty((xb.shape[0], 32), np.float32)  # (n32, 32)
    n_panels = (w.shape[0] + 31) // 32
    p = claim(counter)
    while p < n_panels:
        _panel(qt, w, p, cols, xb, out, vals, packed, c)
        p = claim(counter)


def matmul_amx(qt: int, w: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """out (n, rows) = X (n, cols) @ W.T with W (rows, row_bytes) of type qt, on AMX tiles,
    on the calling thread's Numba thread count."""
    _matmul_amx(qt, w, X, out, numba.get_num_threads())


@njit(cache=True, parallel=True)
def _matmul_amx(qt, w, X, out, n_threads):
    """matmul_amx's compiled body. (The parallel region holds only calls: Numba compiles array
    code inside one slowly.)"""
    n, cols = X.shape
    K = (cols + 31) // 32 * 32
    n32 = (n + 31) // 32 * 32
    xb = _activations_bf16(X, n32, K)
    counter = np.zeros(1, np.int64)
    # One claimer per thread, the count an argument: a module-level constant would be frozen into the cached
    # machine code (a process that compiled it with NUMBA_NUM_THREADS=1 left every later one on one thread), and
    # numba.get_num_threads() called in here makes the function uncacheable.
    for _ in prange(n_threads):
        _panels(qt, w, counter, cols, K, xb, out)
