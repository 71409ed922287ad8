"""``encode``: float32 rows -> ggml blocks, byte for byte what llama-quantize writes.

The quantized formats run ggml's reference quantizers ported to Numba (``encode_legacy``,
``encode_k``): serial compiled loops that release the GIL, run on a few Python threads over
slices of blocks (compiling them serial rather than ``parallel=True`` halves the first-use
compile time); F16 and BF16 round to nearest even as ggml does.
``quants.quantize`` (the simple K-quant fitting that ``lab/synth.py`` uses) is separate:
this module is for files that should match llama.cpp's own.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGMLQuantizationType as T

from ..errors import InvalidArgumentError
from . import encode_k, encode_legacy, format_of

_ENCODERS = {
    T.Q4_0: encode_legacy.encode_q4_0,
    T.Q4_1: encode_legacy.encode_q4_1,
    T.Q5_0: encode_legacy.encode_q5_0,
    T.Q5_1: encode_legacy.encode_q5_1,
    T.Q8_0: encode_legacy.encode_q8_0,
    T.Q2_K: encode_k.encode_q2_k,
    T.Q3_K: encode_k.encode_q3_k,
    T.Q4_K: encode_k.encode_q4_k,
    T.Q5_K: encode_k.encode_q5_k,
    T.Q6_K: encode_k.encode_q6_k,
}
ENCODABLE = frozenset(_ENCODERS) | {T.F32, T.F16, T.BF16}
_CHUNK_VALUES = 1 << 24  # encode in slices of about this many values (64 MiB of float32)


_pool: ThreadPoolExecutor | None = None


def _run(fn, blocks: np.ndarray, out: np.ndarray, threads: int) -> None:
    """fn(blocks, out) over ``threads`` contiguous slices at once."""
    global _pool
    if threads <= 1 or len(blocks) < 64:
        fn(blocks, out)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
    edges = np.linspace(0, len(blocks), threads + 1).astype(int)
    jobs = [_pool.submit(fn, blocks[a:b], out[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    for j in jobs:
        j.result()


def encode(x: np.ndarray, qtype: T, threads: int | None = None) -> np.ndarray:
    """float32 (..., cols) -> uint8 (..., row_bytes) in ``qtype``; cols a multiple of its block size.

    ``threads``: encoder threads (default: all cores)."""
    qtype = T(qtype)
    if qtype not in ENCODABLE:
        names = ", ".join(sorted(t.name for t in ENCODABLE))
        raise InvalidArgumentError(f"cannot encode {qtype.name} (encodable: {names})")
    fmt = format_of(qtype)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % fmt.block_size:
        raise InvalidArgumentError(
            f"encode: {qtype.name} needs rows whose length is a multiple of {fmt.block_size}, got shape {x.shape}"
        )
    row_bytes = x.shape[-1] // fmt.block_size * fmt.type_size
    if qtype in (T.F32, T.F16, T.BF16):
        return fmt.quantize_blocks(x.reshape(-1, 1)).reshape(*x.shape[:-1], row_bytes)
    blocks = np.ascontiguousarray(x).reshape(-1, fmt.block_size)  # (n_blocks, block_size)
    out = np.empty((len(blocks), fmt.type_size), np.uint8)  # (n_blocks, type_size)
    step = max(1, _CHUNK_VALUES // fmt.block_size)
    for start in range(0, len(blocks), step):
        chunk = blocks[start : start + step]
        if not np.isfinite(chunk).all():
            raise InvalidArgumentError(f"encode: {qtype.name} input holds NaN or infinity")
        _run(_ENCODERS[qtype], chunk, out[start : start + step], threads or os.cpu_count() or 1)
    return out.reshape(*x.shape[:-1], row_bytes)
