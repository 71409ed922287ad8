"""LLVM's code pages go back to the OS after loading, and the kernels keep working."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from llamalab import kernels
from llamalab.kernels import llvm_pages
from llamalab.runtime.tensor import QTensor


def resident_mib(name: str) -> float:
    """Resident MiB of this process's mappings of the file `name` (Linux smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:
                inside = len(head) >= 6 and head[5].rsplit("/", 1)[-1] == name
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total / 1024


def mapped_elsewhere(name: str) -> bool:
    """Whether another process maps the file `name`: MADV_PAGEOUT leaves pages other processes
    map resident (as when other Python sessions share this venv), so the bound cannot hold."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/maps") as f:
                if any(line.rstrip().endswith("/" + name) for line in f):
                    return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) is Linux-only")
def test_release_pages_out_llvm_and_kernels_still_run():
    rng = np.random.default_rng(0)
    w = QTensor("w", T.Q8_0, (8, 64), rng.integers(0, 256, (8, 2 * 34), dtype=np.uint8))
    w.data.reshape(8, 2, 34)[:, :, :2] = np.array([0.01], np.float16).view(np.uint8)  # sane scales
    x = rng.standard_normal(64, dtype=np.float32)
    before = kernels.matvec(w, x)
    if kernels.release_compiler_pages() == 0:
        pytest.skip("this kernel does not support MADV_PAGEOUT (Linux < 5.4)")
    if mapped_elsewhere(llvm_pages.LIBRARY):
        pytest.skip(f"another process maps {llvm_pages.LIBRARY}: its shared pages stay resident")
    assert resident_mib(llvm_pages.LIBRARY) < 8, "LLVM's pages are still resident"
    assert np.array_equal(kernels.matvec(w, x), before)


def test_release_on_a_library_that_is_not_loaded_advises_nothing(monkeypatch):
    monkeypatch.setattr(llvm_pages, "LIBRARY", "no-such-library.so")
    assert llvm_pages.release() == 0
