"""The compiled layer ops (kernels.ops) against the NumPy reference functions in runtime/layer.py and rope.py."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from llamalab.runtime import layer as ref
from llamalab.runtime.config import ModelConfig
from llamalab.runtime.rope import apply_rope, rope_tables
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

    cfg = ModelConfig("llama", 1, heads * hd, 8, heads, heads, 8, 64)
    cos, sin = rope_tables(np.arange(4, 4 + T), cfg)
    for neox, kernel in ((False, ops.rope), (True, ops.rope_neox)):
        a, b = x.reshape(T, heads, hd).copy(), x.reshape(T, heads, hd).copy()
        kernel(a, cos, sin)
        apply_rope(b, cos, sin, neox)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    for activation, kernel in (("silu", ops.swiglu), ("gelu_tanh", ops.geglu)):
        gate, up = x.copy(), rng.standard_normal(x.shape, dtype=np.float32)
        want = ref.glu(gate.copy(), up, activation)
        kernel(gate, up)
        np.testing.assert_allclose(gate, want, rtol=1e-5, atol=1e-6)


def test_neox_rope_rotates_halves_and_adjacent_rotates_pairs():
    """Position 1 at base 1 turns pair 0 by exactly 1 radian: which elements pair up is the layout."""
    cfg = ModelConfig("llama", 1, 4, 8, 1, 1, 8, 64, rope_base=1.0)
    cos, sin = rope_tables(np.array([1]), cfg)  # angles (1, 2): both pairs turn by 1 rad (base 1)
    x = np.array([[[1.0, 0.0, 0.0, 0.0]]], np.float32)
    adj, neox = x.copy(), x.copy()
    apply_rope(adj, cos, sin, neox=False)
    apply_rope(neox, cos, sin, neox=True)
    c, s = np.cos(1.0), np.sin(1.0)
    np.testing.assert_allclose(adj[0, 0], [c, s, 0, 0], atol=1e-6)  # pair (0, 1)
    np.testing.assert_allclose(neox[0, 0], [c, 0, s, 0], atol=1e-6)  # pair (0, 2)


@pytest.mark.parametrize("T, start, window", [(20, 0, 8), (5, 30, 16), (33, 10, 1), (12, 3, 64)])
def test_windowed_attention_matches_the_masked_reference(T, start, window):
    rng = np.random.default_rng(T * window)
    H, KVH, hd, n_ctx = 4, 2, 32, 128
    q = rng.standard_normal((T, H, hd), dtype=np.float32) * 2
    kc = rng.standard_normal((KVH, n_ctx, hd), dtype=np.float32)
    vc = rng.standard_normal((KVH, n_ctx, hd), dtype=np.float32)
    kc[:, start + T :] = vc[:, start + T :] = np.nan
    out = np.full((T, H * hd), np.nan, np.float32)
    ops.windowed_attention(q, kc, vc, start, window, out)
    want = ref.attention(q, kc, vc, start, window)
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-5)
    last = ref.attention(q[-1:], kc, vc, start + T - 1, window)  # the window really drops positions
    full = ref.attention(q[-1:], kc, vc, start + T - 1)
    assert (start + T > window) == (not np.allclose(last, full))


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
