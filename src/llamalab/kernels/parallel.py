"""The threaded entry points; each is one compiled call (also from compiled model code).

The decode-step products (``matvec_rows``, ``matvec3_rows``: ~120 per token) share their rows
with the workers of ``pool`` (the caller from the front, workers from the back, each streaming
contiguous weights; see pool.py for why not OpenMP). A job is cut into units of UNIT_BYTES of
rows, and each thread claims runs of units, a quarter of those left at 2 threads (at most
MAX_CLAIM_BYTES): few claims while much is left, single units where the two ends meet. A claim
is an atomic on a cache line both cores write: fixed 64 KiB chunks ran 10-20% under this from
memory at 2 threads (``kernels_bench.py --only stream --formats F32 F16 Q4_K --threads 2``, Intel
AMX host, 2026-12-03: F32 28.5-33.1 against 31.6-35.7 GB/s, F16 24.0-29.1 against 24.5-31.1,
Q4_K 22.2-24.6 against 24.9-29.1).
The batched products run ``prange`` regions over chunks of rows (``CHUNKS_PER_WEIGHT`` per
weight, each between ``MIN_CHUNK_BYTES`` and ``MAX_CHUNK_BYTES``), whose bodies hold only
calls (array code inside a parallel function makes Numba's parfor passes, and so the first
compile, several times slower).
x's activation (activation.py) is made once, before the work is shared. Arguments always arrive with fixed types (int64
codes, read-only uint8 C arrays, float32 C arrays): each function compiles once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import pool
from .activation import HALF_META, META_PER_BLOCK, QBLOCK, halve_x, quantize_x
from .attention import ATTEND_CHUNK, attend_chunks, attend_combine, attend_item
from .rows import BLOCK_ACTIVATION, HALF_ACTIVATION, NO_ACTIVATION, activation_kind, dot_rows, dot_rows_many, row_dequantize

CHUNKS_PER_WEIGHT = 16
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 8192, 65536  # batched products' prange chunks
# decode products: runs of whole units claimed at a time (pool.claim), at most MAX_CLAIM_BYTES of
# weights, so that a run takes well under pool.STALL_CYCLES (a late worker is not taken for a stalled one)
UNIT_BYTES, MAX_CLAIM_BYTES = 8192, 1 << 20


@njit(cache=True)
def _activations(X, kind):
    """(xq, xm) for each row of X (n, cols): the block or half activation (rows.activation_kind),
    (n, cols) int16 and (n, 39 nb) or (n, 1) float32, or arrays of (n, 0)."""
    n, cols = X.shape
    m = cols if kind != NO_ACTIVATION else 0
    xq = np.empty((n, m), np.int16)  # (n, cols)
    xm = np.empty((n, m // QBLOCK * META_PER_BLOCK if kind == BLOCK_ACTIVATION else HALF_META if kind == HALF_ACTIVATION else 0),
                  np.float32)
    for i in range(n):
        if kind == BLOCK_ACTIVATION:
            quantize_x(X[i], xq[i], xm[i])
        elif kind == HALF_ACTIVATION:
            halve_x(X[i], xq[i], xm[i])
    return xq, xm


@njit(cache=True)
def _activation(x, kind):
    """(xq, xm) for x: the block or half activation (rows.activation_kind), or empty arrays."""
    xq, xm = _activations(x.reshape((1, x.shape[0])), kind)
    return xq[0], xm[0]


@njit(cache=True)
def _rows_for(w, size):
    """Rows of weight w (rows, row_bytes) in about size bytes, at least one; rows over a quarter of
    size go four together where the weight has rows enough: long F16/BF16 rows are read four per
    pass (floats._make_dot4)."""
    rows = max(1, size // max(1, w.shape[1]))
    return 4 if rows < 4 and w.shape[0] >= 4 * CHUNKS_PER_WEIGHT else rows


@njit(cache=True)
def _chunk_rows(w):
    """Rows per chunk of a batched product's prange: CHUNKS_PER_WEIGHT per weight, within MIN_CHUNK_BYTES
    .. MAX_CHUNK_BYTES."""
    size = w.shape[0] * max(1, w.shape[1]) // CHUNKS_PER_WEIGHT
    return _rows_for(w, min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, size)))


@njit(cache=True)
def _unit_rows(w):
    """Rows per unit of a decode product's job: the smallest run a thread claims."""
    return _rows_for(w, UNIT_BYTES)


@njit(cache=True, _nrt=False)
def _run(a, b, qt, w, out, s, lo, n, x, xq, xm):
    """The units of [a, b) that fall in this weight's n units of s rows, lo .. lo + n - 1."""
    a, b = max(a, lo), min(b, lo + n)
    if a < b:
        dot_rows(qt, w, (a - lo) * s, min(w.shape[0], (b - lo) * s), x, xq, xm, out)


@njit(cache=True, _nrt=False)
def _units(a, b, qt0, w0, out0, s0, n0, qt1, w1, out1, s1, n1, qt2, w2, out2, s2, n2, x, xq, xm):
    """Units [a, b) of a fused matvec: weight 0's n0 units of s0 rows, then weight 1's, then weight 2's."""
    _run(a, b, qt0, w0, out0, s0, 0, n0, x, xq, xm)
    _run(a, b, qt1, w1, out1, s1, n0, n1, x, xq, xm)
    _run(a, b, qt2, w2, out2, s2, n0 + n1, n2, x, xq, xm)


# The job as the workers read it (pool.ARGS + ...): per weight slot i, at 7 i:
# type code, weight address, rows, row bytes, output address, rows per unit, units;
# then x, xq, xm as (address, length) pairs from 21 on, and the claim's divisor and cap (pool.claim).
# The last slot says which kind of job is open: a matvec, or decode attention (attend_rows, its own
# layout from 0 on).
_SLOT, _X, _DIV, _CAP = 7, 21, 27, 28
_KIND = pool.N_ARGS - 1
MATVEC_JOB, ATTEND_JOB = 0, 1


@njit(cache=True, _nrt=False)
def _publish_slot(i, qt, w, out, step, n):
    base = pool.ARGS + _SLOT * i
    pool.store(base, qt)
    pool.store(base + 1, pool.address(w))
    pool.store(base + 2, w.shape[0])
    pool.store(base + 3, w.shape[1])
    pool.store(base + 4, pool.address(out))
    pool.store(base + 5, step)
    pool.store(base + 6, n)


@njit(cache=True, _nrt=False)
def _slot_args(i):
    """(type code, weight, output, rows per unit, units) of slot i of the open job."""
    base = pool.ARGS + _SLOT * i
    rows = pool.load(base + 2)
    w = pool.view_weights(pool.load(base + 1), rows, pool.load(base + 3))
    out = pool.view_f32(pool.load(base + 4), rows, 0)
    return pool.load(base), w, out, pool.load(base + 5), pool.load(base + 6)


@njit(cache=True, _nrt=False)
def _worker_job():
    """A worker's share of the open job, read from the shared description: runs of units
    claimed from the back (a matvec) or single items (attention)."""
    if pool.load(pool.ARGS + _KIND) == ATTEND_JOB:
        c = pool.claim_back()
        while c >= 0:
            _attend_worker_item(c)
            c = pool.claim_back()
        return
    qt0, w0, out0, s0, n0 = _slot_args(0)
    qt1, w1, out1, s1, n1 = _slot_args(1)
    qt2, w2, out2, s2, n2 = _slot_args(2)
    a = pool.ARGS + _X
    x = pool.view_f32(pool.load(a), pool.load(a + 1), 0)
    xq = pool.view_i16(pool.load(a + 2), pool.load(a + 3), 0)
    xm = pool.view_f32(pool.load(a + 4), pool.load(a + 5), 0)
    div, cap = pool.load(pool.ARGS + _DIV), pool.load(pool.ARGS + _CAP)
    first, count = pool.claim(True, div, cap)
    while count:
        _units(first, first + count, qt0, w0, out0, s0, n0, qt1, w1, out1, s1, n1, qt2, w2, out2, s2, n2, x, xq, xm)
        first, count = pool.claim(True, div, cap)


@njit(nogil=True, cache=True)
def matvec_worker(wid):
    """A pool worker's life: join open jobs, take work from the back, sleep when idle."""
    last = np.int64(0)
    spins = 0
    while pool.load(pool.STOP) == 0:
        gen = pool.join(wid, last)
        if gen != 0:
            last = gen
            _worker_job()
            pool.fetch_add(pool.LEFT, 1)
            spins = 0
        else:
            spins = pool.idle(last, spins)


@njit(cache=True)
def matvec3_rows(qt0, w0, out0, qt1, w1, out1, qt2, w2, out2, x):
    """Three matvecs sharing x in one job (an unused slot has 0 rows): out_i = w_i @ x.
    The calling thread works too, and never waits for a worker that has not started."""
    xq, xm = _activation(x, max(activation_kind(qt0), activation_kind(qt1), activation_kind(qt2)))
    s0, s1, s2 = _unit_rows(w0), _unit_rows(w1), _unit_rows(w2)
    n0 = (w0.shape[0] + s0 - 1) // s0
    n1 = (w1.shape[0] + s1 - 1) // s1
    n2 = (w2.shape[0] + s2 - 1) // s2
    total = n0 + n1 + n2
    if total > 1 and pool.acquire():
        _publish_slot(0, qt0, w0, out0, s0, n0)
        _publish_slot(1, qt1, w1, out1, s1, n1)
        _publish_slot(2, qt2, w2, out2, s2, n2)
        pool.store(pool.ARGS + _KIND, MATVEC_JOB)
        a = pool.ARGS + _X
        pool.store(a, pool.address(x))
        pool.store(a + 1, x.shape[0])
        pool.store(a + 2, pool.address(xq))
        pool.store(a + 3, xq.shape[0])
        pool.store(a + 4, pool.address(xm))
        pool.store(a + 5, xm.shape[0])
        unit_bytes = max(s0 * w0.shape[1], s1 * w1.shape[1], s2 * w2.shape[1], 1)
        div, cap = 2 * (pool.load(pool.WORKERS) + 1), max(1, MAX_CLAIM_BYTES // unit_bytes)
        pool.store(pool.ARGS + _DIV, div)
        pool.store(pool.ARGS + _CAP, cap)
        pool.open_job(total)
        first, count = pool.claim(False, div, cap)
        while count:
            _units(first, first + count, qt0, w0, out0, s0, n0, qt1, w1, out1, s1, n1, qt2, w2, out2, s2, n2, x, xq, xm)
            first, count = pool.claim(False, div, cap)
        pool.finish()
    else:
        _units(0, total, qt0, w0, out0, s0, n0, qt1, w1, out1, s1, n1, qt2, w2, out2, s2, n2, x, xq, xm)


@njit(cache=True)
def matvec_rows(qt, w, x, out):
    """out (rows,) = w (rows, row_bytes) of type qt @ x (cols,)."""
    matvec3_rows(qt, w, out, qt, w[:0], out[:0], qt, w[:0], out[:0], x)


# Decode attention's job (pool.ARGS + ...): q address, q length, k and v addresses (one layer,
# (KVH, n_ctx, hd)), KVH, n_ctx, hd, f16 (0/1), lo, n_pos, chunks per kv head, and the addresses
# of the items' partial results po, pml and score scratch sc.
_A_Q, _A_QN, _A_K, _A_V, _A_KVH, _A_CTX, _A_HD, _A_F16, _A_LO, _A_POS, _A_NC, _A_PO, _A_PML, _A_SC = range(14)


@njit(cache=True)
def _attend_views(po, pml, sc, items, G, hd):
    """The flat scratch as (items, G, hd), (items, G, 2) and (items, ATTEND_CHUNK)."""
    return (po[: items * G * hd].reshape((items, G, hd)), pml[: items * G * 2].reshape((items, G, 2)),
            sc[: items * ATTEND_CHUNK].reshape((items, ATTEND_CHUNK)))


@njit(cache=True, _nrt=False)
def _attend_worker_item(c):
    """Item c of the open attention job, from the shared description."""
    a = pool.ARGS
    KVH, n_ctx, hd, nc = pool.load(a + _A_KVH), pool.load(a + _A_CTX), pool.load(a + _A_HD), pool.load(a + _A_NC)
    q = pool.view_f32(pool.load(a + _A_Q), pool.load(a + _A_QN), 0)
    G, items, n = q.size // hd // KVH, KVH * nc, KVH * n_ctx * hd
    po = pool.view_f32(pool.load(a + _A_PO), items * G * hd, 0).reshape((items, G, hd))
    pml = pool.view_f32(pool.load(a + _A_PML), items * G * 2, 0).reshape((items, G, 2))
    sc = pool.view_f32(pool.load(a + _A_SC), items * ATTEND_CHUNK, 0).reshape((items, ATTEND_CHUNK))
    lo, n_pos = pool.load(a + _A_LO), pool.load(a + _A_POS)
    if pool.load(a + _A_F16):
        kc = pool.view_i16(pool.load(a + _A_K), n, 0).reshape((KVH, n_ctx, hd))
        vc = pool.view_i16(pool.load(a + _A_V), n, 0).reshape((KVH, n_ctx, hd))
        attend_item(c, nc, q, kc, vc, lo, n_pos, po, pml, sc)
    else:
        kc32 = pool.view_f32(pool.load(a + _A_K), n, 0).reshape((KVH, n_ctx, hd))
        vc32 = pool.view_f32(pool.load(a + _A_V), n, 0).reshape((KVH, n_ctx, hd))
        attend_item(c, nc, q, kc32, vc32, lo, n_pos, po, pml, sc)


@njit(cache=True)
def attend_rows(q, kc, vc, lo, n_pos, out, po, pml, sc):
    """out (H*hd,) = one token's attention over positions lo .. n_pos-1 of one layer's cache,
    as work items (kv head x chunk of ATTEND_CHUNK positions, ops.attend_item) shared with the
    pool's workers like a matvec's chunks; the partial softmaxes are combined in a fixed order,
    so the result does not depend on the thread count.

    q: (H*hd,) f32; kc, vc: (KVH, n_ctx, hd) float32 or int16 (f16 bits), C-contiguous;
    po, pml, sc: flat f32 scratch of at least items * G * hd, items * G * 2, items * ATTEND_CHUNK.
    """
    KVH, n_ctx, hd = kc.shape
    nc = attend_chunks(lo, n_pos)
    items = KVH * nc
    po3, pml3, sc2 = _attend_views(po, pml, sc, items, q.size // hd // KVH, hd)
    if items > 1 and pool.acquire():
        a = pool.ARGS
        pool.store(a + _KIND, ATTEND_JOB)
        pool.store(a + _A_Q, pool.address(q))
        pool.store(a + _A_QN, q.size)
        pool.store(a + _A_K, pool.address(kc))
        pool.store(a + _A_V, pool.address(vc))
        pool.store(a + _A_KVH, KVH)
        pool.store(a + _A_CTX, n_ctx)
        pool.store(a + _A_HD, hd)
        pool.store(a + _A_F16, 1 if kc.itemsize == 2 else 0)
        pool.store(a + _A_LO, lo)
        pool.store(a + _A_POS, n_pos)
        pool.store(a + _A_NC, nc)
        pool.store(a + _A_PO, pool.address(po))
        pool.store(a + _A_PML, pool.address(pml))
        pool.store(a + _A_SC, pool.address(sc))
        pool.open_job(items)
        c = pool.claim_front()
        while c >= 0:
            attend_item(c, nc, q, kc, vc, lo, n_pos, po3, pml3, sc2)
            c = pool.claim_front()
        pool.finish()
    else:
        for c in range(items):
            attend_item(c, nc, q, kc, vc, lo, n_pos, po3, pml3, sc2)
    attend_combine(nc, po3, pml3, out)


POOL = pool.Pool(matvec_worker)


@njit(cache=True, parallel=True)
def matmul_rows(qt, w, X, out):
    """out (n, rows) = X (n, cols) @ w.T for small n: each weight row is read from memory
    once, and each block of it decoded once per 4 vectors (rows.dot_rows_many)."""
    xq, xm = _activations(X, activation_kind(qt))
    rows = w.shape[0]
    step = _chunk_rows(w)
    for c in prange((rows + step - 1) // step):
        dot_rows_many(qt, w, c * step, min(rows, (c + 1) * step), X, xq, xm, out)


@njit(cache=True, parallel=True)
def dequantize_rows(qt, w, r0, dst):
    """dst (k, cols) = rows r0 .. r0 + k of w, as float32."""
    for i in prange(dst.shape[0]):
        row_dequantize(qt, w[r0 + i], dst[i])
