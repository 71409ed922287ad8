"""Compiled compute kernels: quantized matrix-vector and matrix-matrix products.

    matvec(w, x)            y = W @ x, straight from W's blocks (no float copy of W)
    matvec_many([wq, wk, wv], x)   several products sharing x, one parallel region
    plan([wq, wk, wv])(x)   the same, validated once: the per-call cost of a decode step
    matmul(w, X)            Y = X @ W.T for a batch of n vectors (prefill, batched decode)
    set_threads(n) / get_threads()
    release_compiler_pages()  after loading: LLVM's ~70 MiB of code out of memory until needed
    set_gemm_backend('auto' | 'amx' | 'int8' | 'int' | 'blas') / get_gemm_backend()   large batches (n > small_batch_limit());
        LLAMALAB_GEMM=... in the environment does the same; 'auto' times each weight shape once
    set_matvec_backend('int8' | 'int') / get_matvec_backend()   the decode activations: 'int8' (the
        default) llama.cpp's (K-quants 8 bits per 32, F16/BF16 rows x in f16), 'int' 16-bit integers
        and float32 x; LLAMALAB_MATVEC=... likewise

W is a ``QTensor`` (uint8 rows of ggml blocks). Quantized formats are dotted in
integers against x quantized to 16-bit blocks of 32 (llama.cpp uses 8 bits; VNNI
``vpdpwssd``, or for the K-quants ``vpdpbusd`` on the 16-bit values' two bytes, where the
CPU has it), so results differ from the exact float product by
the activation rounding: 4e-6 to 3e-5 of the output's norm on Gaussian data, bounded
at 1e-4 in tests/test_kernels.py. Where the CPU has VNNI the K-quants (Q2_K..Q6_K) decode
against x rounded to 8 bits per 32 values instead, as llama.cpp does (``set_matvec_backend``:
2-5e-3 of the output's norm, ~1.3x the rows' speed from memory); ``'int'`` keeps 16 bits. F32 rows
are exact up to float32 summation order in the row kernels, and so are F16/BF16 rows under ``'int'``;
under ``'int8'`` they dot with x scaled by a power of two and rounded to f16 (within 2^-11 sum|w x|;
up to 1.5x the rows' speed from memory, activation.py). Large batches may trade some of that for speed
where it measures faster (``gemm``): bf16 AMX tiles, F16/BF16 weights as 13-bit integer
codes, and, without AMX, 8-bit activations as llama.cpp rounds them (batches of 64+).

Modules: ``simd`` (LLVM IR building blocks), ``activation`` (x -> 16-bit and 8-bit blocks, or f16),
``tuning`` (per-machine choices measured at run time, read by compiled code),
``legacy`` / ``kquants`` / ``floats`` (one row of each block format), ``rows``
(dispatch by type code), ``parallel`` (the threaded entry points, also called from
compiled model code), ``amx`` / ``gemm`` (large batches), ``ops`` (RMSNorm, RoPE, SwiGLU and
attention, per token and per prompt chunk), ``weights`` / ``products`` /
``threads`` (the Python API), ``allocator`` (large temporaries reuse heap memory),
``cache_guard`` (stale Numba cache files), ``llvm_pages`` (LLVM's code handed back to the
OS once the kernels are loaded).
Batches above ``small_batch_limit()`` vectors run on the fastest, measured per weight
shape (gemm.py), of AMX bf16 tiles where available (~3e-3 relative error), the 16-bit
integer GEMM (``intgemm``, quantized formats, ~3e-5), its 8-bit-activation variant when set
(llama.cpp's rounding, ~5e-3) and BLAS on dequantized float32
panels (exact).

Every argument is validated here, in Python, before any compiled code runs: a
kernel never sees a buffer shorter than its shape says.
"""

from __future__ import annotations

from .threads import configure_wait_policy

configure_wait_policy()  # before Numba starts its OpenMP threads (on the first parallel call)

from .allocator import configure_allocator  # noqa: E402

configure_allocator()  # large temporaries from the heap: no fresh pages per layer of a prefill

from .cache_guard import drop_stale_cache  # noqa: E402

drop_stale_cache()  # before any compiled kernel is loaded from Numba's cache

from . import gemm, intgemm, parallel, rows  # noqa: E402
from .llvm_pages import release as release_compiler_pages  # noqa: E402
from .gemm import get_backend as get_gemm_backend  # noqa: E402
from .gemm import set_backend as set_gemm_backend  # noqa: E402
from .products import SMALL_BATCH, MatvecPlan, matmul, matvec, matvec_many, plan, small_batch_limit, warmup  # noqa: E402
from .products import get_matvec_backend, set_matvec_backend  # noqa: E402
from .threads import BusyCores, default_threads, get_threads, limit_blas, set_threads, threads_for_load  # noqa: E402
from .threads import sync as _sync  # noqa: E402
from .weights import plan_of, prepare, supports  # noqa: E402

__all__ = [
    "BusyCores", "MatvecPlan", "SMALL_BATCH", "default_threads", "gemm", "get_gemm_backend", "get_matvec_backend", "get_threads", "matmul", "matvec",
    "matvec_many", "parallel", "plan", "plan_of", "prepare", "release_compiler_pages", "rows", "set_gemm_backend", "set_matvec_backend",
    "set_threads", "limit_blas",
    "small_batch_limit", "supports", "threads_for_load", "warmup",
]

_sync()  # the importing thread starts with the default thread count
