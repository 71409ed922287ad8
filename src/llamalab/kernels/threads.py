"""How many threads the kernels use, and how idle ones wait.

Numba's thread count is set per calling Python thread, so the count chosen here is
re-applied lazily (``sync``) in whichever thread calls a kernel: the server's worker
thread gets the same setting as the thread that called ``set_threads``.

Idle threads must not spin for long. On a machine where another process holds a core, a
thread that busy-waits between parallel regions takes CPU from the one doing the work: the
issue-12 measurement had the CLI at 2 threads 5-20x slower than ``-t 1`` beside one
busy process. So (``configure_wait_policy``, run when ``llamalab.kernels`` is imported,
before Numba starts its OpenMP threads) OpenMP threads spin ~1 ms after a region, enough
to bridge the gaps between a prefill's regions, then sleep (``OMP_WAIT_POLICY=passive`` with
``GOMP_SPINCOUNT``, unless the environment says otherwise), BLAS runs with
one thread of its own (``limit_blas``: OpenBLAS's threads spin after every call; the
BLAS path shares its panels out among our threads instead, gemm.py), and the decode
pool's workers spin ~100 us before they sleep (pool.py).
"""

from __future__ import annotations

import math
import os
import threading
import time

import numba
import numpy as np

from ..errors import InvalidArgumentError

_MAX_THREADS = numba.config.NUMBA_NUM_THREADS
# Spins of an idle OpenMP thread before it sleeps: 0.9-1.0 ms measured on the Zen 5 machine
# (tests/test_wait_policy.py; libgomp's own guess is ~100,000 spins a millisecond).
# A prefill runs hundreds of parallel regions a few tens of microseconds apart; a thread that
# sleeps at once must be woken by the next one, and on the AMD EPYC (Zen 5) VM that wake-up
# cost ~0.3 ms: a 512-value rms norm of 512 rows took 0.41 ms at 2 threads against 0.10 at 1,
# and SmolLM2's pp512 ran 555-578 tok/s at 2 threads against 501-541 at 1. With this count,
# alternated (llamalab bench -b llamalab -t 2, 3 rounds, 2026-12-02): SmolLM2 pp512 578-773 ->
# 726-946 tok/s (10,000) and 839-980 (100,000); 1B Q4_K_M pp128 152-183 -> 202-236 (30,000)
# and 195-243 (100,000). The price: beside a process that keeps a core busy, an explicit -t 2
# prefills at 0.23-0.41x of -t 1 (0.67-0.97x with no spin; benchmarks/busy.py, six runs, four in
# docs/bench/busy-2026-12-02-zen5.md), but the default count follows the load (1 thread there:
# no team, no spin) and stays at 0.95-1.04x.
# OMP_WAIT_POLICY=passive in the environment restores the sleep-at-once behaviour.
SPIN_COUNT = 30000


def configure_wait_policy() -> None:
    """Idle OpenMP threads spin ~1 ms (``GOMP_SPINCOUNT``), then sleep (an explicit
    OMP_WAIT_POLICY or GOMP_SPINCOUNT wins, and with either set we add no spin). Takes effect
    only before Numba's threading layer starts: ``llamalab.kernels`` calls it first thing on
    import, so entry points need not."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP, if Numba picks it


def default_threads() -> int:
    """Physical cores (psutil), else os.cpu_count(), capped at Numba's maximum."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        n = None
    return max(1, min(n or os.cpu_count() or 1, _MAX_THREADS))


class BusyCores:
    """How many cores other processes kept busy since the previous call: (the machine's busy
    CPU time - this process's) / wall time, from psutil's counters (steal counts as busy: the
    host ran someone else on our CPU). It never sleeps: the first call starts the clock and
    returns None, as does a call within 50 ms of the previous one."""

    def __init__(self) -> None:
        self._last: tuple[float, float, float] | None = None

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        busy = sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # guest time is inside user
        own = psutil.Process().cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def __call__(self) -> float | None:
        now = self._sample()
        last = self._last
        if last is not None and now[0] - last[0] < 0.05:
            return None
        self._last = now
        if last is None:
            return None
        return max(0.0, (now[1] - last[1] - (now[2] - last[2])) / (now[0] - last[0]))


def threads_for_load(n: int, busy: float | None) -> int:
    """Threads to use out of n when other processes keep `busy` cores busy: the cores left
    (rounded half up), at least 1. A thread on a core another process holds gets a fraction
    of it and the others wait for its share at every barrier: beside one busy process, 2
    threads measured 0.90-0.95x of 1 thread on this 2-core machine (benchmarks/busy.py)."""
    if busy is None:
        return n
    free = default_threads() - busy
    return max(1, min(n, math.floor(free + 0.5)))


_threads = default_threads()
_local = threading.local()  # the count each Python thread has applied to Numba
_blas = None  # threadpoolctl's controllers of the loaded BLAS libraries, found once


def set_threads(n: int) -> int:
    """Use n threads for the kernels (capped at Numba's maximum); returns the count in use."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidArgumentError(f"threads must be a positive integer, got {n!r}")
    _threads = int(min(n, _MAX_THREADS))
    sync()
    limit_blas()
    return _threads


def get_threads() -> int:
    """The number of threads the kernels use."""
    return _threads


def limit_blas() -> None:
    """BLAS calls from the kernels run on one thread each (re-applied if someone changed it:
    a get per call costs ~1 us)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    for lib in _blas:
        if lib.get_num_threads() != 1:
            lib.set_num_threads(1)


def sync() -> None:
    """Apply the thread count in the calling Python thread, if it has not been yet
    (Numba's OpenMP regions for batches; the matvec pool has threads - 1 workers)."""
    if getattr(_local, "threads", None) != _threads:
        numba.set_num_threads(_threads)
        _local.threads = _threads
        from .parallel import POOL

        POOL.resize(_threads - 1)
