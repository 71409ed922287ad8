"""Decode attention: one new token's queries over a layer's cache, as work items.

An item is one kv head over a chunk of ATTEND_CHUNK positions, for all G query heads that share
that kv head (grouped-query attention): each key and value row comes from memory once, and the
G queries re-read the chunk from L1. Items leave partial softmaxes (max, sum, weighted values)
that ``attend_combine`` folds in chunk order, so the threaded form (``parallel.attend_rows``,
items shared with the matvec pool's workers) gives the same bits with any thread count, and
threads help from a few hundred positions on (where one item per kv head left a core idle, and
OpenMP's launch cost more than the work below ~1,000 positions).

The cache is float32 or f16 (int16 bit patterns, widened 16 lanes at a time: ops._vload_kv).
Scores take 16 positions at a time, summed across lanes together (_reduce16); keys and values
ahead are prefetched, since a single thread otherwise waits on each miss.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .floats import add16
from .ops import _kv_at, _vfma, _vload, _vload_kv, _vsplat, _vstore, exp
from .simd import F16, _fma, _idx, _ptr


@intrinsic
def _vfmav(typingctx, acc, a, b):
    """acc + a * b, lane-wise, for vectors acc, a, b."""

    def codegen(context, builder, sig, args):
        return _fma(builder, args[1], args[2], args[0])

    return F16(acc, a, b), codegen


@intrinsic
def _hsum(typingctx, v):
    """The sum of the 16 lanes (fixed pairwise order)."""

    def codegen(context, builder, sig, args):
        from .simd import _fold8, _hsum8

        return _hsum8(builder, _fold8(builder, args[0]))

    return types.float32(v), codegen


ATTEND_CHUNK = 128  # positions per work item of decode attention (16 KiB of f16 keys at hd 64)


@intrinsic
def _vmul(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])

    return F16(a, b), codegen


def _combine(builder, x, y, g):
    """x, y hold 16 / g groups of g lanes (partial sums of one value each) -> one vector of
    groups of g / 2 lanes, x's values then y's: halves of each group added."""
    h = g // 2
    first = [grp * g + i for grp in range(16 // g) for i in range(h)]
    second = [grp * g + h + i for grp in range(16 // g) for i in range(h)]
    a = builder.shuffle_vector(x, y, _idx(first + [16 + i for i in first]))
    b = builder.shuffle_vector(x, y, _idx(second + [16 + i for i in second]))
    return builder.fadd(a, b)


@intrinsic
def _reduce16(typingctx, t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15):
    """The 16 lane sums of t0 .. t15, as lanes 0 .. 15 of one vector: 15 shuffle-and-add steps
    for 16 dot products, where one horizontal sum each takes 4."""

    def codegen(context, builder, sig, args):
        vs, g = list(args), 16
        while len(vs) > 1:
            vs = [_combine(builder, vs[i], vs[i + 1], g) for i in range(0, len(vs), 2)]
            g //= 2
        return vs[0]

    return F16(*([F16] * 16)), codegen


@intrinsic
def _prefetch_at(typingctx, arr, i):
    """Hint: arr.flat[i] (any address: a prefetch never faults) will be read soon."""

    def codegen(context, builder, sig, args):
        from .simd import _I8, _prefetch

        _prefetch(builder, _ptr(context, builder, sig.args[0], args[0], args[1], _I8), 0)
        return context.get_dummy_value()

    return types.none(arr, i), codegen


PREFETCH_AHEAD = 3072  # bytes: as for the weights (simd.PREFETCH_BYTES), streaming keys and values


@njit(inline="always")
def _prefetch_rows(k, v, i, n):
    """Prefetch PREFETCH_AHEAD bytes past k.flat[i : i + n] and v.flat[i : i + n], a line at a time."""
    step = 64 // k.itemsize
    ahead = PREFETCH_AHEAD // k.itemsize
    for m in range(0, n, step):
        _prefetch_at(k, i + ahead + m)
        _prefetch_at(v, i + ahead + m)


@njit(inline="always", fastmath=True)
def _t(q0, q1, q2, q3, k, i, wide):
    """Lane partials of q . k.flat[i : i + 64] (wide) or of q0 . k.flat[i : i + 16]."""
    if wide:
        a = _vfmav(_vmul(q0, _vload_kv(k, i)), q1, _vload_kv(k, i + 16))
        b = _vfmav(_vmul(q2, _vload_kv(k, i + 32)), q3, _vload_kv(k, i + 48))
        return add16(a, b)
    return _vmul(q0, _vload_kv(k, i))


@njit(cache=True, fastmath=True, error_model="numpy")
def _scores(qj, k, v, a, b, scale, sc, fetch):
    """sc[s - a] = qj . k[s] * scale for s in a .. b-1; returns their max. qj (hd,) f32, k, v (n_ctx, hd).

    Dimensions go in blocks of 64 (then 16) held in registers; 16 positions at a time are summed
    across lanes together (_reduce16), and each block's sums are added into sc. With fetch (the
    first query of a chunk) the keys and values ahead are prefetched: single-thread reads from
    memory otherwise wait on each miss, and this loop is as much compute as memory."""
    hd = qj.size
    if hd % 16 == 0:
        c = 0
        while c < hd:
            wide = c + 64 <= hd
            q0 = _vload(qj, c)
            q1 = q2 = q3 = q0
            if wide:
                q1, q2, q3 = _vload(qj, c + 16), _vload(qj, c + 32), _vload(qj, c + 48)
            s = a
            while s + 16 <= b:
                i = s * hd + c
                if fetch and c == 0:
                    _prefetch_rows(k, v, i, 16 * hd)
                r = _reduce16(_t(q0, q1, q2, q3, k, i, wide), _t(q0, q1, q2, q3, k, i + hd, wide),
                              _t(q0, q1, q2, q3, k, i + 2 * hd, wide), _t(q0, q1, q2, q3, k, i + 3 * hd, wide),
                              _t(q0, q1, q2, q3, k, i + 4 * hd, wide), _t(q0, q1, q2, q3, k, i + 5 * hd, wide),
                              _t(q0, q1, q2, q3, k, i + 6 * hd, wide), _t(q0, q1, q2, q3, k, i + 7 * hd, wide),
                              _t(q0, q1, q2, q3, k, i + 8 * hd, wide), _t(q0, q1, q2, q3, k, i + 9 * hd, wide),
                              _t(q0, q1, q2, q3, k, i + 10 * hd, wide), _t(q0, q1, q2, q3, k, i + 11 * hd, wide),
                              _t(q0, q1, q2, q3, k, i + 12 * hd, wide), _t(q0, q1, q2, q3, k, i + 13 * hd, wide),
                              _t(q0, q1, q2, q3, k, i + 14 * hd, wide), _t(q0, q1, q2, q3, k, i + 15 * hd, wide))
                _vstore(sc, s - a, r if c == 0 else add16(_vload(sc, s - a), r))
                s += 16
            while s < b:
                d = _hsum(_t(q0, q1, q2, q3, k, s * hd + c, wide))
                sc[s - a] = d if c == 0 else sc[s - a] + d
                s += 1
            c += 64 if wide else 16
    else:
        for s in range(a, b):
            d = np.float32(0.0)
            for i in range(hd):
                d += qj[i] * _kv_at(k, s * hd + i)
            sc[s - a] = d
    top = np.float32(-np.inf)
    for s in range(b - a):
        sc[s] *= scale
        top = max(top, sc[s])
    return top


@njit(cache=True, fastmath=True, error_model="numpy")
def _weighted_values(p, v, a, b, out):
    """out (hd,) = sum over s in a .. b-1 of p[s - a] * v[s]."""
    hd = out.size
    if hd % 16 == 0:
        zero = _vsplat(np.float32(0.0))
        c = 0
        while c + 64 <= hd:
            a0 = a1 = a2 = a3 = zero
            for s in range(a, b):
                w, base = p[s - a], s * hd + c
                a0 = _vfma(a0, w, _vload_kv(v, base))
                a1 = _vfma(a1, w, _vload_kv(v, base + 16))
                a2 = _vfma(a2, w, _vload_kv(v, base + 32))
                a3 = _vfma(a3, w, _vload_kv(v, base + 48))
            _vstore(out, c, a0)
            _vstore(out, c + 16, a1)
            _vstore(out, c + 32, a2)
            _vstore(out, c + 48, a3)
            c += 64
        while c < hd:
            a0 = a1 = zero
            s = a
            while s + 1 < b:  # two chains: an FMA's latency is hidden behind the other's
                a0 = _vfma(a0, p[s - a], _vload_kv(v, s * hd + c))
                a1 = _vfma(a1, p[s + 1 - a], _vload_kv(v, (s + 1) * hd + c))
                s += 2
            if s < b:
                a0 = _vfma(a0, p[s - a], _vload_kv(v, s * hd + c))
            _vstore(out, c, add16(a0, a1))
            c += 16
    else:
        out[:] = 0.0
        for s in range(a, b):
            for i in range(hd):
                out[i] += p[s - a] * _kv_at(v, s * hd + i)


@njit(cache=True, fastmath=True, error_model="numpy")
def attend_item(c, n_chunks, q, kc, vc, lo, n_pos, po, pml, sc):
    """Work item c of one token's attention over positions lo .. n_pos-1 of one layer: kv head
    g = c // n_chunks, positions a .. b-1 of its chunk c % n_chunks, for the G query heads that
    read it. Each key and value row comes from memory once (the G queries re-read the chunk from
    L1). Leaves per query j the unnormalized partial softmax: pml[c, j] = (max score m, sum of
    exp(score - m)), po[c, j] = sum of exp(score - m) * value, for ``attend_combine``.

    q: (H*hd,) f32; kc, vc: (KVH, n_ctx, hd) float32 or int16 (f16 bits); po: (items, G, hd),
    pml: (items, G, 2), sc: (items, ATTEND_CHUNK) f32 scratch (items = KVH * n_chunks).
    """
    KVH, hd = kc.shape[0], kc.shape[2]
    G = q.size // hd // KVH
    g, a = c // n_chunks, lo + c % n_chunks * ATTEND_CHUNK
    b = min(n_pos, a + ATTEND_CHUNK)
    scale = np.float32(1.0 / math.sqrt(hd))
    p = sc[c]
    for j in range(G):
        h = g * G + j
        top = _scores(q[h * hd : (h + 1) * hd], kc[g], vc[g], a, b, scale, p, j == 0)
        total = np.float32(0.0)
        for s in range(b - a):
            e = exp(p[s] - top)
            p[s] = e
            total += e
        _weighted_values(p, vc[g], a, b, po[c, j])
        pml[c, j, 0] = top
        pml[c, j, 1] = total


@njit(cache=True, fastmath=True, error_model="numpy")
def attend_combine(n_chunks, po, pml, out):
    """out (H*hd,) from the items' partial softmaxes (attend_item): per query head, the chunks
    rescaled to the largest max, summed in chunk order (the same with any number of threads)."""
    items, G, hd = po.shape
    KVH = items // n_chunks
    for g in range(KVH):
        for j in range(G):
            o = out[(g * G + j) * hd : (g * G + j + 1) * hd]
            top = np.float32(-np.inf)
            for c in range(g * n_chunks, (g + 1) * n_chunks):
                top = max(top, pml[c, j, 0])
            total = np.float32(0.0)
            o[:] = 0.0
            for c in range(g * n_chunks, (g + 1) * n_chunks):
                w = exp(pml[c, j, 0] - top)
                total += w * pml[c, j, 1]
                for i in range(hd):
                    o[i] += w * po[c, j, i]
            inv = np.float32(1.0) / total
            for i in range(hd):
                o[i] *= inv


@njit(cache=True)
def attend_chunks(lo, n_pos):
    """Chunks of ATTEND_CHUNK positions that cover lo .. n_pos-1."""
    return (n_pos - lo + ATTEND_CHUNK - 1) // ATTEND_CHUNK
