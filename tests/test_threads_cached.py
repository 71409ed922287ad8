"""The large-batch products use every thread even when their cached machine code was compiled
by a one-thread process.

Numba freezes a module's globals into the machine code it caches. The integer and AMX GEMMs
once sized their parallel loop by a module constant (NUMBA_NUM_THREADS at import): after a
process with NUMBA_NUM_THREADS=1 (a benchmark worker, a pinned container) compiled them, every
later process ran its prompts on one thread — measured on the Intel machine, 2026-12-02: the
1B-shaped Q4_K_M pp128 at 2 threads without AMX fell from ~150 to 115 tok/s.

Two child processes share a fresh Numba cache: the first compiles at one thread, the second
runs at two and reports, per OS thread of the process, the CPU time it got during the product
(/proc/self/task/*/schedstat, nanoseconds). Two threads must have worked on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="per-thread CPU time from Linux /proc"),
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs"),
]

CHILD = """
import json, os, sys, time
import numpy as np
from gguf import GGMLQuantizationType as T
from llamalab import kernels
from llamalab.kernels import amx, gemm
from llamalab.runtime.tensor import QTensor

def on_cpu():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except OSError:
            pass
    return out

threads = int(sys.argv[1])
kernels.set_threads(threads)
rows, cols, n = 2048, 2048, 96
w = np.random.default_rng(0).integers(0, 256, (rows, cols // 32 * 18), dtype=np.uint8)  # Q4_0 blocks
w.reshape(rows, -1, 18)[:, :, :2] = np.array([0.01], np.float16).view(np.uint8)  # finite scales
q = QTensor("w", T.Q4_0, (rows, cols), w)
X = np.random.default_rng(1).standard_normal((n, cols), dtype=np.float32)
result = {}
for backend in ("int8", "int") + (("amx",) if amx.AVAILABLE else ()):
    gemm.set_backend(backend)
    kernels.matmul(q, X)  # compile, or load from the cache
    before = on_cpu()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.3:
        kernels.matmul(q, X)
    after = on_cpu()
    result[backend] = sum(1 for tid, ns in after.items() if ns - before.get(tid, ns) > 20_000_000)  # > 20 ms
print(json.dumps(result))
"""


def run(threads: int, cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "NUMBA_NUM_THREADS": str(threads), "LLAMALAB_AMX": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_products_use_two_threads_after_a_one_thread_process_compiled_them(tmp_path):
    cache = str(tmp_path / "numba-cache")
    one = run(1, cache)
    assert all(v == 1 for v in one.values()), one  # one thread: the product ran on exactly one
    two = run(2, cache)
    assert all(v == 2 for v in two.values()), f"threads that worked on the product, per backend: {two}"
