"""The products: matvec, matvec_many, plan (MatvecPlan), matmul.

Each validates its arguments in Python (the weight once, via ``weights.plan_of``;
x and out on every call, cheaply) and then makes one call into ``parallel``.
"""

from __future__ import annotations

import os

import numpy as np
from gguf import GGMLQuantizationType

from ..errors import InvalidArgumentError
from ..runtime.tensor import QTensor
from . import kquants, parallel, threads, tuning
from .gemm import get_backend as get_gemm_backend
from .gemm import BIG_BATCH, matmul_large
from .simd import HAS_F16C
from .weights import plan_of

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


def matvec(w: QTensor, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = W @ x. w: QTensor (rows, cols); x: float32 (cols,); out: float32 (rows,) or None."""
    p = plan_of(w)
    x = _vector(x, p.cols, "x")
    out = _output(out, (p.rows,), "out", x)
    threads.sync()
    parallel.matvec_rows(p.qt, p.data, x, out)
    return out


_NO_ROWS = np.zeros((0, 1), np.uint8)  # an unused slot of matvec3_rows: 0 rows
_NO_ROWS.flags.writeable = False
_NO_OUT = np.zeros(0, np.float32)
_F32_CODE = int(GGMLQuantizationType.F32)


def matvec_many(ws: list[QTensor], x: np.ndarray, outs: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """[W @ x for W in ws] for weights sharing x (Q/K/V, gate/up): one quantization of x
    and one parallel region per three weights. All ws must have the same cols."""
    plans = [plan_of(w) for w in ws]
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
    threads.sync()
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
        plans = [plan_of(w) for w in ws]
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
        threads.sync()
        for args in self._calls:
            parallel.matvec3_rows(*args, x)
        return self.outs


def plan(ws: list[QTensor]) -> MatvecPlan:
    """A ``MatvecPlan`` for weights sharing their input (see its docstring)."""
    return MatvecPlan(ws)


# Up to this many vectors matmul runs the integer row kernels (weights decoded once per 4
# vectors: batched decode); above, the large-batch backend (prefill). The AMX crossover
# is at 12-16 vectors, BLAS's beyond 32. The integer path is the more exact one (SmolLM2
# logits: ~1e-4 relative error, bf16 AMX tiles ~1%, BLAS ~1e-6).
SMALL_BATCH = {"auto": 8, "amx": 8, "int8": 8, "int": 8, "blas": 8}


# The activations the decode row kernels (batches up to SMALL_BATCH) dot with:
#   int8  llama.cpp's: K-quants take x rounded to 8 bits per 32 values (~3e-4 of |w||x| per dot,
#         ~0.5% of a layer's output; one ``vpdpbusd`` per 64 values: on the AMD EPYC Zen 4 machine
#         Q4_K rows streamed from memory at 18.3-21.7 GB/s against 14.6-17.8, 2026-12-02), F16/BF16
#         rows x scaled by a power of two and rounded to f16 (within 2^-11 sum|w x|; activation.py)
#   int   the 16-bit integer activation for every block format (~5e-7 of |w||x|; 2-4e-5 of the
#         output), x itself (float32) for F16/BF16 rows
# The K-quants' 8-bit one needs VNNI, the half one F16C; without, their rows take int's. The legacy
# block formats (the default model's Q4_1) and F32 rows take int's always.
MATVEC_BACKENDS = ("int8", "int")


def set_matvec_backend(name: str) -> None:
    """'int8' (the default) or 'int': the activations of the decode row kernels (see MATVEC_BACKENDS)."""
    if name not in MATVEC_BACKENDS:
        raise InvalidArgumentError(f"matvec backend must be one of {', '.join(MATVEC_BACKENDS)}, got {name!r}")
    tuning.set(tuning.KQUANT_INT8, int(name == "int8" and kquants.BYTE_DOTS))
    tuning.set(tuning.HALF_X, int(name == "int8" and HAS_F16C))


def get_matvec_backend() -> str:
    """The decode activations in use: 'int8' (where this CPU can take any of its activations) or 'int'."""
    return "int8" if tuning.get(tuning.KQUANT_INT8) or tuning.get(tuning.HALF_X) else "int"


def _initial_matvec_backend() -> None:
    name = os.environ.get("LLAMALAB_MATVEC", "").strip().lower() or "int8"
    if name not in MATVEC_BACKENDS:
        raise InvalidArgumentError(f"LLAMALAB_MATVEC must be one of {', '.join(MATVEC_BACKENDS)}, got {name!r}")
    set_matvec_backend(name)


_initial_matvec_backend()


def small_batch_limit() -> int:
    """The largest batch that matmul runs on the integer row kernels with the current backend."""
    return SMALL_BATCH[get_gemm_backend()]


def matmul(w: QTensor, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Y = X @ W.T. w: QTensor (rows, cols); X: float32 (n, cols); out: float32 (n, rows) or None."""
    p = plan_of(w)
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != p.cols:
        raise InvalidArgumentError(f"X must have shape (n, {p.cols}), got {X.shape}")
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    out = _output(out, (n, p.rows), "out", X)
    if n == 0:
        return out
    threads.sync()
    if n <= SMALL_BATCH[get_gemm_backend()]:
        parallel.matmul_rows(p.qt, p.data, X, out)
    else:
        matmul_large(p.qt, p.data, X, out)
    return out


def warmup() -> float:
    """Compile (or load from Numba's cache) the kernels now, so the first real call is fast:
    matvec, fused matvecs, small batches and every large-batch backend 'auto' may pick. All formats
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
    # a long-prompt batch: 'auto' then runs every large-batch candidate once on this toy shape
    # (int8 among them where AMX is not in use), so none loads later, after warm-up
    matmul(w, np.ones((BIG_BATCH, cols), np.float32))
    return time.perf_counter() - t0
