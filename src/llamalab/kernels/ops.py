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


@njit(cache=True, fastmath=True, error_model="numpy")
def attend_query(qh, k, v, n_pos, out, sc):
    """One head's query over positions 0 .. n_pos-1: out (hd,) = softmax(qh·k / sqrt(hd)) · v.

    qh: (hd,); k, v: (n_ctx, hd) of the query's kv head; sc: (>= n_pos,) scratch.
    """
    hd = qh.size
    scale = np.float32(1.0 / math.sqrt(hd))
    m = np.float32(-np.inf)
    for s in range(n_pos):
        d = np.float32(0.0)
        for i in range(hd):
            d += qh[i] * k[s, i]
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
            out[i] += p * v[s, i]


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
    v: (n_ctx, hd) its values; out: (T, H*hd); sc: (8, S16) scratch. Accumulators are
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
            vv = _vload(v, s * hd + c)
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

    q: (T, H, hd); kc, vc: (KVH, n_ctx, hd), one layer of the cache, written up to start + T;
    out: (T, H * hd). Query head h reads kv head h // (H // KVH).
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
                    kt[g, s // 16, i, s % 16] = kc[g, s, i]
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
    """gate = gelu_tanh(gate) * up, in place (Gemma's FFN; ggml_gelu's tanh form)."""
    for i in range(gate.size):
        g = gate[i]
        gate[i] = np.float32(0.5) * g * (np.float32(1.0) + np.tanh(GELU_C * (g + np.float32(0.044715) * g * g * g))) * up[i]


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


# ----------------------------------------------------------------------------- grouped-query decode
def _make_f16_to_f32(n: int):
    @intrinsic
    def f16_to_f32(typingctx, src, off, dst):
        """dst[0:n] = float32(src[off:off+n]), src holding f16 bit patterns (uint16)."""

        def codegen(context, builder, sig, args):
            from .simd import _I16, _half_to_float

            src, off, dst = args
            bits = _load(builder, _ptr(context, builder, sig.args[0], src, off), _vec(_I16, n))
            pd = _ptr(context, builder, sig.args[2], dst, ir.Constant(ir.IntType(64), 0))
            builder.store(_half_to_float(builder, bits), builder.bitcast(pd, _vec(_F32, n).as_pointer()), align=4)
            return context.get_dummy_value()

        return types.none(src, off, dst), codegen

    return f16_to_f32


_f16_to_f32_16, _f16_to_f32_1 = _make_f16_to_f32(16), _make_f16_to_f32(1)


@njit(cache=True, _nrt=False)
def _f16_row(k, s, row):
    """row (hd,) f32 = k[s] (hd,) of f16 bits."""
    hd = row.shape[0]
    base = s * k.shape[1]
    flat = k.reshape(-1)
    for i in range(0, hd - 15, 16):
        _f16_to_f32_16(flat, base + i, row[i:])
    for i in range(hd - hd % 16, hd):
        _f16_to_f32_1(flat, base + i, row[i:])


def _kv_row(k, s, buf):
    """Row s of a cache as float32: k[s] itself, or (f16 bits) widened into buf."""


@overload(_kv_row)
def _kv_row_impl(k, s, buf):
    if k.dtype == types.uint16:
        def impl(k, s, buf):
            _f16_row(k, s, buf)
            return buf
    else:
        def impl(k, s, buf):
            return k[s]
    return impl


@njit(cache=True, fastmath=True, error_model="numpy")
def _attend_group_core(qg, k, v, n_pos, out, sc, krow, vrow):
    G, hd = qg.shape
    scale = np.float32(1.0 / math.sqrt(hd))
    m = np.full(G, -np.inf, np.float32)
    for s in range(n_pos):  # each key row read once for the G queries
        kr = _kv_row(k, s, krow)
        for j in range(G):
            d = np.float32(0.0)
            for i in range(hd):
                d += qg[j, i] * kr[i]
            d *= scale
            sc[j, s] = d
            m[j] = max(m[j], d)
    for j in range(G):
        total = np.float32(0.0)
        for s in range(n_pos):
            e = exp(sc[j, s] - m[j])
            sc[j, s] = e
            total += e
        inv = np.float32(1.0) / total
        for s in range(n_pos):
            sc[j, s] *= inv
    out[:, :] = 0.0
    for s in range(n_pos):  # each value row read once
        vr = _kv_row(v, s, vrow)
        for j in range(G):
            p = sc[j, s]
            for i in range(hd):
                out[j, i] += p * vr[i]


@njit(cache=True, fastmath=True, error_model="numpy")
def attend_group(qg, k, v, n_pos, out, sc):
    """Grouped-query attention for one decode token: the G query heads that share one kv head,
    out[j] (hd,) = softmax(qg[j] . k[:n_pos] / sqrt(hd)) . v[:n_pos], reading each key and value
    row once for all G (the per-head loop reads them G times).

    qg: (G, hd) f32; k, v: (n_ctx, hd) float32; out: (G, hd) f32; sc: (G, >= n_pos) f32 scratch.
    For an f16 cache pass k.view(np.uint16), v.view(np.uint16) to ``attend_group_f16``.
    """
    _attend_group_core(qg, k, v, n_pos, out, sc, out[0], out[0])


@njit(cache=True, fastmath=True, error_model="numpy")
def attend_group_f16(qg, k, v, n_pos, out, sc, krow, vrow):
    """``attend_group`` over an f16 cache: k, v (n_ctx, hd) uint16 (f16 bit patterns, e.g.
    ``k16.view(np.uint16)``), each row widened once into krow, vrow (hd,) f32 scratch."""
    _attend_group_core(qg, k, v, n_pos, out, sc, krow, vrow)
