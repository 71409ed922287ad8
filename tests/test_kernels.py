"""Compiled kernels vs the exact float reference ``dequantize(W) @ x``.

Tolerances (relative to the reference output's norm):
  * float formats (F32, F16, BF16): 1e-5 — exact up to float32 summation order.
  * quantized formats with an x whose 16-bit quantization is exact (every x an integer
    times a power of two, each block reaching +-32767): 2e-5 — this checks the integer
    path bit for bit, up to float32 summation.
  * quantized formats with a Gaussian x: 1e-4 — the kernels quantize x to 16 bits per
    block of 32 (llama.cpp uses 8); measured 0.4-3e-5 here (a block's rounding is at
    most 1.5e-5 of its largest |x|, amplified by the weight codes).
These are the 16-bit path's (``set_matvec_backend('int')``, set for every test here); the
int8 backend's decode paths (the default: K-quants on 8-bit activations, F16/BF16 rows on x
rounded to f16) have their own tests and tolerances below.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from llamalab import kernels
from llamalab.errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from llamalab.quants import dequantize
from llamalab.runtime.tensor import QTensor

LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
FLOATS = [T.F32, T.F16, T.BF16]
QUANTIZED = LEGACY + KQUANTS
ALL = FLOATS + QUANTIZED

FLOAT_TOL = 1e-5
EXACT_X_TOL = 2e-5
GAUSS_X_TOL = 1e-4

# byte offsets of the f16 scale fields (d, dmin) inside each K-quant block
_K_SCALES = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


def make_weight(qtype, rows: int, cols: int, seed: int = 0) -> QTensor:
    """A weight in qtype's layout: gguf-py's quantizer for 32-blocks and floats; random bytes
    with sane f16 scales (0.01, mins 0.02) for K-quants, as ggml's own tests do."""
    rng = np.random.default_rng(seed)
    if qtype in KQUANTS:
        _, size = GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, size=(rows * cols // 256, size), dtype=np.uint8)  # (n_blocks, type_size)
        for k, off in enumerate(_K_SCALES[qtype]):
            data[:, off : off + 2] = np.array([0.01 * (k + 1)], np.float16).view(np.uint8)
        data = data.reshape(rows, -1)
    elif qtype == T.F32:
        data = rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8)
    else:
        data = gguf_quantize(rng.standard_normal((rows, cols), dtype=np.float32), qtype)
        data = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)  # F16 comes back as float16
    return QTensor(f"w.{qtype.name}", qtype, (rows, cols), data)


def exact_x(cols: int, seed: int = 1) -> np.ndarray:
    """x whose 16-bit block quantization is lossless: 2**-12 * integers in [-32767, 32767], each block hitting 32767."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-32767, 32768, size=cols)
    q[::32] = 32767
    return (q * 2.0**-12).astype(np.float32)


def gauss_x(cols: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(cols, dtype=np.float32)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


def reference(w: QTensor, x: np.ndarray) -> np.ndarray:
    return dequantize(w.data, w.qtype).astype(np.float64) @ x.astype(np.float64)


@pytest.fixture(autouse=True)
def matvec_int():
    """The 16-bit activation for every format, whose tolerances the tests here state."""
    before = kernels.get_matvec_backend()
    kernels.set_matvec_backend("int")
    yield
    kernels.set_matvec_backend(before)


@pytest.fixture(params=[1, 2], ids=["1thr", "2thr"])
def threads(request):
    before = kernels.get_threads()
    kernels.set_threads(request.param)
    yield request.param
    kernels.set_threads(before)


# ------------------------------------------------------------------ matvec
@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_matvec_matches_reference(qtype, threads):
    w = make_weight(qtype, 37, 512)
    tol_exact = FLOAT_TOL if qtype in FLOATS else EXACT_X_TOL
    x = exact_x(512)
    assert rel_err(kernels.matvec(w, x), reference(w, x)) < tol_exact
    x = gauss_x(512)
    got, ref = kernels.matvec(w, x), reference(w, x)
    err = rel_err(got, ref)
    assert err < (FLOAT_TOL if qtype in FLOATS else GAUSS_X_TOL), f"{qtype.name}: rel err {err:.2e}, worst row {np.argmax(np.abs(got - ref))}"


@pytest.mark.parametrize("rows", [1, 7, 33, 3 * 64 + 5])
@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q8_0, T.Q6_K, T.F16], ids=lambda t: t.name)
def test_matvec_odd_row_counts(qtype, rows, threads):
    w = make_weight(qtype, rows, 256, seed=rows)
    x = exact_x(256)
    out = np.full(rows, np.nan, np.float32)
    kernels.matvec(w, x, out)
    assert rel_err(out, reference(w, x)) < EXACT_X_TOL
    assert np.isfinite(out).all()


@pytest.mark.parametrize("cols", [1, 7, 16, 37, 100])
@pytest.mark.parametrize("qtype", FLOATS, ids=lambda t: t.name)
def test_float_formats_any_column_count(qtype, cols):
    w = make_weight(qtype, 5, cols)
    x = gauss_x(cols)
    np.testing.assert_allclose(kernels.matvec(w, x), reference(w, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_kquant_and_legacy_agree_with_gguf_py(qtype):
    """The oracle itself: llamalab.quants and gguf-py read the test blocks identically."""
    w = make_weight(qtype, 3, 256)
    np.testing.assert_array_equal(dequantize(w.data, qtype), gguf_dequantize(w.data, qtype))


@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_zero_blocks_and_zero_x_give_exact_zeros(qtype):
    block, size = GGML_QUANT_SIZES[qtype]
    w = QTensor("zeros", qtype, (9, 256), np.zeros((9, 256 // block * size), np.uint8))
    assert np.array_equal(kernels.matvec(w, gauss_x(256)), np.zeros(9, np.float32))
    w = make_weight(qtype, 9, 256)
    assert np.array_equal(kernels.matvec(w, np.zeros(256, np.float32)), np.zeros(9, np.float32))


def test_wide_dynamic_range_blocks():
    """Blocks of x differing by 1e6 in scale: each keeps its own 16-bit scale."""
    x = gauss_x(256)
    x[:32] *= 1e3
    x[32:64] *= 1e-3
    w = make_weight(T.Q8_0, 16, 256)
    assert rel_err(kernels.matvec(w, x), reference(w, x)) < GAUSS_X_TOL


# ------------------------------------------------------------------ matvec_many
def test_matvec_many_equals_separate_matvecs_with_mixed_formats(threads):
    ws = [make_weight(T.Q4_1, 64, 256, 1), make_weight(T.Q6_K, 32, 256, 2), make_weight(T.F16, 13, 256, 3),
          make_weight(T.Q8_0, 7, 256, 4), make_weight(T.F32, 5, 256, 5)]
    x = gauss_x(256)
    outs = kernels.matvec_many(ws, x)
    assert [o.shape for o in outs] == [(64,), (32,), (13,), (7,), (5,)]
    for w, o in zip(ws, outs):
        np.testing.assert_array_equal(o, kernels.matvec(w, x))  # same code path: bitwise equal


def test_matvec_many_writes_given_outputs_and_checks_them():
    ws = [make_weight(T.Q4_0, 8, 64), make_weight(T.Q4_0, 4, 64)]
    outs = [np.empty(8, np.float32), np.empty(4, np.float32)]
    got = kernels.matvec_many(ws, gauss_x(64), outs)
    assert got[0] is outs[0] and got[1] is outs[1]
    with pytest.raises(InvalidArgumentError, match="outs\\[1\\]"):
        kernels.matvec_many(ws, gauss_x(64), [outs[0], np.empty(5, np.float32)])
    with pytest.raises(InvalidArgumentError, match="cols"):
        kernels.matvec_many([ws[0], make_weight(T.Q4_0, 4, 96)], gauss_x(64))
    assert kernels.matvec_many([], gauss_x(64)) == []


def test_plan_reuses_its_outputs_and_matches_matvec(threads):
    ws = [make_weight(T.Q4_1, 64, 256, 1), make_weight(T.Q6_K, 32, 256, 2), make_weight(T.F16, 13, 256, 3),
          make_weight(T.Q8_0, 7, 256, 4)]
    p = kernels.plan(ws)
    first = p(gauss_x(256, seed=1))
    assert [o.shape for o in first] == [(64,), (32,), (13,), (7,)]
    second = p(gauss_x(256, seed=2))
    assert all(a is b for a, b in zip(first, second))  # the plan's own buffers, overwritten
    for w, o in zip(ws, second):
        np.testing.assert_array_equal(o, kernels.matvec(w, gauss_x(256, seed=2)))
    with pytest.raises(InvalidArgumentError, match=r"x must have shape \(256,\)"):
        p(np.zeros(255, np.float32))
    with pytest.raises(InvalidArgumentError, match="cols"):
        kernels.plan([ws[0], make_weight(T.Q4_1, 4, 512)])
    with pytest.raises(InvalidArgumentError, match="at least one"):
        kernels.plan([])


# ------------------------------------------------------------------ matmul
@pytest.mark.parametrize("n", [1, 3, 17])
@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q8_0, T.Q4_K, T.Q6_K, T.F32, T.BF16], ids=lambda t: t.name)
def test_matmul_matches_reference(qtype, n, threads):
    w = make_weight(qtype, 45, 256)
    X = np.stack([exact_x(256, seed=i) for i in range(n)])  # (n, 256)
    ref = X.astype(np.float64) @ dequantize(w.data, qtype).astype(np.float64).T  # (n, 45)
    got = kernels.matmul(w, X)
    assert got.shape == (n, 45)
    tol = EXACT_X_TOL if n <= kernels.small_batch_limit() else LARGE_TOL[kernels.get_gemm_backend()]
    assert rel_err(got, ref) < tol


@pytest.fixture(params=kernels.gemm.BACKENDS)
def gemm_backend(request):
    before = kernels.get_gemm_backend()
    kernels.set_gemm_backend(request.param)
    yield request.param
    kernels.set_gemm_backend(before)


LARGE_TOL = {"blas": FLOAT_TOL, "int": GAUSS_X_TOL, "int8": 1e-2, "amx": 1e-2, "auto": 1e-2}  # amx: bf16 operands (8-bit mantissa); int8: 8-bit activations


def test_matmul_paths_agree_at_the_batch_threshold(gemm_backend):
    w = make_weight(T.Q5_K, 40, 512)
    X = np.random.default_rng(3).standard_normal((kernels.small_batch_limit() + 1, 512), dtype=np.float32)
    small = np.concatenate([kernels.matmul(w, X[:kernels.small_batch_limit()]), kernels.matmul(w, X[-1:])])
    large = kernels.matmul(w, X)  # above the threshold: AMX tiles or dequantized panels + BLAS
    ref = X.astype(np.float64) @ dequantize(w.data, T.Q5_K).astype(np.float64).T
    assert rel_err(large, ref) < LARGE_TOL[gemm_backend]
    assert rel_err(small, ref) < GAUSS_X_TOL
    for i in range(3):
        np.testing.assert_array_equal(small[i], kernels.matvec(w, X[i]))


@pytest.mark.parametrize("qtype, extra, rows, cols", [(T.Q8_0, 8, 3000, 224), (T.Q8_0, 52, 64, 64), (T.F32, 52, 64, 64),
                                                      (T.F32, 21, 31, 40), (T.F32, 1, 1, 7), (T.Q4_0, 28, 70, 96)])
def test_matmul_large_batches_any_shape(qtype, extra, rows, cols, gemm_backend, threads):
    """n = limit + extra vectors: panels (BLAS: 224 cols -> 2340-row panels), AMX padding of
    n, rows and cols to multiples of 32."""
    n = kernels.small_batch_limit() + extra
    w = make_weight(qtype, rows, cols)
    X = np.random.default_rng(4).standard_normal((n, cols), dtype=np.float32)
    ref = X.astype(np.float64) @ dequantize(w.data, qtype).astype(np.float64).T
    got = kernels.matmul(w, X)
    assert got.shape == (n, rows)
    assert rel_err(got, ref) < LARGE_TOL[gemm_backend]


@pytest.mark.parametrize("qtype", QUANTIZED + FLOATS, ids=lambda t: t.name)
def test_small_batches_equal_single_vectors_bitwise(qtype, threads):
    """Batched decode must not change results: each row of a small batch equals matvec."""
    w = make_weight(qtype, 21, 256)
    X = np.random.default_rng(8).standard_normal((kernels.small_batch_limit() - 1, 256), dtype=np.float32)  # 4s + rest
    got = kernels.matmul(w, X)
    for i in range(len(X)):
        np.testing.assert_array_equal(got[i], kernels.matvec(w, X[i]))


def test_gemm_backend_setting():
    assert kernels.get_gemm_backend() in kernels.gemm.SETTINGS
    with pytest.raises(InvalidArgumentError, match="gemm backend"):
        kernels.set_gemm_backend("cuda")


def test_matmul_accepts_float64_and_empty_batch():
    w = make_weight(T.Q4_1, 8, 64)
    X = np.random.default_rng(5).standard_normal((2, 64))  # float64 is converted
    np.testing.assert_array_equal(kernels.matmul(w, X), kernels.matmul(w, X.astype(np.float32)))
    assert kernels.matmul(w, np.zeros((0, 64), np.float32)).shape == (0, 8)


# ------------------------------------------------------------------ validation
def test_bad_activations_raise_one_line_errors():
    w = make_weight(T.Q4_1, 8, 64)
    with pytest.raises(InvalidArgumentError, match=r"x must have shape \(64,\)"):
        kernels.matvec(w, np.zeros(63, np.float32))
    with pytest.raises(InvalidArgumentError, match=r"x must have shape"):
        kernels.matvec(w, np.zeros((1, 64), np.float32))
    with pytest.raises(InvalidArgumentError, match="out must be a float32 array of shape"):
        kernels.matvec(w, np.zeros(64, np.float32), np.zeros(8, np.float64))
    with pytest.raises(InvalidArgumentError, match="out must be a float32 array of shape"):
        kernels.matvec(w, np.zeros(64, np.float32), np.zeros(9, np.float32))
    with pytest.raises(InvalidArgumentError, match="writable C-contiguous"):
        kernels.matvec(w, np.zeros(64, np.float32), np.zeros(16, np.float32)[::2])
    with pytest.raises(InvalidArgumentError, match=r"X must have shape \(n, 64\)"):
        kernels.matmul(w, np.zeros((3, 65), np.float32))
    buf = np.zeros(72, np.float32)
    with pytest.raises(InvalidArgumentError, match="overlap"):
        kernels.matvec(make_weight(T.F32, 64, 64), buf[:64], buf[8:72])
    # a non-contiguous x is copied, not rejected
    x2 = np.repeat(gauss_x(64), 2)[::2]
    np.testing.assert_array_equal(kernels.matvec(w, x2), kernels.matvec(w, np.ascontiguousarray(x2)))


def test_bad_weights_raise_before_any_kernel_runs():
    x = np.zeros(64, np.float32)
    ok = make_weight(T.Q4_1, 8, 64)
    with pytest.raises(ModelFormatError, match=r"data must be uint8 \(8, 40\)"):
        kernels.matvec(QTensor("short", T.Q4_1, (8, 64), ok.data[:, :39]), x)
    with pytest.raises(ModelFormatError, match=r"data must be uint8 \(9, 40\)"):
        kernels.matvec(QTensor("rows", T.Q4_1, (9, 64), ok.data), x)
    with pytest.raises(ModelFormatError, match="cols divisible by 256"):
        kernels.matvec(QTensor("k", T.Q4_K, (1, 128), np.zeros((1, 72), np.uint8)), np.zeros(128, np.float32))
    with pytest.raises(ModelFormatError, match="C-contiguous"):
        kernels.matvec(QTensor("strided", T.Q4_1, (8, 64), np.zeros((8, 80), np.uint8)[:, ::2]), x)
    with pytest.raises(ModelFormatError, match="2-D"):
        kernels.matvec(QTensor("3d", T.Q4_1, (2, 4, 64), np.zeros((2, 4, 40), np.uint8)), x)
    with pytest.raises(UnsupportedModelError, match="IQ4_NL has no compiled kernel"):
        kernels.matvec(QTensor("iq", T.IQ4_NL, (1, 32), np.zeros((1, 18), np.uint8)), np.zeros(32, np.float32))
    with pytest.raises(InvalidArgumentError, match="QTensor"):
        kernels.matvec(np.zeros((8, 64), np.float32), x)


def test_threads_setting():
    before = kernels.get_threads()
    try:
        assert kernels.set_threads(1) == 1 and kernels.get_threads() == 1
        assert kernels.set_threads(10_000) == kernels.get_threads() >= 1  # capped at Numba's maximum
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(InvalidArgumentError, match="threads"):
                kernels.set_threads(bad)
    finally:
        kernels.set_threads(before)


def test_kernels_follow_set_threads_from_another_python_thread():
    import threading

    import numba

    seen = []
    kernels.set_threads(1)
    try:
        t = threading.Thread(target=lambda: (kernels.matvec(make_weight(T.Q8_0, 4, 32), exact_x(32)),
                                             seen.append(numba.get_num_threads())))
        t.start()
        t.join()
    finally:
        kernels.set_threads(kernels.default_threads())
    assert seen == [1]


def test_worker_pool_results_equal_one_thread_and_survive_concurrent_callers():
    """Decode products share chunks with pool workers: the result must not depend on who ran
    which chunk, and callers from several Python threads at once (the pool serves one,
    the others run alone) must all get right answers."""
    import threading

    ws = [make_weight(T.Q4_1, 300, 256, 1), make_weight(T.Q8_0, 77, 256, 2), make_weight(T.F32, 40, 256, 3)]
    xs = [gauss_x(256, seed=s) for s in range(8)]
    before = kernels.get_threads()
    try:
        kernels.set_threads(1)
        alone = [[o.copy() for o in kernels.matvec_many(ws, x)] for x in xs]
        kernels.set_threads(2)
        errors = []

        def caller():
            for _ in range(20):
                for x, want in zip(xs, alone):
                    for o, w in zip(kernels.matvec_many(ws, x), want):
                        if not np.array_equal(o, w):
                            errors.append(1)

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for t in threads:
            t.start()
        caller()
        for t in threads:
            t.join()
        assert not errors
    finally:
        kernels.set_threads(before)


# ------------------------------------------------------------------ prepare / supports
def test_supports_and_prepare_converts_unsupported_types(capsys):
    assert all(kernels.supports(t) for t in ALL)
    assert not kernels.supports(T.IQ4_NL) and not kernels.supports(999)
    rng = np.random.default_rng(6)
    data = rng.integers(0, 256, size=(4 * 2, 18), dtype=np.uint8)  # IQ4_NL: d f16 + 16 nibble indices
    data[:, :2] = np.array([0.05], np.float16).view(np.uint8)
    w = QTensor("iq", T.IQ4_NL, (4, 64), data.reshape(4, -1))
    p = kernels.prepare(w)
    assert p.qtype == T.Q8_0 and p.shape == (4, 64)
    assert "converted IQ4_NL -> Q8_0" in capsys.readouterr().err
    x = gauss_x(64)
    ref = gguf_dequantize(w.data, T.IQ4_NL).astype(np.float64) @ x
    assert rel_err(kernels.matvec(p, x), ref) < GAUSS_X_TOL
    q = make_weight(T.Q4_1, 2, 32)
    assert kernels.prepare(q) is q


# ------------------------------------------------------------------ portable code path
@pytest.mark.slow
def test_portable_path_without_vnni_or_f16c(tmp_path):
    """Compile for a CPU without VNNI/F16C (the portable IR) and compare with this one's results;
    the portable float -> f16 rounding of the half activation bit for bit with NumPy's."""
    from numba.core.codegen import get_host_cpu_features

    feats = get_host_cpu_features()
    for f in ("avx512vnni", "avxvnni", "f16c", "avx512fp16", "avxvnniint8"):
        feats = feats.replace(f"+{f},", f"-{f},").replace(f"+{f}", f"-{f}")
    script = (
        "import numpy as np, sys; sys.path.insert(0, %r)\n"
        "from test_kernels import make_weight, gauss_x, ALL\n"
        "from llamalab import kernels\n"
        "from llamalab.kernels import simd\n"
        "assert not simd.HAS_VNNI and not simd.HAS_F16C\n"
        "np.save(sys.argv[1], np.stack([kernels.matvec(make_weight(t, 6, 256), gauss_x(256)) for t in ALL]))\n"
        "from llamalab.kernels.activation import halve_x\n"
        "x = np.load(sys.argv[2]); xh, xm = np.empty(x.size, np.int16), np.empty(1, np.float32)\n"
        "halve_x(x, xh, xm); np.save(sys.argv[3], xh)\n"
    ) % os.path.dirname(__file__)
    # every rounding case: normal, halfway (ties to even), subnormal, underflow to zero, nan
    x = np.concatenate([np.random.default_rng(5).standard_normal(4000).astype(np.float32) * 3000,
                        np.float32([16383.0, 16382.5, 16381.5, 2049.0, 2051.0, 1e-5, 6e-8, 3e-8, 1e-9, -0.0, np.nan])])
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, NUMBA_CPU_FEATURES=feats, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.npy"), str(tmp_path / "x.npy"), str(tmp_path / "xh.npy")],
                   env=env, check=True, timeout=600)
    assert np.abs(x[:-1]).max() < 16384  # so s = 1 and NumPy's rounding of x itself is the reference
    np.testing.assert_array_equal(np.load(tmp_path / "xh.npy"), x.astype(np.float16).view(np.int16))
    portable = np.load(tmp_path / "out.npy")
    here = np.stack([kernels.matvec(make_weight(t, 6, 256), gauss_x(256)) for t in ALL])
    np.testing.assert_allclose(portable, here, rtol=1e-5, atol=1e-5)


def test_threads_for_load_leaves_the_cores_other_processes_hold(monkeypatch):
    """LLM() without a thread count: one thread per core other processes leave, at least one."""
    from llamalab.kernels import threads

    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    assert [kernels.threads_for_load(2, b) for b in (None, 0.0, 0.4, 0.6, 1.0, 1.6, 5.0)] == [2, 2, 2, 1, 1, 1, 1]
    assert kernels.threads_for_load(1, 0.0) == 1  # never more than asked


def test_busy_cores_subtracts_this_process_and_never_sleeps(monkeypatch):
    samples = iter([(10.0, 100.0, 5.0), (10.01, 100.0, 5.0), (12.0, 103.0, 6.0), (13.0, 103.2, 6.5)])
    probe = kernels.BusyCores()
    monkeypatch.setattr(probe, "_sample", lambda: next(samples))
    assert probe() is None  # the first call starts the clock
    assert probe() is None  # 10 ms later: too short to tell
    assert probe() == pytest.approx((3.0 - 1.0) / 2.0)  # 3 busy CPU-seconds in 2 s, 1 of them ours
    assert probe() == 0.0  # we used more than the machine's busy time grew: clamped
    live = kernels.BusyCores()
    assert live() is None and live._last is not None  # psutil's real counters


@pytest.mark.parametrize("nb", [1, 3, 4, 8, 9, 11])
def test_activation_bytes_rebuild_xq_exactly(nb):
    """xm's byte section (the K-quants' byte dots) holds xq as 256 * high + low, blocks paired
    two apart within quads as 64 low bytes then 64 high bytes, the last nb % 4 as 32 + 32, and
    nothing is written past the section (its end and xm's other sections keep their sentinel)."""
    from llamalab.kernels.activation import META_PER_BLOCK, XB, quantize_x

    x = np.random.default_rng(nb).standard_normal(32 * nb).astype(np.float32) * 3
    x[5] = -x[:32].__abs__().max() * 2  # a block reaching -32767: the high byte's extreme
    xq = np.empty(32 * nb, np.int16)
    xm = np.full(META_PER_BLOCK * nb + 16, np.float32(1234.5), np.float32)  # 16 floats of sentinel after the end
    quantize_x(x, xq, xm[: META_PER_BLOCK * nb])
    raw = xm[XB * nb : (XB + 16) * nb].view(np.uint8)  # (64 nb,) bytes
    for b in range(nb):
        if b < nb // 4 * 4:  # quads: pairs (4q, 4q + 2), (4q + 1, 4q + 3), 64 low then 64 high bytes each
            start, gap = 256 * (b // 4) + 128 * (b % 2) + 32 * (b % 4 // 2), 64
        else:
            start, gap = 64 * b, 32
        low = raw[start : start + 32].astype(np.int32)
        high = raw[start + gap : start + gap + 32].view(np.int8).astype(np.int32)
        np.testing.assert_array_equal(256 * high + low, xq[32 * b : 32 * b + 32].astype(np.int32))
    assert (xm[META_PER_BLOCK * nb :] == np.float32(1234.5)).all()
    assert xq.min() == -32767


@pytest.mark.parametrize("nb", [1, 3, 4, 8, 9, 11])
def test_activation_8bit_section_is_llama_cpps_rounding(nb):
    """The 8-bit activation: x8 = round(x / xd8), xd8 = max|x| / 127 per block of 32 (llama.cpp's
    q8_0 rounding), its bytes paired like xq's (32 per block), the sums per 16 and the rounding
    error of each block, nothing written past xm's end."""
    from llamalab.kernels.activation import META_PER_BLOCK, XB8, XD8, XERR8, XSQ8, quantize_x

    x = np.random.default_rng(nb).standard_normal(32 * nb).astype(np.float32) * 3
    x[40 % (32 * nb)] = 0.0
    xq = np.empty(32 * nb, np.int16)
    xm = np.full(META_PER_BLOCK * nb + 16, np.float32(1234.5), np.float32)
    quantize_x(x, xq, xm[: META_PER_BLOCK * nb])
    blocks = x.reshape(nb, 32)
    d8 = np.abs(blocks).max(1) / np.float32(127)
    np.testing.assert_array_equal(xm[XD8 * nb : (XD8 + 1) * nb], d8.astype(np.float32))
    q8 = np.rint(blocks * (np.float32(1) / d8.astype(np.float32))[:, None]).astype(np.int32)  # (nb, 32)
    assert np.abs(q8).max() == 127
    raw = xm[XB8 * nb : (XB8 + 8) * nb].view(np.int8)  # (32 nb,) bytes
    for b in range(nb):
        start = 128 * (b // 4) + 64 * (b % 2) + 32 * (b % 4 // 2) if b < nb // 4 * 4 else 32 * b
        np.testing.assert_array_equal(raw[start : start + 32].astype(np.int32), q8[b])
    np.testing.assert_array_equal(xm[XSQ8 * nb : (XSQ8 + 2) * nb], q8.reshape(nb * 2, 16).sum(1).astype(np.float32))
    err = (blocks.astype(np.float64) - q8 * d8[:, None].astype(np.float64)).sum(1)
    np.testing.assert_allclose(xm[XERR8 * nb : (XERR8 + 1) * nb], err, rtol=1e-4, atol=1e-6)
    assert (xm[META_PER_BLOCK * nb :] == np.float32(1234.5)).all()


def test_f32_rows_are_the_same_with_and_without_software_prefetch():
    """The F32 row kernel's two variants (calibrate_f32 picks one per machine) give bitwise the
    same products, and the switch is read by the compiled code on every call."""
    from llamalab.kernels import floats, tuning

    w = make_weight(T.F32, 40, 1000, seed=3)  # 1000 cols: 64-wide steps, a 16-wide step and a scalar tail
    x = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    floats.calibrate_f32()
    chosen = tuning.get(tuning.F32_SOFT_PREFETCH)
    try:
        outs = {}
        for soft in (1, 0):
            tuning.set(tuning.F32_SOFT_PREFETCH, soft)
            outs[soft] = kernels.matvec(w, x).copy()
        np.testing.assert_array_equal(outs[0], outs[1])
        ref = w.dequantize().astype(np.float64) @ x
        assert np.abs(outs[0] - ref).max() <= FLOAT_TOL * np.linalg.norm(ref)
    finally:
        tuning.set(tuning.F32_SOFT_PREFETCH, chosen)
    assert chosen in (0, 1) and floats.calibrate_f32() == bool(chosen)  # measured once, then kept


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_f16_rows_are_the_same_with_each_prefetch(qtype):
    """F16/BF16 rows under LONG_COLS values prefetched into L1, into L2 or not at all (calibrate_f16
    picks one per machine) give bitwise the same products, read by the compiled code on every call."""
    from llamalab.kernels import floats, tuning

    w = make_weight(qtype, 40, 1000, seed=3)  # 1000 cols: 64-wide steps, a 16-wide step and a scalar tail
    x = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    chosen = floats.calibrate_f16()
    try:
        outs = []
        for mode in (floats.PF_L1, floats.PF_L2, floats.PF_NONE):
            tuning.set(tuning.F16_PREFETCH, mode)
            outs.append(kernels.matvec(w, x).copy())
        for out in outs[1:]:
            np.testing.assert_array_equal(out, outs[0])
        ref = w.dequantize().astype(np.float64) @ x
        assert np.abs(outs[0] - ref).max() <= FLOAT_TOL * np.linalg.norm(ref)
    finally:
        tuning.set(tuning.F16_PREFETCH, chosen)
    assert chosen in (floats.PF_L1, floats.PF_L2, floats.PF_NONE) and floats.calibrate_f16() == chosen  # measured once


# ------------------------------------------------------------------ the K-quants' int8 decode path
INT8_TOL = 1e-2  # 8-bit activations per 32 values, as llama.cpp rounds them: measured 2.4-5.4e-3 on Gaussian x
needs_int8 = pytest.mark.skipif(not kernels.kquants.BYTE_DOTS, reason="the int8 row kernels need VNNI")


def exact_x8(cols: int, seed: int = 1) -> np.ndarray:
    """x whose 8-bit block quantization is lossless: 2**-5 * integers in [-127, 127], each block hitting 127."""
    q = np.random.default_rng(seed).integers(-127, 128, size=cols)
    q[::32] = 127
    return (q * 2.0**-5).astype(np.float32)


@needs_int8
@pytest.mark.parametrize("cols", [256, 2048, 16384])  # 16384: the long-row variant (weights into L2 only)
@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
def test_int8_matvec_matches_reference(qtype, cols, threads):
    kernels.set_matvec_backend("int8")
    w = make_weight(qtype, 19, cols)
    x = exact_x8(cols)  # the integer path bit for bit, up to float32 summation
    assert rel_err(kernels.matvec(w, x), reference(w, x)) < EXACT_X_TOL
    x = gauss_x(cols)
    err = rel_err(kernels.matvec(w, x), reference(w, x))
    assert 1e-4 < err < INT8_TOL, f"{qtype.name}: rel err {err:.2e}"  # above 16-bit's: the 8-bit path ran


@needs_int8
@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
def test_int8_small_batches_equal_single_vectors_bitwise(qtype, threads):
    kernels.set_matvec_backend("int8")
    w = make_weight(qtype, 21, 512)
    X = np.random.default_rng(8).standard_normal((kernels.small_batch_limit() - 1, 512), dtype=np.float32)  # 4s + rest
    got = kernels.matmul(w, X)
    for i in range(len(X)):
        np.testing.assert_array_equal(got[i], kernels.matvec(w, X[i]))


def test_matvec_backend_setting_and_its_errors(monkeypatch):
    w, x = make_weight(T.Q4_K, 8, 256), gauss_x(256)
    kernels.set_matvec_backend("int")
    assert kernels.get_matvec_backend() == "int"
    y16 = kernels.matvec(w, x)
    kernels.set_matvec_backend("int8")
    assert kernels.get_matvec_backend() == ("int8" if kernels.kquants.BYTE_DOTS or kernels.simd.HAS_F16C else "int")
    if kernels.kquants.BYTE_DOTS:
        assert not np.array_equal(kernels.matvec(w, x), y16)
    legacy = make_weight(T.Q4_1, 8, 256)  # the legacy formats keep 16 bits
    kernels.set_matvec_backend("int")
    y = kernels.matvec(legacy, x)
    kernels.set_matvec_backend("int8")
    np.testing.assert_array_equal(kernels.matvec(legacy, x), y)
    with pytest.raises(InvalidArgumentError, match="matvec backend must be one of int8, int, got 'int4'"):
        kernels.set_matvec_backend("int4")
    from llamalab.kernels import products

    monkeypatch.setenv("LLAMALAB_MATVEC", "fp8")
    with pytest.raises(InvalidArgumentError, match="LLAMALAB_MATVEC must be one of int8, int, got 'fp8'"):
        products._initial_matvec_backend()
    monkeypatch.setenv("LLAMALAB_MATVEC", " INT ")
    products._initial_matvec_backend()
    assert kernels.get_matvec_backend() == "int"


# ------------------------------------------------------------------ F16/BF16 rows on the half activation (int8)
needs_f16c = pytest.mark.skipif(not kernels.simd.HAS_F16C, reason="the half activation needs F16C")


@pytest.fixture
def half_activation():
    """The half activation for F16/BF16 rows under int8, whatever floats.calibrate_f16 chose here."""
    from llamalab.kernels import floats, tuning

    floats.calibrate_f16()  # first, so that it cannot override the choice below
    before = tuning.get(tuning.F16_X32)
    tuning.set(tuning.F16_X32, 0)
    yield
    tuning.set(tuning.F16_X32, before)


def half_reference(w: QTensor, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W @ x exactly, sum |W| |x| per row): the half activation is within 2^-11 of the latter."""
    W = dequantize(w.data, w.qtype).astype(np.float64)
    return W @ x.astype(np.float64), np.abs(W) @ np.abs(x.astype(np.float64))


@needs_f16c
@pytest.mark.parametrize("cols", [100, 2048, 8192])  # 100: scalar tails; 8192: the long-row variant
@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
@pytest.mark.parametrize("scale", [1.0, 3e5, 1e-6])  # 3e5: past f16's 65504 unless x is scaled down
def test_half_activation_matvec_is_within_its_bound(qtype, cols, scale, threads, half_activation):
    kernels.set_matvec_backend("int8")
    w = make_weight(qtype, 19, cols)
    x = gauss_x(cols) * np.float32(scale)
    exact, size = half_reference(w, x)
    got = kernels.matvec(w, x)
    assert np.all(np.abs(got - exact) <= 2.0**-11 * size + 1e-6 * size)  # the rounding of x, then float32 sums
    kernels.set_matvec_backend("int")
    assert not np.array_equal(got, kernels.matvec(w, x))  # the half path ran: x in f32 gives other bits


@needs_f16c
def test_half_activation_is_x_scaled_by_a_power_of_two_then_rounded():
    from llamalab.kernels.activation import halve_x

    for x, s in ((np.float32([1.0, -3.0, 0.5, 20000.0]), 2.0**-1), (np.float32([1e-3, 0.0, -2e-3]), 2.0**22),
                 (np.zeros(3, np.float32), 1.0), (np.float32([np.inf, 2.0, np.nan]), 2.0**12)):
        xh, xm = np.empty(x.size, np.int16), np.empty(1, np.float32)
        halve_x(x, xh, xm)
        assert xm[0] == 1 / s  # max|x| s in [2^13, 2^14): no overflow, no subnormals for the large values
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(xh, (x * np.float32(s)).astype(np.float16).view(np.int16))


@needs_f16c
@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_half_activation_small_batches_and_fused_products_equal_single_vectors_bitwise(qtype, threads, half_activation):
    kernels.set_matvec_backend("int8")
    w, w2 = make_weight(qtype, 21, 512), make_weight(qtype, 9, 512, seed=2)
    X = np.random.default_rng(8).standard_normal((kernels.small_batch_limit() - 1, 512), dtype=np.float32)
    got = kernels.matmul(w, X)
    for i in range(len(X)):
        np.testing.assert_array_equal(got[i], kernels.matvec(w, X[i]))
    a, b = kernels.matvec_many([w, w2], X[0])
    np.testing.assert_array_equal(a, kernels.matvec(w, X[0]))
    np.testing.assert_array_equal(b, kernels.matvec(w2, X[0]))


@needs_f16c
@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_f16_rows_take_x_in_float32_under_int8_where_calibrated_faster(qtype):
    """calibrate_f16 measures the half activation against x in float32 once per process (tuning.F16_X32);
    with float32 x chosen, int8's F16/BF16 products are int's bit for bit, and no half activation is made."""
    from llamalab.kernels import floats, rows, tuning

    floats.calibrate_f16()
    assert tuning.get(tuning.F16_X32) in (0, 1)
    before = tuning.get(tuning.F16_X32)
    w = make_weight(qtype, 37, 2048 + 5)
    X = np.random.default_rng(11).standard_normal((3, 2048 + 5), dtype=np.float32)
    try:
        kernels.set_matvec_backend("int")
        want = kernels.matvec(w, X[0]).copy(), kernels.matmul(w, X).copy()
        kernels.set_matvec_backend("int8")
        tuning.set(tuning.F16_X32, 1)
        assert rows.activation_kind(int(qtype)) == rows.NO_ACTIVATION
        np.testing.assert_array_equal(kernels.matvec(w, X[0]), want[0])
        np.testing.assert_array_equal(kernels.matmul(w, X), want[1])
        tuning.set(tuning.F16_X32, 0)
        assert rows.activation_kind(int(qtype)) == rows.HALF_ACTIVATION
        assert not np.array_equal(kernels.matvec(w, X[0]), want[0])  # the half activation again
    finally:
        tuning.set(tuning.F16_X32, before)
        kernels.set_matvec_backend("int")
    assert floats.calibrate_f16() in (floats.PF_L1, floats.PF_L2, floats.PF_NONE)  # measured once: no change
    assert tuning.get(tuning.F16_X32) == before


@needs_f16c
def test_f16_rows_fused_with_a_block_format_dot_with_x_itself():
    """A product that needs the block activation too leaves F16 rows on float32 x (exact to 1e-5)."""
    kernels.set_matvec_backend("int8")
    w16, wq = make_weight(T.F16, 8, 256), make_weight(T.Q8_0, 8, 256)
    x = gauss_x(256)
    fused, _ = kernels.matvec_many([w16, wq], x)
    kernels.set_matvec_backend("int")
    np.testing.assert_array_equal(fused, kernels.matvec(w16, x))


@pytest.mark.parametrize("backend,cols", [("int", 4096 + 21), ("int8", 8192 + 21)])  # long rows, with tails
@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_long_float_rows_four_at_a_time_equal_one_at_a_time_bitwise(qtype, backend, cols, threads, half_activation):
    """matvec takes rows this long four per pass (floats._make_dot4); small batches take them one by one."""
    if backend == "int8" and not kernels.simd.HAS_F16C:
        pytest.skip("the half activation needs F16C")
    kernels.set_matvec_backend(backend)
    w = make_weight(qtype, 4 * 5 + 3, cols)
    X = np.random.default_rng(9).standard_normal((2, cols), dtype=np.float32)
    got = kernels.matmul(w, X)
    for i in range(len(X)):
        np.testing.assert_array_equal(got[i], kernels.matvec(w, X[i]))
    if backend == "int":
        assert rel_err(got[0], reference(w, X[0])) < FLOAT_TOL
