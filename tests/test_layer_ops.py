"""The compiled layer ops (kernels.ops) against the NumPy reference functions in model.py."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from llamalab.runtime import model as ref
from llamalab.kernels import ops


@njit(fastmath=True)
def _exp_all(x, out):
    for i in range(x.size):
        out[i] = ops.exp(x[i])


def test_exp_is_within_5e_6_relative_and_flushes_below_the_float32_range():
    x = np.concatenate([np.linspace(-87, 88, 200_001, dtype=np.float32), np.float32([0, -1e-8, 1e-8])])
    out = np.empty_like(x)
    _exp_all(x, out)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - want) / want) < 5e-6
    tiny = np.float32([-90, -200, -np.inf])
    out = np.empty_like(tiny)
    _exp_all(tiny, out)
    assert np.all((out >= 0) & (out < 2e-38))


@pytest.mark.parametrize("T, start, H, KVH, hd", [
    (1, 0, 4, 4, 64), (7, 0, 9, 3, 64), (8, 0, 2, 1, 64), (37, 0, 4, 2, 64), (16, 5, 6, 1, 64), (50, 300, 9, 3, 64),
    (45, 17, 6, 6, 48), (23, 9, 4, 2, 128), (19, 2, 2, 1, 40),  # 40: not whole vectors, the scalar path
])  # fmt: skip
def test_causal_attention_matches_the_reference(T, start, H, KVH, hd):
    rng = np.random.default_rng(T + start)
    n_ctx = 512
    q = rng.standard_normal((T, H, hd), dtype=np.float32) * 2  # scores of several units: a real softmax
    kc = rng.standard_normal((KVH, n_ctx, hd), dtype=np.float32)
    vc = rng.standard_normal((KVH, n_ctx, hd), dtype=np.float32)
    kc[:, start + T :] = np.nan  # positions past the queries must never be read
    vc[:, start + T :] = np.nan
    out = np.full((T, H * hd), np.nan, np.float32)
    ops.causal_attention(q, kc, vc, start, out)
    want = ref.attention(q, kc, vc, start)
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-5)


def test_rms_norm_rope_and_swiglu_match_the_reference():
    rng = np.random.default_rng(1)
    T, heads, hd = 13, 3, 16
    x = rng.standard_normal((T, heads * hd), dtype=np.float32)
    w = rng.standard_normal(heads * hd, dtype=np.float32)
    out = np.empty_like(x)
    ops.rms_norm(x, w, np.float32(1e-5), out)
    np.testing.assert_allclose(out, ref.rms_norm(x, w, 1e-5), rtol=1e-5, atol=1e-6)

    cos, sin = ref.rope_tables(np.arange(4, 4 + T), hd, 10000.0)
    a, b = x.reshape(T, heads, hd).copy(), x.reshape(T, heads, hd).copy()
    ops.rope(a, cos, sin)
    ref.apply_rope(b, cos, sin)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    gate, up = x.copy(), rng.standard_normal(x.shape, dtype=np.float32)
    want = ref.swiglu(gate.copy(), up)
    ops.swiglu(gate, up)
    np.testing.assert_allclose(gate, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hd, n_pos", [(64, 1), (64, 300), (48, 77), (128, 33), (40, 50)])
def test_one_query_attention_matches_the_reference(hd, n_pos):
    rng = np.random.default_rng(hd + n_pos)
    q = rng.standard_normal(hd, dtype=np.float32) * 2
    k = rng.standard_normal((400, hd), dtype=np.float32)
    v = rng.standard_normal((400, hd), dtype=np.float32)
    k[n_pos:] = v[n_pos:] = np.nan  # past the last position: never read
    out, sc = np.full(hd, np.nan, np.float32), np.empty(400, np.float32)
    ops.attend_query(q, k, v, n_pos, out, sc)
    want = ref.attention(q[None, None], k[None], v[None], n_pos - 1)[0]
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-5)
