"""How many threads the kernels (and BLAS) use.

Numba's thread count is set per calling Python thread, so the count chosen here is
re-applied lazily (``sync``) in whichever thread calls a kernel: the server's worker
thread gets the same setting as the thread that called ``set_threads``.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

from ..errors import InvalidArgumentError

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def default_threads() -> int:
    """Physical cores (psutil), else os.cpu_count(), capped at Numba's maximum."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        n = None
    return max(1, min(n or os.cpu_count() or 1, _MAX_THREADS))


_threads = default_threads()
_local = threading.local()  # the count each Python thread has applied to Numba


def set_threads(n: int) -> int:
    """Use n threads for the kernels and for BLAS (capped at Numba's maximum); returns the count in use."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidArgumentError(f"threads must be a positive integer, got {n!r}")
    _threads = int(min(n, _MAX_THREADS))
    sync()
    from threadpoolctl import threadpool_limits

    threadpool_limits(_threads, user_api="blas")
    return _threads


def get_threads() -> int:
    """The number of threads the kernels use."""
    return _threads


def sync() -> None:
    """Apply the thread count in the calling Python thread, if it has not been yet
    (Numba's OpenMP regions for batches; the matvec pool has threads - 1 workers)."""
    if getattr(_local, "threads", None) != _threads:
        numba.set_num_threads(_threads)
        _local.threads = _threads
        from .parallel import POOL

        POOL.resize(_threads - 1)
