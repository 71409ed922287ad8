"""Compiled compute kernels: quantized matrix-vector and matrix-matrix products.

    matvec(w, x)            y = W @ x, straight from W's blocks (no float copy of W)
    matvec_many([wq, wk, wv], x)   several products sharing x, one parallel region
    plan([wq, wk, wv])(x)   the same, validated once: the per-call cost of a decode step
    matmul(w, X)            Y = X @ W.T for a batch of n vectors (prefill, batched decode)
    set_threads(n) / get_threads()
    set_gemm_backend('amx' | 'blas') / get_gemm_backend()   large batches (n > small_batch_limit())

W is a ``QTensor`` (uint8 rows of ggml blocks). Quantized formats are dotted in
integers against x quantized to 8-bit blocks of 32 (as llama.cpp does), so results
differ from the exact float product by the activation rounding: about 1e-2 of the
output's norm at worst, typically 3e-3 (see tests/test_kernels.py for per-format
bounds). Float formats (F32, F16, BF16) are exact up to float32 summation order.
Batches above ``small_batch_limit()`` vectors run on AMX bf16 tiles where available
(~3e-3 relative error), else on BLAS with dequantized float32 panels (exact).

Every argument is validated here, in Python, before any compiled code runs: a
kernel never sees a buffer shorter than its shape says.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from ..tensor import QTensor
from .cache_guard import drop_stale_cache

drop_stale_cache()  # before any compiled kernel is loaded from the cache

import numba  # noqa: E402

from . import parallel  # noqa: E402
from .gemm import get_backend as get_gemm_backend  # noqa: E402
from .gemm import matmul_large  # noqa: E402
from .gemm import set_backend as set_gemm_backend  # noqa: E402
from .rows import KERNEL_TYPES, QUANT_TYPES  # noqa: E402

__all__ = [
    "MatvecPlan", "get_gemm_backend", "get_threads", "matmul", "matvec", "matvec_many", "plan", "prepare",
    "set_gemm_backend", "set_threads", "small_batch_limit", "supports", "warmup",
]

# ------------------------------------------------------------------ threads
_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def _default_threads() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        n = None
    return max(1, min(n or os.cpu_count() or 1, _MAX_THREADS))


_threads = _default_threads()
_local = threading.local()  # numba's thread count is per calling thread: remember what each one has


def set_threads(n: int) -> int:
    """Use n threads for the kernels and for BLAS (capped at Numba's maximum); returns the count in use."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidArgumentError(f"threads must be a positive integer, got {n!r}")
    _threads = int(min(n, _MAX_THREADS))
    _sync_threads()
    from threadpoolctl import threadpool_limits

    threadpool_limits(_threads, user_api="blas")
    return _threads


def get_threads() -> int:
    """The number of threads the kernels use."""
    return _threads


def _sync_threads() -> None:
    # the server may call from another Python thread than the one that called set_threads
    if getattr(_local, "threads", None) != _threads:
        numba.set_num_threads(_threads)
        _local.threads = _threads


# ------------------------------------------------------------------ weights
def supports(qtype) -> bool:
    """True if the kernels run this ggml type directly (others go through ``prepare``)."""
    try:
        return GGMLQuantizationType(qtype) in KERNEL_TYPES
    except ValueError:
        return False


class _Plan:
    """A validated weight: type code, read-only data view, shape."""

    __slots__ = ("ref", "qt", "data", "rows", "cols", "name")

    def __init__(self, w: QTensor):
        name = getattr(w, "name", "?")
        try:
            qtype = GGMLQuantizationType(w.qtype)
        except ValueError:
            raise UnsupportedModelError(f"tensor '{name}': unknown ggml type {w.qtype!r}") from None
        if qtype not in KERNEL_TYPES:
            raise UnsupportedModelError(
                f"tensor '{name}': type {qtype.name} has no compiled kernel; call kernels.prepare(w) first"
            )
        if len(w.shape) != 2 or min(w.shape) < 1:
            raise ModelFormatError(f"tensor '{name}': expected a 2-D shape (rows, cols), got {tuple(w.shape)}")
        rows, cols = (int(s) for s in w.shape)
        block, size = GGML_QUANT_SIZES[qtype]
        if cols % block:
            raise ModelFormatError(f"tensor '{name}': {qtype.name} needs cols divisible by {block}, got {cols}")
        data = w.data
        want = (rows, cols // block * size)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != want:
            got = f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
            raise ModelFormatError(f"tensor '{name}': data must be uint8 {want} for {qtype.name} {w.shape}, got {got}")
        if not data.flags.c_contiguous:
            raise ModelFormatError(f"tensor '{name}': data must be C-contiguous")
        view = data.view()
        view.flags.writeable = False  # one compiled specialization: read-only uint8 (rows, row_bytes)
        self.ref = weakref.ref(w)
        self.qt, self.data, self.rows, self.cols, self.name = int(qtype), view, rows, cols, name


_plans: dict[int, _Plan] = {}


def _plan(w) -> _Plan:
    p = _plans.get(id(w))
    if p is not None and p.ref() is w:
        return p
    if not isinstance(w, QTensor):
        raise InvalidArgumentError(f"expected a QTensor weight, got {type(w).__name__}")
    p = _Plan(w)
    key = id(w)
    _plans[key] = p
    weakref.finalize(w, _plans.pop, key, None)
    return p


def prepare(w: QTensor) -> QTensor:
    """Validate w for the kernels; a type without a kernel is converted once (to Q8_0, or
    F32 when cols is not a multiple of 32), with a one-line notice on stderr."""
    if supports(w.qtype):
        _plan(w)
        return w
    from gguf.quants import dequantize as gguf_dequantize

    name = getattr(w, "name", "?")
    try:
        qtype = GGMLQuantizationType(w.qtype)
        values = gguf_dequantize(np.asarray(w.data), qtype).reshape(w.shape)  # (rows, cols) float32
    except (ValueError, NotImplementedError) as err:
        raise UnsupportedModelError(f"tensor '{name}': type {w.qtype!r} cannot be read ({err})") from None
    target = GGMLQuantizationType.Q8_0 if w.shape[-1] % 32 == 0 else GGMLQuantizationType.F32
    from ..quants import quantize

    data = quantize(values.astype(np.float32), target)
    print(f"llamalab: tensor '{name}' converted {qtype.name} -> {target.name} (no compiled kernel for {qtype.name})",
          file=sys.stderr)
    out = QTensor(name, target, tuple(w.shape), data)
    _plan(out)
    return out


# ------------------------------------------------------------------ activations
_F32 = np.dtype(np.float32)


def _vector(x, cols: int, what: str) -> np.ndarray:
    """x as float32 C-contiguous (cols,): converted if needed, InvalidArgumentError on a wrong shape."""
    if type(x) is not np.ndarray or x.dtype != _F32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != (cols,):
        raise InvalidArgumentError(f"{what} must have shape ({cols},), got {x.shape}")
    return x


def _output(out, shape: tuple[int, ...], what: str, source: np.ndarray, index: int | None = None) -> np.ndarray:
    """A float32 C-contiguous writable array of this shape, not overlapping source.
    ``what`` (and ``index``, for a list) name the parameter in error messages."""
    if out is None:
        return np.empty(shape, np.float32)
    if index is not None and (type(out) is not np.ndarray or out.dtype != _F32 or out.shape != shape
                              or not out.flags.c_contiguous):
        what = f"{what}[{index}]"
    if type(out) is not np.ndarray or out.dtype != _F32 or out.shape != shape:
        got = f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        raise InvalidArgumentError(f"{what} must be a float32 array of shape {shape}, got {got}")
    flags = out.flags
    if not (flags.c_contiguous and flags.writeable):
        raise InvalidArgumentError(f"{what} must be a writable C-contiguous array")
    if out.base is not None or source.base is not None or out is source:  # views: check for overlap
        if np.may_share_memory(out, source):
            raise InvalidArgumentError(f"{what} must not overlap the input")
    return out


# ------------------------------------------------------------------ products
def matvec(w: QTensor, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = W @ x. w: QTensor (rows, cols); x: float32 (cols,); out: float32 (rows,) or None."""
    p = _plan(w)
    x = _vector(x, p.cols, "x")
    out = _output(out, (p.rows,), "out", x)
    _sync_threads()
    parallel.matvec_rows(p.qt, p.data, x, out)
    return out


_NO_ROWS = np.zeros((0, 1), np.uint8)  # an unused slot of matvec3_rows: 0 rows
_NO_ROWS.flags.writeable = False
_NO_OUT = np.zeros(0, np.float32)
_F32_CODE = int(GGMLQuantizationType.F32)


def matvec_many(ws: list[QTensor], x: np.ndarray, outs: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """[W @ x for W in ws] for weights sharing x (Q/K/V, gate/up): one quantization of x
    and one parallel region per three weights. All ws must have the same cols."""
    plans = [_plan(w) for w in ws]
    if not plans:
        return []
    cols = plans[0].cols
    for p in plans:
        if p.cols != cols:
            raise InvalidArgumentError(f"matvec_many: '{p.name}' has {p.cols} cols, '{plans[0].name}' has {cols}")
    x = _vector(x, cols, "x")
    if outs is None:
        outs = [np.empty(p.rows, np.float32) for p in plans]
    elif len(outs) != len(plans):
        raise InvalidArgumentError(f"matvec_many: {len(plans)} weights but {len(outs)} outputs")
    else:
        outs = [_output(o, (p.rows,), "outs", x, i) for i, (o, p) in enumerate(zip(outs, plans))]
    _sync_threads()
    for i in range(0, len(plans), 3):
        a = plans[i]
        b = plans[i + 1] if i + 1 < len(plans) else None
        c = plans[i + 2] if i + 2 < len(plans) else None
        parallel.matvec3_rows(
            a.qt, a.data, outs[i],
            b.qt if b else _F32_CODE, b.data if b else _NO_ROWS, outs[i + 1] if b else _NO_OUT,
            c.qt if c else _F32_CODE, c.data if c else _NO_ROWS, outs[i + 2] if c else _NO_OUT,
            x,
        )
    return outs


class MatvecPlan:
    """Products of x with fixed weights, validated once; calling it returns the plan's own
    output buffers (overwritten by the next call), so a decode step pays only for checking x.

        qkv = kernels.plan([wq, wk, wv])      # at load time
        q, k, v = qkv(x)                      # per token: one compiled call per 3 weights
    """

    def __init__(self, ws: list[QTensor]):
        plans = [_plan(w) for w in ws]
        if not plans:
            raise InvalidArgumentError("plan: needs at least one weight")
        self.cols = plans[0].cols
        for p in plans:
            if p.cols != self.cols:
                raise InvalidArgumentError(f"plan: '{p.name}' has {p.cols} cols, '{plans[0].name}' has {self.cols}")
        self.outs = [np.empty(p.rows, np.float32) for p in plans]
        self._calls = []
        for i in range(0, len(plans), 3):
            slots = [(p.qt, p.data, o) for p, o in zip(plans[i:i + 3], self.outs[i:i + 3])]
            slots += [(_F32_CODE, _NO_ROWS, _NO_OUT)] * (3 - len(slots))
            self._calls.append(tuple(v for slot in slots for v in slot))

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = _vector(x, self.cols, "x")
        _sync_threads()
        for args in self._calls:
            parallel.matvec3_rows(*args, x)
        return self.outs


def plan(ws: list[QTensor]) -> MatvecPlan:
    """A ``MatvecPlan`` for weights sharing their input (see its docstring)."""
    return MatvecPlan(ws)


# Up to this many vectors matmul runs the int8 row kernels (weights decoded once per 4
# vectors); above, the large-batch backend. Measured crossovers (1 thread, SmolLM2 shapes):
# AMX overtakes at 12-16 vectors, BLAS (dequantized f32 panels) only beyond 32.
SMALL_BATCH = {"amx": 12, "blas": 32}


def small_batch_limit() -> int:
    """The largest batch that matmul runs on the int8 row kernels with the current backend."""
    return SMALL_BATCH[get_gemm_backend()]




def matmul(w: QTensor, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Y = X @ W.T. w: QTensor (rows, cols); X: float32 (n, cols); out: float32 (n, rows) or None."""
    p = _plan(w)
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != p.cols:
        raise InvalidArgumentError(f"X must have shape (n, {p.cols}), got {X.shape}")
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    out = _output(out, (n, p.rows), "out", X)
    if n == 0:
        return out
    _sync_threads()
    if n <= SMALL_BATCH[get_gemm_backend()]:
        parallel.matmul_rows(p.qt, p.data, X, out)
    else:
        matmul_large(p.qt, p.data, X, out)
    return out


def warmup() -> float:
    """Compile (or load from Numba's cache) the kernels now, so the first real call is fast:
    matvec, fused matvecs, small batches and the current large-batch backend. All formats
    share these compiled entry points. Returns the seconds it took (~30 s of CPU the first
    time on a machine, well under a second from the cache)."""
    import time

    t0 = time.perf_counter()
    cols = 256
    w = QTensor("warmup", GGMLQuantizationType.Q4_1, (2, cols), np.zeros((2, cols // 32 * 20), np.uint8))
    x = np.ones(cols, np.float32)
    matvec(w, x)
    matvec_many([w, w], x)
    matmul(w, np.ones((2, cols), np.float32))
    matmul(w, np.ones((small_batch_limit() + 1, cols), np.float32))
    return time.perf_counter() - t0


numba.set_num_threads(_threads)
