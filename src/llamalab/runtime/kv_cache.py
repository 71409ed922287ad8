"""The KV cache: per-layer keys and values of every position seen so far.

State only, and it owns its writes: a layer stores its new keys and values with ``write``,
and once every layer has run, ``commit`` advances the position and records the tokens.
Layout is head-major, ``(n_layers, n_kv_heads, n_ctx, head_dim)``, so one head's
history is a contiguous ``(positions, head_dim)`` slab that attention reads in place.
The compiled decode step writes the same arrays from Numba, then commits here.
Sliding-window layers (``windows``) keep every position too: attention reads only the
window, so prefix reuse and truncation stay exact.

Users pick the storage by llama.cpp's names (``-ctk f16``; ollama's OLLAMA_KV_CACHE_TYPE):
``f16``, the default of ``LLM()``, the CLI and the server as it is llama.cpp's, halves the
memory and the bytes decode attention reads per token; ``f32`` keeps the keys and values exact
(the model's own ``new_cache`` defaults to it: the golden tests compare against llama.cpp runs
made with an f32 cache).
"""

from __future__ import annotations

import mmap

import numpy as np

from .config import ModelConfig
from ..errors import ContextOverflowError, InvalidArgumentError


KV_TYPES = {"f16": np.float16, "f32": np.float32}
DEFAULT_KV_TYPE = "f16"


def kv_dtype(kv_type: str) -> np.dtype:
    """The NumPy dtype of a KV cache type name (f16, f32; float16, float32 accepted too)."""
    name = {"float16": "f16", "float32": "f32"}.get(kv_type, kv_type) if isinstance(kv_type, str) else kv_type
    if name not in KV_TYPES:
        raise InvalidArgumentError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
    return np.dtype(KV_TYPES[name])


def _lazy_zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zeros in anonymous memory of our own (``mmap``), faulted in 4 KiB pages as positions are written.

    ``np.zeros`` of 4 MiB or more asks for transparent huge pages (NumPy's ``madvise(MADV_HUGEPAGE)``),
    and with the kernel's default ``defrag=madvise`` a first touch may then stall in compaction until
    a free 2 MiB page exists: on the AMD EPYC (Zen 5) VM with most memory in the page cache, the first
    5-token write into SmolLM2's 30 layers took 274 ms (3 ms per head's first page) against 0.6 ms
    here, and it was most of the time to first token (450-900 ms for a 5-token prompt, 21-43 ms now).
    Decode attention reads one head's history as one contiguous slab, which 4 KiB pages serve as well:
    SmolLM2 tg64 at depth 4,000, 64.3 / 89.9 tok/s at 1 / 2 threads against 67.9 / 90.0 before
    (docs/bench/vs-llama-bench-2026-12-02-zen5-kvmmap-smollm2-d4000.md).
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype).reshape(shape)  # the array keeps the mapping alive


class KVCache:
    def __init__(self, config: ModelConfig, n_ctx: int, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float16):
            raise InvalidArgumentError(f"kv cache dtype must be float32 or float16, got {dtype}")
        if n_ctx <= 0:
            raise InvalidArgumentError(f"n_ctx must be positive, got {n_ctx}")
        shape = (config.n_layers, config.n_kv_heads, n_ctx, config.head_dim)  # (L, KVH, n_ctx, hd)
        try:  # zeroed pages are mapped lazily: only positions actually written use memory
            self.k = _lazy_zeros(shape, dtype)  # (L, KVH, n_ctx, hd)
            self.v = _lazy_zeros(shape, dtype)  # (L, KVH, n_ctx, hd)
        except (MemoryError, ValueError, OSError):
            mib = 2 * np.prod(shape, dtype=np.float64) * dtype.itemsize / 2**20
            raise InvalidArgumentError(f"a KV cache for n_ctx={n_ctx} needs {mib:,.0f} MiB; lower n_ctx") from None
        self.n_ctx = n_ctx
        self.windows = tuple(config.window(i) for i in range(config.n_layers))  # 0 = the whole history
        self.pos = 0  # number of positions filled
        self.tokens: list[int] = []  # the token at each filled position (prefix reuse)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def reserve(self, n: int) -> None:
        """Check that n more positions fit."""
        if self.pos + n > self.n_ctx:
            raise ContextOverflowError(self.pos + n, self.n_ctx)

    def write(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store keys and values k, v (T, KVH, hd) of positions start .. start+T-1 of `layer`."""
        T = k.shape[0]
        if start + T > self.n_ctx:
            raise ContextOverflowError(start + T, self.n_ctx)
        self.k[layer, :, start : start + T] = k.transpose(1, 0, 2)  # (KVH, T, hd)
        self.v[layer, :, start : start + T] = v.transpose(1, 0, 2)

    def layer(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values of `layer`, (KVH, n_ctx, hd) each, in the cache's dtype (views)."""
        return self.k[layer], self.v[layer]

    def commit(self, tokens) -> None:
        """The tokens just written at positions pos .. pos+len-1 are now part of the history."""
        self.pos += len(tokens)
        self.tokens.extend(int(t) for t in tokens)

    def truncate(self, n: int) -> None:
        """Forget positions >= n (the stale values are overwritten by later writes)."""
        self.pos = min(self.pos, max(n, 0))
        del self.tokens[self.pos :]

    def reset(self) -> None:
        self.truncate(0)

    def common_prefix(self, ids) -> int:
        """How many leading tokens of `ids` are already in the cache."""
        n = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n += 1
        return n
