"""Large-batch products (prefill): AMX bf16 tiles, 16-bit integer GEMM, or BLAS.

For n vectors of x, the FLOPs grow with n while W is read once, so past a handful of
vectors the work is a real matrix product:

  * ``amx``: ``amx.matmul_amx`` (bf16 operands, float32 sums; ~3e-3 relative error).
  * ``int``: ``intgemm.matmul_int``, quantized formats and F16/BF16: 16-bit weights x 16-bit
    activations with ``vpdpwssd`` (the decode path's accuracy, ~3e-5; F16/BF16 weights
    rounded to 13 bits per group of 32, ~2e-4).
  * ``int8``: ``intgemm.matmul_int8``, quantized formats only: 8-bit activations
    with ``vpdpbusd``, as llama.cpp rounds them (~5e-3 per product, 2-5% of the logits
    after a whole model), ~1.6x ``int``'s speed. 'auto' times it only for batches of
    BIG_BATCH and more on machines without AMX (``candidates``).
  * ``blas``: panels of W's rows are dequantized into float32 buffers and ``X @ panel.T``
    goes to OpenBLAS, written straight into the matching columns of ``out`` (exact
    float32 products). The panels are shared out among our own threads (the caller and
    ``threads - 1`` helpers, each claiming the next panel), each calling BLAS with one
    thread: OpenBLAS's own threads busy-wait after every call, and beside Numba's on the
    same cores they made 2 threads 6x slower than 1 (issue 12: pp128 54 -> 8.4 tok/s).

The backend is ``auto`` unless ``LLAMALAB_GEMM`` (or ``set_backend``) names one: then
each weight shape (type, rows, cols; batches of BIG_BATCH and more apart) is timed once on every backend that can run it, on
the first large batch it meets (best of 3, the batch's own inputs), and keeps the fastest
for the rest of the process (``choices()`` shows them). A shape costs ~5 extra products
once; a model has 5-7 shapes. Measured speed, not the CPU's flags, decides: on this AMX
machine AMX wins everywhere; without AMX, ``int8`` wins long prompts and ``int`` against BLAS
depends on the shape (rows padded to 512 values cost the int path, e.g. SmolLM2's 576).
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from ..errors import InvalidArgumentError
from . import amx, intgemm, threads
from .rows import row_dequantize

PANEL_BYTES = 1 << 20  # float32 panel size: large enough for BLAS, small enough to stay in L2
BACKENDS = ("amx", "int8", "int", "blas") if amx.AVAILABLE else ("int8", "int", "blas")
SETTINGS = ("auto",) + BACKENDS
_FORMATS = {"int": frozenset(int(t) for t in intgemm.INT_TYPES),  # type codes the integer backends take
            "int8": frozenset(int(t) for t in intgemm.INT8_TYPES)}


def _initial_backend() -> str:
    name = os.environ.get("LLAMALAB_GEMM", "").strip().lower() or "auto"
    if name not in SETTINGS:
        raise InvalidArgumentError(f"LLAMALAB_GEMM must be one of {', '.join(SETTINGS)} on this machine, got {name!r}")
    return name


_backend = _initial_backend()
_chosen: dict[tuple[int, int, int, bool], str] = {}  # (type code, rows, cols, n >= BIG_BATCH) -> backend
BIG_BATCH = 64  # batches from here on are timed apart from smaller ones (warm-up, batched decode)


def set_backend(name: str) -> None:
    """Choose the large-batch backend: 'auto' (the fastest per weight shape, measured),
    'amx' (if available), 'int' or 'blas'."""
    global _backend
    if name not in SETTINGS:
        raise InvalidArgumentError(f"gemm backend must be one of {', '.join(SETTINGS)}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The large-batch backend setting ('auto' or a backend's name)."""
    return _backend


def choices() -> dict[tuple[int, int, int, bool], str]:
    """What 'auto' picked so far: (type code, rows, cols, n >= BIG_BATCH) -> backend."""
    return dict(_chosen)


_RUN = {"amx": lambda qt, data, X, out: amx.matmul_amx(qt, data, X, out),
        "int": lambda qt, data, X, out: intgemm.matmul_int(qt, data, X, out),
        "int8": lambda qt, data, X, out: intgemm.matmul_int8(qt, data, X, out),
        "blas": lambda qt, data, X, out: matmul_blas(qt, data, X, out)}


def candidates(qt: int, big: bool = True) -> tuple[str, ...]:
    """The backends 'auto' times for weights of type code qt, for batches of BIG_BATCH vectors
    or more (big) or fewer. int8 only for big batches and only where AMX is not in use: its 8-bit
    activations are llama.cpp's rounding and move a model's logits by 2-5%, where AMX's bf16
    tiles move them by 0.4% and are faster still; without AMX it is ~1.6x the 16-bit path, the
    difference between trailing llama.cpp on long prompts and leading it. Batches under
    BIG_BATCH (short prompts, batched decode) keep 16-bit activations, the decode path's
    accuracy; ``LLAMALAB_GEMM=int`` keeps them everywhere."""
    return tuple(b for b in BACKENDS if _runs(b, qt) and (b != "int8" or (big and not amx.AVAILABLE)))


def _runs(backend: str, qt: int) -> bool:
    return backend not in _FORMATS or qt in _FORMATS[backend]


def _calibrate(qt: int, data: np.ndarray, X: np.ndarray, out: np.ndarray) -> str:
    """Time each candidate three times, alternating, on this product (the first run also
    compiles or loads it: not counted); the fastest wins. (Best of two picked BLAS over the
    1.3x faster integer path for an F16 shape on this shared machine.) ``out`` ends up
    holding the chosen backend's result, so that the first product of a shape is bitwise the
    later ones (the backends round differently: int8 and int differ by ~1e-2)."""
    import time

    names = candidates(qt, X.shape[0] >= BIG_BATCH)
    best = {}
    for name in names:
        _RUN[name](qt, data, X, out)
    for _ in range(3):
        for name in names:
            t0 = time.perf_counter()
            _RUN[name](qt, data, X, out)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    chosen = min(names, key=best.__getitem__)
    if chosen != names[-1]:  # out holds the last one's result: the first product must equal the later ones
        _RUN[chosen](qt, data, X, out)
    return chosen


def backend_for(qt: int, rows: int, cols: int, n: int) -> str | None:
    """The backend a product of n vectors with this weight shape runs on (None: 'auto' has
    not timed it yet). 'int' or 'int8' set for a float format means BLAS."""
    if _backend != "auto":
        return _backend if _runs(_backend, qt) else "blas"
    return _chosen.get((qt, rows, cols, n >= BIG_BATCH))


def matmul_large(qt: int, data: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """out (n, rows) = X (n, cols) @ W.T, W given as validated (qt, data (rows, row_bytes))."""
    n = X.shape[0]
    name = backend_for(qt, data.shape[0], X.shape[1], n)
    if name is None:
        _chosen[(qt, data.shape[0], X.shape[1], n >= BIG_BATCH)] = _calibrate(qt, data, X, out)
        return
    _RUN[name](qt, data, X, out)


@njit(cache=True, nogil=True)
def _dequantize_panel(qt, w, r0, dst):
    """dst (k, cols) = rows r0 .. r0 + k of w as float32, in the calling thread (GIL released)."""
    for i in range(dst.shape[0]):
        row_dequantize(qt, w[r0 + i], dst[i])


_helpers: ThreadPoolExecutor | None = None
_helpers_size = 0
_helpers_lock = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    """n helper threads (idle ones block on a queue: they never spin)."""
    global _helpers, _helpers_size
    with _helpers_lock:
        if _helpers is None or _helpers_size != n:
            if _helpers is not None:
                _helpers.shutdown(wait=False)
            _helpers = ThreadPoolExecutor(max_workers=n, thread_name_prefix="llamalab-blas")
            _helpers_size = n
        return _helpers


def matmul_blas(qt: int, data: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """The BLAS path of ``matmul_large``: panels claimed one at a time by each thread."""
    rows, cols = out.shape[1], X.shape[1]
    panel = max(1, min(rows, PANEL_BYTES // (4 * cols)))
    n_panels = (rows + panel - 1) // panel
    threads.limit_blas()
    claim = itertools.count()  # next() is atomic under the GIL

    def work() -> None:
        buf = np.empty((panel, cols), np.float32)  # (panel, cols), one per thread
        for p in iter(claim.__next__, None):
            if p >= n_panels:
                return
            r0 = p * panel
            k = min(panel, rows - r0)
            _dequantize_panel(qt, data, r0, buf[:k])
            np.matmul(X, buf[:k].T, out=out[:, r0 : r0 + k])  # (n, cols) @ (cols, k) -> (n, k)

    helpers = min(threads.get_threads(), n_panels) - 1
    futures = [_pool(threads.get_threads() - 1).submit(work) for _ in range(helpers)] if helpers > 0 else []
    work()
    for f in futures:
        f.result()
