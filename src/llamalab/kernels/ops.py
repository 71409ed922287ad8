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
from numba.extending import intrinsic

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


@njit(cache=True, fastmath=True, error_model="numpy")
def _attend4(q, t0, h, k, v, start, out, sc):
    """Queries t0 .. t0+3 of head h (positions start + t) over the cache rows k, v (n_ctx, hd)
    of their kv head, causally; out (T, H*hd). Each row of k and v is loaded once for the
    four queries. sc: (4, >= start + t0 + 4) scratch."""
    hd = k.shape[1]
    n = start + t0 + 4  # positions the last of the four sees
    scale = np.float32(1.0 / math.sqrt(hd))
    q0, q1, q2, q3 = q[t0, h], q[t0 + 1, h], q[t0 + 2, h], q[t0 + 3, h]
    tops = np.full(4, -np.inf, np.float32)  # running max of each query's visible scores
    for s in range(n):
        d0 = d1 = d2 = d3 = np.float32(0.0)
        for i in range(hd):
            kv = k[s, i]
            d0 += q0[i] * kv
            d1 += q1[i] * kv
            d2 += q2[i] * kv
            d3 += q3[i] * kv
        d0, d1, d2, d3 = d0 * scale, d1 * scale, d2 * scale, d3 * scale
        sc[0, s], sc[1, s], sc[2, s], sc[3, s] = d0, d1, d2, d3
        last = s - start - t0  # query j sees s when last <= j
        tops[0] = max(tops[0], d0) if last <= 0 else tops[0]
        tops[1] = max(tops[1], d1) if last <= 1 else tops[1]
        tops[2] = max(tops[2], d2) if last <= 2 else tops[2]
        tops[3] = max(tops[3], d3)
    for j in range(4):
        m = start + t0 + j + 1  # query j sees positions < m
        row, top = sc[j], tops[j]
        total = np.float32(0.0)
        for s in range(m):
            e = exp(row[s] - top)
            row[s] = e
            total += e
        inv = np.float32(1.0) / total
        for s in range(m):
            row[s] *= inv
        for s in range(m, n):
            row[s] = 0.0
    acc = np.zeros((4, hd), np.float32)  # (query, hd): contiguous, so the loop below vectorizes
    for s in range(n):
        p0, p1, p2, p3 = sc[0, s], sc[1, s], sc[2, s], sc[3, s]
        for i in range(hd):
            vv = v[s, i]
            acc[0, i] += p0 * vv
            acc[1, i] += p1 * vv
            acc[2, i] += p2 * vv
            acc[3, i] += p3 * vv
    for j in range(4):
        out[t0 + j, h * hd : (h + 1) * hd] = acc[j]


QUERY_BLOCK = 16  # queries per parallel work item (a multiple of 4)


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def causal_attention(q, kc, vc, start, out):
    """T new queries over the cache: query t (position start + t) sees positions 0 .. start + t.

    q: (T, H, hd); kc, vc: (KVH, n_ctx, hd), one layer of the cache, written up to start + T;
    out: (T, H * hd). Query head h reads kv head h // (H // KVH).
    """
    T, H, hd = q.shape
    group = H // kc.shape[0]
    blocks = (T + QUERY_BLOCK - 1) // QUERY_BLOCK
    for item in prange(H * blocks):  # head-major: every thread gets the same mix of short and long rows
        h, b = item // blocks, item % blocks
        t0, t1 = b * QUERY_BLOCK, min(T, (b + 1) * QUERY_BLOCK)
        k, v = kc[h // group], vc[h // group]
        sc = np.empty((4, start + t1), np.float32)  # (4 queries, positions)
        t = t0
        while t + 4 <= t1:
            _attend4(q, t, h, k, v, start, out, sc)
            t += 4
        for t in range(t, t1):
            attend_query(q[t, h], k, v, start + t + 1, out[t, h * hd : (h + 1) * hd], sc[0])
