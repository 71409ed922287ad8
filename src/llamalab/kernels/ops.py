"""The non-matmul layer ops in compiled form: RMSNorm, RoPE, SwiGLU and attention.

Row functions (one token) serve the compiled decode step (``decode.py``); the batched
forms run a whole prefill chunk in one parallel pass each, where the NumPy reference
(``model.py``) makes several passes over (T, dim) arrays and materializes the masked
(heads, T, S) attention scores.

``exp`` is a polynomial that LLVM vectorizes (libm's ``expf`` stays scalar: 14 ns per
call against 0.8 ns here, and the softmax of a 512-token prefill takes 35 M of them).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .simd import F16, _F32, _broadcast, _fma, _llvm_fn, _load, _ptr, _vec

_LOG2E, _LN2 = np.float32(1.4426950408889634), np.float32(0.6931471805599453)


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits``."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=True)
def exp(x):
    """e**x for float32 x: 2**k * e**f, k = trunc(x log2 e), |f| < ln 2, degree-8 Taylor series.
    Relative error below 5e-6 (from rounding x log2 e); clamped to [-87, 88]."""
    t = min(max(x, np.float32(-87.0)), np.float32(88.0)) * _LOG2E
    k = np.int32(t)  # truncation vectorizes (vcvttps2dq); floor does not
    f = (t - np.float32(k)) * _LN2
    p = np.float32(1.0) + f * (np.float32(1.0) + f * (np.float32(1 / 2) + f * (np.float32(1 / 6) + f * (
        np.float32(1 / 24) + f * (np.float32(1 / 120) + f * (np.float32(1 / 720) + f * (
            np.float32(1 / 5040) + f * np.float32(1 / 40320))))))))
    return p * _f32_from_bits((k + np.int32(127)) << np.int32(23))


# ----------------------------------------------------------------------------- vector registers
@intrinsic
def _vload(typingctx, arr, i):
    """arr.flat[i : i + 16] of a C-contiguous float32 array, as one vector register."""

    def codegen(context, builder, sig, args):
        return _load(builder, _ptr(context, builder, sig.args[0], args[0], args[1]), _vec(_F32, 16))

    return F16(arr, i), codegen


@intrinsic
def _vstore(typingctx, arr, i, v):
    """arr.flat[i : i + 16] = v."""

    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], args[1], _vec(_F32, 16))
        builder.store(args[2], p, align=4)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def _vfma(typingctx, acc, a, v):
    """acc + a * v for a float32 scalar a (broadcast) and vectors acc, v."""

    def codegen(context, builder, sig, args):
        return _fma(builder, _broadcast(builder, args[1], 16), args[2], args[0])

    return F16(acc, types.float32, v), codegen


@intrinsic
def _vmax(typingctx, a, b):
    """Lane-wise max of two vectors."""

    def codegen(context, builder, sig, args):
        fn = _llvm_fn(builder, "llvm.maxnum.v16f32", args[0].type, [args[0].type] * 2)
        return builder.call(fn, args)

    return F16(a, b), codegen


@intrinsic
def _vsplat(typingctx, a):
    def codegen(context, builder, sig, args):
        return _broadcast(builder, args[0], 16)

    return F16(types.float32), codegen


@intrinsic
def _hmax(typingctx, v):
    """The largest lane."""

    def codegen(context, builder, sig, args):
        fn = _llvm_fn(builder, "llvm.vector.reduce.fmax.v16f32", _F32, [args[0].type])
        return builder.call(fn, args)

    return types.float32(v), codegen


@intrinsic
def _vscale(typingctx, v, a):
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], _broadcast(builder, args[1], 16))

    return F16(v, types.float32), codegen


# ----------------------------------------------------------------------------- rows (one token)
@njit(cache=True, fastmath=True, error_model="numpy")
def rms_norm_row(x, w, eps, out):
    """out (dim,) = x / rms(x) * w."""
    ss = np.float32(0.0)
    for i in range(x.size):
        ss += x[i] * x[i]
    inv = np.float32(1.0) / np.sqrt(ss / x.size + eps)
    for i in range(x.size):
        out[i] = x[i] * inv * w[i]


@njit(cache=True, fastmath=True, error_model="numpy")
def rope_row(v, n_heads, head_dim, cos, sin):
    """Rotate adjacent pairs of every head of v (n_heads*head_dim,) by one position's angles (n_rot/2,)."""
    half = cos.size
    for h in range(n_heads):
        base = h * head_dim
        for i in range(half):
            a = v[base + 2 * i]
            b = v[base + 2 * i + 1]
            v[base + 2 * i] = a * cos[i] - b * sin[i]
            v[base + 2 * i + 1] = a * sin[i] + b * cos[i]


@njit(cache=True, fastmath=True, error_model="numpy")
def swiglu_row(gate, up):
    """gate = silu(gate) * up, in place."""
    for i in range(gate.size):
        g = gate[i]
        gate[i] = g / (np.float32(1.0) + exp(-g)) * up[i]


@njit(inline="always", fastmath=True)
def _max_row(x):
    """max(x) of a C-contiguous float32 vector, skipping NaN (maxnum); -inf when empty."""
    n = x.size
    m = np.float32(-np.inf)
    full = n - n % 64
    if full:  # four vectors in flight: one maximum chain waits on each vmaxps
        m0, m1, m2, m3 = _vload(x, 0), _vload(x, 16), _vload(x, 32), _vload(x, 48)
        for i in range(64, full, 64):
            m0, m1 = _vmax(m0, _vload(x, i)), _vmax(m1, _vload(x, i + 16))
            m2, m3 = _vmax(m2, _vload(x, i + 32)), _vmax(m3, _vload(x, i + 48))
        m = _hmax(_vmax(_vmax(m0, m1), _vmax(m2, m3)))
    for i in range(full, n):
        m = max(m, x[i])
    return m


_LSE_BLOCK = 256  # exp terms summed in float32 before they join the float64 total


@njit(cache=True, fastmath=True, error_model="numpy")
def logsumexp_row(x):
    """log(sum(exp(x))) of a C-contiguous float32 vector x (n,), as a float64; NaN when max(x) is
    not finite (all -inf, a +inf or a NaN: no distribution).

    Why compiled: the generator needs it once a token (a token's reported logprob is
    x[t] - logsumexp(x)), and right after a decode step has streamed the weights through the
    caches NumPy's max, subtract, exp and sum took 58-92 us at a 32k vocabulary on the Intel AMX
    host (2 and 1 threads), this one call 22-26 (15-17 with the caches warm, NumPy's 27). The
    max runs 64 lanes at a time, the exp terms (``exp``: relative error below 5e-6, only for
    terms far below the max, which weigh little) sum in float32 blocks of 256 and the blocks in
    float64: within 3e-7 of the float64 reference (tests/test_generate_logprobs.py)."""
    n = x.size
    m = _max_row(x)
    nan = False  # maxnum skips a NaN, and fastmath code may assume there is none: look at the bits
    for i in range(n):
        nan |= (_f32_bits(x[i]) & 0x7FFFFFFF) > 0x7F800000
    if nan or (_f32_bits(m) & 0x7FFFFFFF) >= 0x7F800000:
        return np.nan
    total = 0.0
    blocks = n - n % _LSE_BLOCK
    for s in range(0, blocks, _LSE_BLOCK):
        acc = np.float32(0.0)
        for i in range(_LSE_BLOCK):  # a fixed trip count: LLVM vectorizes it (a min() bound: half the speed)
            acc += exp(x[s + i] - m)
        total += acc
    acc = np.float32(0.0)
    for i in range(blocks, n):
        acc += exp(x[i] - m)
    total += acc
    return m + math.log(total)


@njit(cache=True, fastmath=True, error_model="numpy")
def attend_query(qh, k, v, n_pos, out, sc):
    """One head's query over positions 0 .. n_pos-1: out (hd,) = softmax(qh·k / sqrt(hd)) · v.

    qh: (hd,); k, v: (n_ctx, hd) of the query's kv head, float32 or int16 (f16 bits), rows
    contiguous; sc: (>= n_pos,) scratch.
    """
    hd = qh.size
    scale = np.float32(1.0 / math.sqrt(hd))
    m = np.float32(-np.inf)
    for s in range(n_pos):
        d = np.float32(0.0)
        for i in range(hd):
            d += qh[i] * _kv_at(k, s * hd + i)
        d *= scale
        sc[s] = d
        m = max(m, d)
    total = np.float32(0.0)
    for s in range(n_pos):
        e = exp(sc[s] - m)
        sc[s] = e
        total += e
    inv = np.float32(1.0) / total
    out[:] = 0.0
    for s in range(n_pos):
        p = sc[s] * inv
        for i in range(hd):
            out[i] += p * _kv_at(v, s * hd + i)


# ----------------------------------------------------------------------------- batches (prefill)
@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def rms_norm(x, w, eps, out):
    """out (T, dim) = each row of x (T, dim) normalized, times w (dim,)."""
    for t in prange(x.shape[0]):
        rms_norm_row(x[t], w, eps, out[t])


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def rope(x, cos, sin):
    """x (T, heads, head_dim) rotated in place; cos, sin (T, n_rot/2)."""
    for t in prange(x.shape[0]):
        rope_row(x[t].reshape(-1), x.shape[1], x.shape[2], cos[t], sin[t])  # (heads*hd,) view


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def swiglu(gate, up):
    """gate (T, ffn) = silu(gate) * up, in place."""
    for t in prange(gate.shape[0]):
        swiglu_row(gate[t], up[t])


GROUP = 8  # queries that share each load of a key or value vector


@njit(cache=True, fastmath=True, error_model="numpy")
def _attend_group(q, t0, h, kt, v, start, out, sc):
    """Queries t0 .. t0+7 of head h (at positions start + t) over their kv head, causally.

    kt: (S16 / 16, hd, 16) the kv head's keys in blocks of 16 positions, each block transposed
    (one 16-position vector per dimension, contiguous), zero past the last position;
    v: (n_ctx, hd) its values (float32 or f16 bits); out: (T, H*hd); sc: (8, S16) scratch. Accumulators are
    vector registers, 16 positions (scores) or 16 dims (values) x 8 queries, so each key
    and value vector is loaded once for the eight queries.
    """
    hd = kt.shape[1]
    n = start + t0 + GROUP  # positions the last query sees
    full = (start + t0 + 1) // 16 * 16  # blocks below this are visible to every query
    scale = np.float32(1.0 / math.sqrt(hd))
    zero = _vsplat(np.float32(0.0))
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = _vsplat(np.float32(-np.inf))
    for s0 in range(0, n, 16):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        for i in range(hd):
            kv = _vload(kt, (s0 // 16 * hd + i) * 16)
            a0 = _vfma(a0, q[t0, h, i], kv)
            a1 = _vfma(a1, q[t0 + 1, h, i], kv)
            a2 = _vfma(a2, q[t0 + 2, h, i], kv)
            a3 = _vfma(a3, q[t0 + 3, h, i], kv)
            a4 = _vfma(a4, q[t0 + 4, h, i], kv)
            a5 = _vfma(a5, q[t0 + 5, h, i], kv)
            a6 = _vfma(a6, q[t0 + 6, h, i], kv)
            a7 = _vfma(a7, q[t0 + 7, h, i], kv)
        _vstore(sc[0], s0, a0)
        _vstore(sc[1], s0, a1)
        _vstore(sc[2], s0, a2)
        _vstore(sc[3], s0, a3)
        _vstore(sc[4], s0, a4)
        _vstore(sc[5], s0, a5)
        _vstore(sc[6], s0, a6)
        _vstore(sc[7], s0, a7)
        if s0 + 16 <= full:
            m0, m1, m2, m3 = _vmax(m0, a0), _vmax(m1, a1), _vmax(m2, a2), _vmax(m3, a3)
            m4, m5, m6, m7 = _vmax(m4, a4), _vmax(m5, a5), _vmax(m6, a6), _vmax(m7, a7)
    tops = (_hmax(m0), _hmax(m1), _hmax(m2), _hmax(m3), _hmax(m4), _hmax(m5), _hmax(m6), _hmax(m7))
    inv = np.empty(GROUP, np.float32)
    for j in range(GROUP):
        seen = start + t0 + j + 1  # query j sees positions < seen
        row = sc[j]
        top = tops[j]
        for s in range(full, seen):
            top = max(top, row[s])
        total = np.float32(0.0)
        for s in range(seen):
            e = exp((row[s] - top) * scale)
            row[s] = e
            total += e
        for s in range(seen, n):
            row[s] = 0.0
        inv[j] = np.float32(1.0) / total
    for c in range(0, hd, 16):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        for s in range(n):
            vv = _vload_kv(v, s * hd + c)
            a0 = _vfma(a0, sc[0, s], vv)
            a1 = _vfma(a1, sc[1, s], vv)
            a2 = _vfma(a2, sc[2, s], vv)
            a3 = _vfma(a3, sc[3, s], vv)
            a4 = _vfma(a4, sc[4, s], vv)
            a5 = _vfma(a5, sc[5, s], vv)
            a6 = _vfma(a6, sc[6, s], vv)
            a7 = _vfma(a7, sc[7, s], vv)
        o = h * hd + c
        _vstore(out[t0], o, _vscale(a0, inv[0]))
        _vstore(out[t0 + 1], o, _vscale(a1, inv[1]))
        _vstore(out[t0 + 2], o, _vscale(a2, inv[2]))
        _vstore(out[t0 + 3], o, _vscale(a3, inv[3]))
        _vstore(out[t0 + 4], o, _vscale(a4, inv[4]))
        _vstore(out[t0 + 5], o, _vscale(a5, inv[5]))
        _vstore(out[t0 + 6], o, _vscale(a6, inv[6]))
        _vstore(out[t0 + 7], o, _vscale(a7, inv[7]))


QUERY_BLOCK = 16  # queries per parallel work item (a multiple of GROUP)


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def causal_attention(q, kc, vc, start, out):
    """T new queries over the cache: query t (position start + t) sees positions 0 .. start + t.

    q: (T, H, hd); kc, vc: (KVH, n_ctx, hd), one layer of the cache (float32, or int16 holding
    f16 bits), written up to start + T; out: (T, H * hd). Query head h reads kv head h // (H // KVH).
    """
    T, H, hd = q.shape
    KVH, S = kc.shape[0], start + T
    group = H // KVH
    S16 = (S + 15) // 16 * 16
    vec = hd % 16 == 0  # whole vectors: groups of GROUP queries on vector registers
    kt = np.zeros((KVH, S16 // 16 if vec else 0, hd, 16), np.float32)  # (kv head, block, hd, position in block)
    if vec:
        for g in prange(KVH):
            for s in range(S):
                for i in range(hd):
                    kt[g, s // 16, i, s % 16] = _kv_at(kc, (g * kc.shape[1] + s) * hd + i)
    blocks = (T + QUERY_BLOCK - 1) // QUERY_BLOCK
    for item in prange(H * blocks):  # head-major: every thread gets the same mix of short and long rows
        h, b = item // blocks, item % blocks
        t0, t1 = b * QUERY_BLOCK, min(T, (b + 1) * QUERY_BLOCK)
        k, v = kc[h // group], vc[h // group]
        sc = np.empty((GROUP, S16), np.float32)  # (queries, positions)
        t = t0
        if vec:
            while t + GROUP <= t1:
                _attend_group(q, t, h, kt[h // group], v, start, out, sc)
                t += GROUP
        for t in range(t, t1):
            attend_query(q[t, h], k, v, start + t + 1, out[t, h * hd : (h + 1) * hd], sc[0])


# ----------------------------------------------------------------------------- other architectures
@njit(cache=True, fastmath=True, error_model="numpy")
def rope_row_neox(v, n_heads, head_dim, cos, sin):
    """rope_row with NEOX pairs (v[i], v[i + n_rot/2]) of every head (Qwen, Gemma, Phi)."""
    half = cos.size
    for h in range(n_heads):
        base = h * head_dim
        for i in range(half):
            a = v[base + i]
            b = v[base + i + half]
            v[base + i] = a * cos[i] - b * sin[i]
            v[base + i + half] = a * sin[i] + b * cos[i]


GELU_C = np.float32(math.sqrt(2.0 / math.pi))


@njit(cache=True, fastmath=True, error_model="numpy")
def geglu_row(gate, up):
    """gate = gelu_tanh(gate) * up, in place (Gemma's FFN; ggml_gelu's tanh form), computed as
    g / (1 + e^(-2u)) with u = sqrt(2/pi) (g + 0.044715 g^3), since 0.5 (1 + tanh u) = 1 / (1 + e^(-2u)):
    ``exp`` vectorizes, np.tanh is a libm call per value. Gemma 3 270M's 512-token prefill spent 23%
    of its time here that way (``llamalab profile``, Zen 4, 2026-12-02)."""
    for i in range(gate.size):
        g = gate[i]
        u = GELU_C * (g + np.float32(0.044715) * g * g * g)
        gate[i] = g / (np.float32(1.0) + exp(np.float32(-2.0) * u)) * up[i]


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def rope_neox(x, cos, sin):
    """x (T, heads, head_dim) rotated in place with NEOX pairs; cos, sin (T, n_rot/2)."""
    for t in prange(x.shape[0]):
        rope_row_neox(x[t].reshape(-1), x.shape[1], x.shape[2], cos[t], sin[t])


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def geglu(gate, up):
    """gate (T, ffn) = gelu_tanh(gate) * up, in place."""
    for t in prange(gate.shape[0]):
        geglu_row(gate[t], up[t])


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def windowed_attention(q, kc, vc, start, window, out):
    """causal_attention where query t (position p = start + t) sees only positions
    p - window + 1 .. p (a sliding-window layer). Shapes as in causal_attention."""
    T, H, hd = q.shape
    group = H // kc.shape[0]
    for item in prange(H * T):
        h, t = item // T, item % T
        p = start + t
        lo = max(0, p + 1 - window)
        sc = np.empty(p + 1 - lo, np.float32)
        attend_query(q[t, h], kc[h // group, lo:], vc[h // group, lo:], p + 1 - lo, out[t, h * hd : (h + 1) * hd], sc)


# ----------------------------------------------------------------------------- the KV cache's f16
# An f16 cache reaches compiled code as int16 arrays of the halves' bit patterns (Numba has no
# float16 on CPUs). Reads widen 16 lanes at once (vcvtph2ps with F16C); writes, a few hundred
# values per layer and token, round one value at a time in integer code, exactly as NumPy's
# astype(np.float16) does (round to nearest even), so the compiled step and prefill agree bit for bit.
@intrinsic
def _vload_kv(typingctx, arr, i):
    """arr.flat[i : i + 16] as 16 float32 lanes: arr float32, or int16 holding f16 bits."""
    half = arr.dtype in (types.int16, types.uint16)

    def codegen(context, builder, sig, args):
        from .simd import _I16, _half_to_float

        if half:
            return _half_to_float(builder, _load(builder, _ptr(context, builder, sig.args[0], args[0], args[1]),
                                                 _vec(_I16, 16)))
        return _load(builder, _ptr(context, builder, sig.args[0], args[0], args[1]), _vec(_F32, 16))

    return F16(arr, i), codegen


@intrinsic
def _kv_at(typingctx, arr, i):
    """arr.flat[i] as float32 (arr float32, or int16 holding f16 bits)."""
    half = arr.dtype in (types.int16, types.uint16)

    def codegen(context, builder, sig, args):
        from .simd import _half_to_float

        p = _ptr(context, builder, sig.args[0], args[0], args[1])
        return _half_to_float(builder, builder.load(p)) if half else builder.load(p)

    return types.float32(arr, i), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """The IEEE bits of the float32 x, as int32."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(inline="always")
def f16_bits(x):
    """The f16 nearest to float32 x (ties to even; overflow to inf; NaN kept), as its 16 bits
    in an int64 (0 .. 0xFFFF): numpy's astype(np.float16)."""
    b = np.int64(_f32_bits(np.float32(x))) & 0xFFFFFFFF
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    if a > 0x7F800000:  # NaN
        return sign | 0x7E00 | ((a >> 13) & 0x3FF)
    if a >= 0x477FF000:  # >= 65520 rounds past the largest f16 (65504): inf
        return sign | 0x7C00
    if a >= 0x38800000:  # a normal f16: rebias the exponent, round the 13 dropped bits
        m = a - 0x38000000
        return sign | ((m + 0xFFF + ((m >> 13) & 1)) >> 13)
    if a < 0x33000000:  # below half the smallest subnormal: zero
        return sign
    mant = (a & 0x7FFFFF) | 0x800000  # a subnormal f16: value = mant * 2**(e - 150)
    shift = 126 - (a >> 23)
    q, rem, half = mant >> shift, mant & ((1 << shift) - 1), 1 << (shift - 1)
    if rem > half or (rem == half and (q & 1)):
        q += 1
    return sign | q


def store_kv(dst, src):
    """dst (n,) = src (n,) float32: copied, or rounded to f16 bits (dst int16). Compiled code only."""


@overload(store_kv)
def _store_kv(dst, src):
    if dst.dtype == types.float32:
        def copy(dst, src):
            dst[:] = src
        return copy

    def round_f16(dst, src):
        for i in range(src.size):
            dst[i] = f16_bits(src[i])
    return round_f16
