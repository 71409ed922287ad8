"""Decode attention (kernels.parallel.attend_rows: kv heads x chunks of positions, f32 or f16
cache) and the f16 rounding of cache writes, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from llamalab.kernels import attention, ops, parallel


def _softmax_attend(q, k, v, lo, n_pos, G):
    """(H*hd,) float64: each query head h over kv head h // G, positions lo .. n_pos-1."""
    KVH, _, hd = k.shape
    qh = q.reshape(KVH, G, hd).astype(np.float64)
    k, v = k[:, lo:n_pos].astype(np.float64), v[:, lo:n_pos].astype(np.float64)
    s = np.einsum("kgd,ksd->kgs", qh, k) / np.sqrt(hd)
    p = np.exp(s - s.max(axis=2, keepdims=True))
    return np.einsum("kgs,ksd->kgd", p / p.sum(axis=2, keepdims=True), v).reshape(-1)


@pytest.mark.parametrize("KVH, G, hd, lo, n_pos", [
    (3, 3, 64, 0, 1), (2, 4, 64, 0, 37), (1, 4, 128, 0, 300), (3, 3, 64, 0, 2 * attention.ATTEND_CHUNK + 1),
    (2, 2, 48, 5, 200), (1, 1, 72, 0, 130), (2, 3, 32, 100, 356),
], ids=str)
def test_attend_rows_matches_numpy_for_f32_and_f16_caches(KVH, G, hd, lo, n_pos):
    """Every vector width (hd 64/128/48/32), the scalar path (hd 72), one or several chunks and
    a window's start (lo): within 2e-5 of float64 NumPy on the same (f32 or f16) values."""
    rng = np.random.default_rng(n_pos)
    n_ctx = n_pos + 7
    q = rng.standard_normal(KVH * G * hd, dtype=np.float32)
    k = rng.standard_normal((KVH, n_ctx, hd), dtype=np.float32)
    v = rng.standard_normal((KVH, n_ctx, hd), dtype=np.float32)
    k[:, n_pos:] = v[:, n_pos:] = np.nan  # never read
    items = KVH * attention.attend_chunks(0, n_ctx)
    po, pml = np.empty(items * G * hd, np.float32), np.empty(items * G * 2, np.float32)
    sc = np.empty(items * attention.ATTEND_CHUNK, np.float32)
    for kc, vc in ((k, v), (k.astype(np.float16), v.astype(np.float16))):
        out = np.empty(KVH * G * hd, np.float32)
        bits = (kc.view(np.int16), vc.view(np.int16)) if kc.dtype == np.float16 else (kc, vc)
        parallel.attend_rows(q, *bits, lo, n_pos, out, po, pml, sc)
        np.testing.assert_allclose(out, _softmax_attend(q, kc, vc, lo, n_pos, G), rtol=2e-5, atol=2e-5,
                                   err_msg=str(kc.dtype))


@njit
def _round_all(x, out):
    for i in range(x.size):
        out[i] = ops.f16_bits(x[i])


def test_f16_bits_rounds_like_numpy():
    """Cache writes of the compiled step round as NumPy's astype(np.float16): random bit patterns
    (every exponent), the overflow edge, subnormals and their ties, signed zeros, infinities."""
    rng = np.random.default_rng(0)
    edges = [65504, 65519.996, 65520, 65536, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14, 1e-8, -0.0, 0.0, np.inf, -np.inf]
    x = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                        np.array(edges, np.float32)])
    x = x[~np.isnan(x)]
    out = np.empty(x.size, np.int64)
    _round_all(x, out)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16).astype(np.int64)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, f"{bad.size} differ, e.g. {x[bad[:3]]}: {out[bad[:3]]} vs {want[bad[:3]]}"
