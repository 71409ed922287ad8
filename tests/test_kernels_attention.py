"""Grouped-query decode attention (kernels.ops.attend_group / attend_group_f16) vs NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from llamalab.kernels import ops


def _softmax_attend(qg, k, v, n_pos):
    k, v = k[:n_pos].astype(np.float64), v[:n_pos].astype(np.float64)
    s = qg.astype(np.float64) @ k.T / np.sqrt(qg.shape[1])  # (G, n_pos)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)) @ v  # (G, hd)


@pytest.mark.parametrize("G, hd, n_pos", [(4, 64, 1), (4, 64, 37), (3, 72, 200), (1, 128, 5)])
def test_attend_group_matches_numpy_for_f32_and_f16_caches(G, hd, n_pos):
    rng = np.random.default_rng(n_pos)
    qg = rng.standard_normal((G, hd), dtype=np.float32)
    k = rng.standard_normal((n_pos + 7, hd), dtype=np.float32)  # (n_ctx, hd): rows past n_pos unused
    v = rng.standard_normal((n_pos + 7, hd), dtype=np.float32)
    k[n_pos:] = np.nan  # never read
    out = np.empty((G, hd), np.float32)
    sc = np.empty((G, n_pos), np.float32)
    ops.attend_group(qg, k, v, n_pos, out, sc)
    np.testing.assert_allclose(out, _softmax_attend(qg, k, v, n_pos), rtol=1e-4, atol=1e-5)
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    out16 = np.empty((G, hd), np.float32)
    ops.attend_group_f16(qg, k16.view(np.uint16), v16.view(np.uint16), n_pos, out16, sc,
                         np.empty(hd, np.float32), np.empty(hd, np.float32))
    np.testing.assert_allclose(out16, _softmax_attend(qg, k16, v16, n_pos), rtol=1e-4, atol=1e-5)
