"""Large temporary arrays come from the heap, not from fresh pages every time.

A prefill allocates its activations per layer (N x dim and N x ffn float32: megabytes each),
in NumPy and inside the compiled kernels, and frees them a moment later. glibc's malloc
serves blocks above its mmap threshold with mmap, and hands the heap's free top back to the
OS above its trim threshold, so those blocks kept coming back as new pages, each one zeroed
by the kernel on its first write: 25,000-93,000 page faults per prompt, all in the threads
doing the work. Measured on the Intel AMX machine (2026-12-02, alternated processes,
/tmp scripts of that session): SmolLM2 pp512 at 2 threads ~1,060 -> 1,360-1,440 tok/s, the
1B-shaped Q4_K_M pp128 226 -> 265-292 at 2 threads and 132-144 -> 160-168 at 1; without AMX,
where the products take longer, 143 -> 148 at 2 threads.

``configure_allocator`` (run when ``llamalab.kernels`` is imported) fixes both thresholds:
blocks under 32 MiB (glibc's own ceiling for its adaptive threshold) come from the heap, and
up to 256 MiB of free heap is kept for the next layer instead of returned. The price is that
memory freed after a long prompt stays in the process (at most what its peak was), as with
jemalloc or tcmalloc. Blocks of 32 MiB and more (very long prompts) are still mmapped. A user
who set glibc's malloc variables (``MALLOC_*_`` or ``GLIBC_TUNABLES``) keeps them; on other C
libraries (no ``mallopt``) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 << 20  # bytes: larger blocks are mmapped (and unmapped when freed)
TRIM_THRESHOLD = 256 << 20  # bytes of free heap top kept before any is returned to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def configure_allocator() -> bool:
    """Set glibc's thresholds as described above; True if they were set. Idempotent."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; musl's is a stub that returns 0
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
