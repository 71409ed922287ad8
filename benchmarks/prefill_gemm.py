"""Prefill products A/B: X (n, cols) @ W.T on one shape, each path alternated, best of N.

    PYTHONPATH=src python benchmarks/prefill_gemm.py --type Q4_K --rows 8192 --cols 2048 -n 128 -t 1,2

Paths: int (kernels/intgemm.py: 16-bit integer GEMM, vpdpwssd), int8 (8-bit activations, vpdpbusd), blas (dequantized float32
panels + OpenBLAS, one BLAS thread per kernel thread), amx (bf16 tiles, where present),
rows (the small-batch integer row kernels). Prints GFLOP/s (2 n rows cols per product).
The machine is shared: figures are noisy; compare paths within one run only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gguf import GGMLQuantizationType as T

from llamalab import kernels
from llamalab.kernels import amx, gemm, intgemm, parallel
from llamalab.quants import quantize
from llamalab.runtime.tensor import QTensor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--type", default="Q4_K")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="time by this thread's CPU time (1 thread only: robust on a busy machine)")
    ap.add_argument("--paths", default="int,blas" + (",amx" if amx.AVAILABLE else ""))
    a = ap.parse_args()
    qt = T[a.type]
    rng = np.random.default_rng(0)
    w = QTensor("w", qt, (a.rows, a.cols), quantize(rng.standard_normal((a.rows, a.cols), dtype=np.float32), qt))
    p = kernels.plan_of(w)
    X = rng.standard_normal((a.n, a.cols), dtype=np.float32)
    out = np.empty((a.n, a.rows), np.float32)
    runs = {"int": lambda: intgemm.matmul_int(p.qt, p.data, X, out), "int8": lambda: intgemm.matmul_int8(p.qt, p.data, X, out), "blas": lambda: gemm.matmul_blas(p.qt, p.data, X, out),
            "amx": lambda: amx.matmul_amx(p.qt, p.data, X, out), "rows": lambda: parallel.matmul_rows(p.qt, p.data, X, out)}
    paths = a.paths.split(",")
    flop = 2 * a.n * a.rows * a.cols
    clock = time.thread_time if a.cpu else time.perf_counter
    for t in (int(s) for s in a.t.split(",")):
        kernels.set_threads(t)
        kernels._sync()
        best = {k: float("inf") for k in paths}
        for k in paths:
            runs[k]()  # warm-up (compile or load)
        for _ in range(a.repeats):
            for k in paths:
                t0 = clock()
                runs[k]()
                best[k] = min(best[k], clock() - t0)
        cells = "  ".join(f"{k} {best[k] * 1e3:7.2f} ms {flop / best[k] / 1e9:6.1f} GFLOP/s" for k in paths)
        print(f"{a.type} {a.rows}x{a.cols} n={a.n} t={t}: {cells}", flush=True)


if __name__ == "__main__":
    main()
