"""The KV cache: per-layer keys and values of every position seen so far.

State only — the model writes into it during forward and reads it back in attention.
Layout is head-major, ``(n_layers, n_kv_heads, n_ctx, head_dim)``, so one head's
history is a contiguous ``(positions, head_dim)`` slab that attention reads in place.
"""

from __future__ import annotations

import numpy as np

from .config import ModelConfig
from ..errors import ContextOverflowError, InvalidArgumentError


class KVCache:
    def __init__(self, config: ModelConfig, n_ctx: int, dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float16):
            raise InvalidArgumentError(f"kv cache dtype must be float32 or float16, got {dtype}")
        if n_ctx <= 0:
            raise InvalidArgumentError(f"n_ctx must be positive, got {n_ctx}")
        shape = (config.n_layers, config.n_kv_heads, n_ctx, config.head_dim)
        try:  # zeroed pages are mapped lazily: only positions actually written use memory
            self.k = np.zeros(shape, dtype)  # (L, KVH, n_ctx, hd)
            self.v = np.zeros(shape, dtype)  # (L, KVH, n_ctx, hd)
        except (MemoryError, ValueError):
            mib = 2 * np.prod(shape, dtype=np.float64) * dtype.itemsize / 2**20
            raise InvalidArgumentError(f"a KV cache for n_ctx={n_ctx} needs {mib:,.0f} MiB; lower n_ctx") from None
        self.n_ctx = n_ctx
        self.pos = 0  # number of positions filled
        self.tokens: list[int] = []  # the token at each filled position (prefix reuse)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def reserve(self, n: int) -> None:
        """Check that n more positions fit."""
        if self.pos + n > self.n_ctx:
            raise ContextOverflowError(self.pos + n, self.n_ctx)

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
