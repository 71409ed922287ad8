"""Saved KV-cache prefixes: a least-recently-used store bounded in bytes.

When a slot's cache is about to be overwritten by another conversation, its filled
positions are copied here; a later request whose prompt starts the same way is restored
from the copy instead of recomputing the prefix.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from ..runtime.kv_cache import KVCache


class PromptStore:
    """Saved KV prefixes, least recently used dropped first, at most `max_bytes` in all."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()

    def save(self, cache: KVCache) -> None:
        """Copy the cache's filled positions, unless an entry already holds them."""
        key = tuple(cache.tokens)
        size = 2 * cache.k[:, :, : len(key)].nbytes
        if not key or size > self.max_bytes:
            return
        with self.lock:
            for other in list(self.entries):
                if other[: len(key)] == key:  # already held (equal or longer)
                    self.entries.move_to_end(other)
                    return
                if key[: len(other)] == other:  # the new one supersedes a shorter one
                    self._drop(other)
            while self.nbytes + size > self.max_bytes:
                self._drop(next(iter(self.entries)))
            n = len(key)
            self.entries[key] = (cache.k[:, :, :n].copy(), cache.v[:, :, :n].copy())  # (L, KVH, n, hd) each
            self.nbytes += size

    def restore(self, cache: KVCache, prompt: Sequence[int]) -> int:
        """Load the entry sharing the longest prefix with `prompt` into `cache` if it beats
        what the cache already shares; returns the cache's common prefix afterwards."""
        have = cache.common_prefix(prompt)
        with self.lock:
            best, best_n = None, have
            for key in self.entries:
                n = _common(key, prompt)
                if n > best_n:
                    best, best_n = key, n
            if best is None:
                return have
            self.entries.move_to_end(best)
            k, v = self.entries[best]
            cache.k[:, :, :best_n] = k[:, :, :best_n]
            cache.v[:, :, :best_n] = v[:, :, :best_n]
        cache.pos = best_n
        cache.tokens[:] = best[:best_n]
        return best_n

    def _drop(self, key) -> None:
        k, v = self.entries.pop(key)
        self.nbytes -= k.nbytes + v.nbytes


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
