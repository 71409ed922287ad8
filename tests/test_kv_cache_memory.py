"""The KV cache's memory: zeros of its own mapping, without NumPy's huge-page advice.

``np.zeros`` of 4 MiB or more asks the kernel for transparent huge pages, and a first touch of
such memory may stall in compaction (274 ms for SmolLM2's first 5-token write on the Zen 5 VM,
most of the time to first token). The cache's arrays must not carry that advice ("hg" in the
mapping's VmFlags), must read as zeros, and must keep what is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from llamalab.runtime.config import ModelConfig
from llamalab.runtime.kv_cache import KVCache
from smaps import vm_flags

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmFlags from Linux /proc/self/smaps")

CFG = ModelConfig(arch="llama", n_layers=30, dim=576, ffn_dim=1536, n_heads=9, n_kv_heads=3, vocab_size=49152,
                  context_length=8192)


def test_the_cache_is_not_advised_huge_pages():
    cache = KVCache(CFG, 8192, np.float16)  # 90 MiB per array
    middle = lambda arr: arr.ctypes.data + arr.nbytes // 2  # noqa: E731  (NumPy advises from the first whole page on)
    for arr in (cache.k, cache.v):
        assert "hg" not in vm_flags(address=middle(arr))
    if "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text():
        plain = np.zeros(cache.k.shape, cache.k.dtype)  # what the cache was: the check can tell them apart
        assert "hg" in vm_flags(address=middle(plain))


def test_the_cache_reads_zeros_and_keeps_its_writes():
    cache = KVCache(CFG, 512, np.float32)
    assert cache.k.shape == (30, 3, 512, 64) and cache.k.dtype == np.float32 and cache.k.flags.writeable
    assert not cache.k.any() and not cache.v.any()
    k = np.arange(5 * 3 * 64, dtype=np.float32).reshape(5, 3, 64)
    cache.write(7, 10, k, -k)
    np.testing.assert_array_equal(cache.k[7, :, 10:15], k.transpose(1, 0, 2))
    np.testing.assert_array_equal(cache.v[7, :, 10:15], -k.transpose(1, 0, 2))
    assert not cache.k[6].any() and not cache.k[7, :, :10].any()
