"""The 16-bit integer prefill GEMM (kernels/intgemm.py) and the large-batch backend choice.

Tolerances (relative to the reference output's norm), as in test_kernels.py:
  * x whose 16-bit quantization per 32 values is exact: 2e-5 (the integer path bit for bit,
    up to float32 summation) — except Q6_K, whose activations use 15 bits (its folded
    weights reach 4096), held to the Gaussian bound;
  * Gaussian x: 1e-4 (measured 1-4e-5).

The 8-bit-activation variant (``matmul_int8``) is held to an emulation of its rounding (each
group of 32 values to round(x / d) d, d = max |x| / 127, as llama.cpp's q8 activations) for
the formats without a min (whose offsets it adds from the exact sums instead), and to 1e-2
of the float product for every format (measured 5-6e-3 on Gaussian x). Q2_K, Q3_K and Q6_K
(scales per 16 values) take its half-group variant.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from llamalab import kernels
from llamalab.kernels import gemm, intgemm
from llamalab.quants import dequantize

from test_kernels import EXACT_X_TOL, GAUSS_X_TOL, KQUANTS, QUANTIZED, exact_x, make_weight, rel_err

# (rows, cols, n): rows not a multiple of the 3-row register tile or the 24-row panel, n not of
# the 4 activations, cols not whole 512-value spans (padding), and more than one pass (SPAN_BLOCK).
SHAPES_K = [(50, 256, 9), (25, 768, 13), (7, 4608, 5)]
SHAPES_32 = [(50, 96, 9), (25, 800, 13), (7, 4608, 5)]


def _int(w, X):
    p = kernels.plan_of(w)
    out = np.full((X.shape[0], p.rows), np.nan, np.float32)
    intgemm.matmul_int(p.qt, p.data, np.ascontiguousarray(X, np.float32), out)
    return out


def _ref(w, X):
    return X.astype(np.float64) @ dequantize(w.data, w.qtype).astype(np.float64).T


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_int_gemm_matches_reference(qtype):
    for rows, cols, n in SHAPES_K if qtype in KQUANTS else SHAPES_32:
        w = make_weight(qtype, rows, cols, seed=rows)
        gauss = np.random.default_rng(cols).standard_normal((n, cols), dtype=np.float32)
        exact = np.stack([exact_x(cols, seed=i) for i in range(n)])
        for X, tol in ((gauss, GAUSS_X_TOL), (exact, GAUSS_X_TOL if qtype == T.Q6_K else EXACT_X_TOL)):
            got, ref = _int(w, X), _ref(w, X)
            worst = int(np.argmax(np.abs(got - ref).max(axis=0)))
            assert rel_err(got, ref) < tol, f"{qtype.name} {rows}x{cols} n={n}: worst output row {worst}"


def _int8(w, X):
    p = kernels.plan_of(w)
    out = np.full((X.shape[0], p.rows), np.nan, np.float32)
    intgemm.matmul_int8(p.qt, p.data, np.ascontiguousarray(X, np.float32), out)
    return out


def _round8(X):
    """X with each group of 32 values rounded to 8 bits as the int8 path rounds them."""
    g = X.reshape(X.shape[0], -1, 32).astype(np.float32)
    d = np.abs(g).max(axis=-1, keepdims=True) / np.float32(127)
    q = np.rint(g * np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32))
    return (q * d).reshape(X.shape)


INT8 = sorted(intgemm.INT8_TYPES)
_MINS = (T.Q4_1, T.Q5_1, T.Q2_K, T.Q4_K, T.Q5_K)  # offsets added from the exact sums


@pytest.mark.parametrize("qtype", INT8, ids=lambda t: t.name)
def test_int8_gemm_rounds_activations_to_8_bits(qtype):
    for rows, cols, n in SHAPES_K if qtype in KQUANTS else SHAPES_32:
        w = make_weight(qtype, rows, cols, seed=rows + 1)
        X = np.random.default_rng(cols + 1).standard_normal((n, cols), dtype=np.float32)
        X[0, 5] = 40.0  # an outlier: its group's other values keep only a few levels
        got = _int8(w, X)
        assert rel_err(got, _ref(w, X)) < 1e-2
        if qtype not in _MINS:
            assert rel_err(got, _ref(w, _round8(X))) < 1e-6, f"{qtype.name} {rows}x{cols} n={n}"
    np.testing.assert_array_equal(_int8(w, np.zeros((5, cols), np.float32)), 0)


def test_auto_takes_int8_only_for_long_batches_without_amx(monkeypatch):
    """8-bit activations (llama.cpp's rounding) are timed only for batches of BIG_BATCH and
    more, and only where AMX's more accurate bf16 tiles are not in use."""
    from llamalab.kernels import amx

    for available in (True, False):
        monkeypatch.setattr(amx, "AVAILABLE", available)
        for t in intgemm.INT8_TYPES:
            assert "int8" not in gemm.candidates(int(t), big=False)
            assert ("int8" in gemm.candidates(int(t), big=True)) == (not available)
            assert "int" in gemm.candidates(int(t), big=True)
        assert "int8" not in gemm.candidates(int(T.F16), big=True)


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_int_gemm_zero_blocks_and_zero_x(qtype):
    cols = 512 if qtype in KQUANTS else 160
    w = make_weight(qtype, 30, cols)
    data = w.data.copy()
    data[::3] = 0  # every third row all-zero bytes (d = 0: the folded sub-scales must not divide by it)
    w0 = type(w)(w.name, w.qtype, w.shape, data)
    X = np.random.default_rng(0).standard_normal((6, cols), dtype=np.float32)
    got = _int(w0, X)
    assert np.all(got[:, ::3] == 0)
    assert rel_err(got, _ref(w0, X)) < GAUSS_X_TOL
    np.testing.assert_array_equal(_int(w, np.zeros((5, cols), np.float32)), 0)


def test_int_gemm_is_the_same_at_any_thread_count():
    w = make_weight(T.Q4_K, 100, 1024)
    X = np.random.default_rng(1).standard_normal((37, 1024), dtype=np.float32)
    before = kernels.get_threads()
    try:
        kernels.set_threads(1)
        one = _int(w, X)
        kernels.set_threads(2)
        two = _int(w, X)
    finally:
        kernels.set_threads(before)
    np.testing.assert_array_equal(one, two)


def test_blas_panels_shared_among_threads_equal_one_thread():
    """The BLAS path hands panels to our own threads (BLAS itself at one thread)."""
    w = make_weight(T.Q8_0, 3000, 224)  # 1170-row panels: 3 panels
    X = np.random.default_rng(2).standard_normal((20, 224), dtype=np.float32)
    p = kernels.plan_of(w)
    outs = []
    before = kernels.get_threads()
    try:
        for t in (1, 2):
            kernels.set_threads(t)
            out = np.empty((20, 3000), np.float32)
            gemm.matmul_blas(p.qt, p.data, X, out)
            outs.append(out)
    finally:
        kernels.set_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert rel_err(outs[0], _ref(w, X)) < 1e-5
    from threadpoolctl import threadpool_info

    assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")


def test_auto_times_each_shape_once_and_keeps_the_fastest():
    before = kernels.get_gemm_backend()
    kernels.set_gemm_backend("auto")
    try:
        w = make_weight(T.Q4_1, 64, 512, seed=9)
        X = np.random.default_rng(3).standard_normal((gemm.BIG_BATCH, 512), dtype=np.float32)
        key = (int(T.Q4_1), 64, 512, True)
        gemm._chosen.pop(key, None)
        first = kernels.matmul(w, X)  # timed on every candidate; the result is still right
        chosen = gemm.choices()[key]
        assert chosen in gemm.candidates(int(T.Q4_1)) and "int" in gemm.candidates(int(T.Q4_1))
        assert gemm.backend_for(int(T.Q4_1), 64, 512, gemm.BIG_BATCH) == chosen
        assert gemm.backend_for(int(T.Q4_1), 64, 512, gemm.BIG_BATCH - 1) is None or (int(T.Q4_1), 64, 512, False) in gemm._chosen
        assert rel_err(first, _ref(w, X)) < 1e-2
        np.testing.assert_array_equal(kernels.matmul(w, X), first if chosen != "amx" else kernels.matmul(w, X))
        assert "int" in gemm.candidates(int(T.F16)) and "int" not in gemm.candidates(int(T.F32))
    finally:
        kernels.set_gemm_backend(before)


def test_auto_first_product_is_the_chosen_backends(monkeypatch):
    """The shape's first product (timed on every candidate) equals the later ones bitwise, also
    when the winner is not the candidate timed last (here BLAS is slowed down, int wins)."""
    import time

    before = kernels.get_gemm_backend()
    kernels.set_gemm_backend("auto")
    blas = gemm._RUN["blas"]
    monkeypatch.setitem(gemm._RUN, "blas", lambda *a: (time.sleep(0.01), blas(*a)))
    monkeypatch.setattr(gemm, "candidates", lambda qt, big=True: ("int", "blas"))
    try:
        w = make_weight(T.Q4_1, 64, 512, seed=11)
        X = np.random.default_rng(4).standard_normal((gemm.BIG_BATCH, 512), dtype=np.float32)
        gemm._chosen.pop((int(T.Q4_1), 64, 512, True), None)
        first = kernels.matmul(w, X)
        assert gemm.choices()[(int(T.Q4_1), 64, 512, True)] == "int"
        np.testing.assert_array_equal(kernels.matmul(w, X), first)
        blas_out = np.zeros_like(first)
        blas(int(T.Q4_1), w.data, X, blas_out)
        assert not np.array_equal(blas_out, first)  # the two backends round differently: the check can fail
    finally:
        gemm._chosen.pop((int(T.Q4_1), 64, 512, True), None)
        kernels.set_gemm_backend(before)


@pytest.mark.parametrize("backend", ["int", "int8"])
def test_forced_integer_backend_sends_float_formats_to_blas(backend):
    """F32 always, and F16/BF16 under int8 (their 13-bit codes do not fit a byte), go to BLAS."""
    before = kernels.get_gemm_backend()
    kernels.set_gemm_backend(backend)
    try:
        assert gemm.backend_for(int(T.F32), 8, 64, 100) == "blas"
        assert gemm.backend_for(int(T.F16), 8, 64, 100) == ("int" if backend == "int" else "blas")
        assert gemm.backend_for(int(T.BF16), 8, 64, 100) == ("int" if backend == "int" else "blas")
        assert gemm.backend_for(int(T.Q4_K), 8, 256, 100) == backend
        assert gemm.backend_for(int(T.Q6_K), 8, 256, 100) == backend
    finally:
        kernels.set_gemm_backend(before)


def _half(qtype, W):
    from gguf.quants import quantize as gguf_quantize
    from llamalab.runtime.tensor import QTensor

    data = np.ascontiguousarray(gguf_quantize(W, qtype)).view(np.uint8).reshape(W.shape[0], -1)
    return QTensor(f"w.{qtype.name}", qtype, W.shape, data)


HALF_TOL = 1e-3  # 13-bit codes per group of 32: measured 1.1-1.8e-4 on Gaussian rows, 5.1e-4 beside a 300-sigma outlier


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_int_gemm_takes_half_precision_weights(qtype):
    """F16/BF16 weights as 13-bit codes per group of 32 against the float product of the file's
    own values: rows of any length (the last group padded), all-zero rows, a row whose group
    holds one huge value, and a whole row at the largest code times activations at theirs
    (4095 x 16383 x 32 must not overflow the int32 lanes)."""
    rng = np.random.default_rng(5)
    for rows, cols, n in [(50, 96, 9), (25, 1000, 13), (7, 4608, 5), (3, 7, 10)]:
        W = rng.standard_normal((rows, cols), dtype=np.float32)
        W[0] = 0.0
        W[1, 3] = 300.0
        w = _half(qtype, W)
        X = rng.standard_normal((n, cols), dtype=np.float32)
        got = _int(w, X)
        assert np.all(got[:, 0] == 0)
        assert rel_err(got, _ref(w, X)) < HALF_TOL, f"{qtype.name} {rows}x{cols}"
    w = _half(qtype, np.full((4, 2048), 0.5, np.float32))
    got = _int(w, np.ones((3, 2048), np.float32))
    np.testing.assert_allclose(got, 1024.0, rtol=1e-5)


def test_llamalab_gemm_environment_variable():
    env = dict(os.environ, LLAMALAB_GEMM="blas", PYTHONPATH=os.pathsep.join(sys.path))
    code = "from llamalab import kernels; print(kernels.get_gemm_backend())"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "blas", r.stderr
    env["LLAMALAB_GEMM"] = "cuda"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "LLAMALAB_GEMM must be one of auto" in r.stderr
