"""Ask Linux to map a model file's pages 2 MiB at a time, without copying them.

A decode step streams every weight once per token. With 4 KiB mappings a 60 MB model is
15,000 pages, far more than the TLB holds, so each page costs a page walk as the stream
enters it. Since 6.x, ext4 and xfs keep a file's page cache in large folios; with
``madvise(MADV_HUGEPAGE)`` on a read-only mapping the kernel maps whole 2 MiB folios with
one PMD entry when it faults them in (``FilePmdMapped`` in ``/proc/self/smaps``). The bytes
stay the page cache's: nothing is copied, shared between processes as before.

Measured on the 2-core AVX-512 machine (2026-12-01, Linux 6.18, ext4), each run after
dropping the file from the page cache: stories15M's f32 ``.bin`` had 54 of its 58 MiB
PMD-mapped with the advice and none without; decode at 1 thread 345-354 against 292-340
tok/s. The 1B Q4_K_M GGUF: 702 against 472 MiB PMD-mapped, decode equal within noise (it
streams from DRAM). A later process mapping the same cached file gets the 2 MiB folios
whether it advises or not. The call is advice: a kernel or file system that cannot do it
leaves the mapping as it was.

The advice only shapes pages read from disk. A file written in small pieces (by ``cp``, a
download, the synthesized and quantized GGUFs here) is cached in folios no larger than the
writes, and stays so while it is cached: every process then maps it 4 KiB at a time.
``rehouse`` drops such a file's clean cached pages and reads them back through an advised
mapping, once, at the cost of reading the file from disk. Measured on the
Intel AMX machine (2026-12-02, Linux 6.18, ext4, /tmp scripts of that session): a NumPy
float32 sum over 1 GiB of a mapped GGUF 13.5 GB/s with 4 KiB folios, 16.9-17.8 with 2 MiB
ones (anonymous memory: 15.7-15.9); the 1B-shaped F16 model's decode at 1 thread 6.09-6.14
against 6.67-6.73 tok/s, and llama-bench on the same file 4.58-4.78 against 5.24-5.25.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import numpy as np

MADV_HUGEPAGE = 14


def advise_huge_pages(view: np.ndarray) -> int:
    """madvise(MADV_HUGEPAGE) over the pages ``view`` spans; the bytes advised (0 where refused)."""
    if not sys.platform.startswith("linux") or view.nbytes == 0:
        return 0
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    start = view.ctypes.data // mmap.PAGESIZE * mmap.PAGESIZE
    size = view.ctypes.data + view.nbytes - start
    return size if madvise(start, size, MADV_HUGEPAGE) == 0 else 0


HUGE = 2 << 20  # bytes: x86-64's PMD page


def pmd_mapped_bytes(path: str | os.PathLike, within: tuple[int, int] | None = None) -> int:
    """Bytes of ``path`` this process maps 2 MiB at a time (FilePmdMapped over its mappings
    of it; only those inside the address range ``within`` when given)."""
    target, current, total = str(Path(path).resolve()), None, 0
    lo, hi = within or (0, 1 << 64)
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                fields = line.split()
                if "-" in fields[0] and len(fields) >= 6:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    current = " ".join(fields[5:]) if lo <= start and end <= hi else None
                elif fields[0] == "FilePmdMapped:" and current == target:
                    total += int(fields[1]) * 1024
    except OSError:
        return 0
    return total


def _touch_each_huge_page(path: Path) -> int | None:
    """Map ``path`` advised, read a byte of every 2 MiB of it, and return the bytes mapped 2 MiB
    at a time; None when the kernel refuses the advice."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = np.frombuffer(mm, np.uint8)
        try:
            if not advise_huge_pages(view):
                return None
            int(view[::HUGE].sum())  # a fault per 2 MiB: cached folios are mapped, missing ones read in
            start = view.ctypes.data
            return pmd_mapped_bytes(path, within=(start, start + view.nbytes + HUGE))  # this map, not others
        finally:
            del view  # the map cannot close while a view exports it


def rehouse(path: str | os.PathLike, min_bytes: int = 8 << 20) -> tuple[int, int]:
    """Have the page cache hold ``path`` in 2 MiB folios; (bytes so held before, after).

    For files of at least ``min_bytes`` on Linux with transparent huge pages. When fewer
    than nine tenths of the file's whole 2 MiB pages map huge, its unmapped clean cached
    pages are dropped (``posix_fadvise(DONTNEED)``: pages another process maps, or not yet
    written back, stay) and read again through an advised mapping. The file's bytes do not
    change; the cost is one read of it from disk."""
    path = Path(path)
    size = path.stat().st_size
    whole = size // HUGE * HUGE
    if size < min_bytes or not sys.platform.startswith("linux") or not _thp_possible():
        return 0, 0
    before = _touch_each_huge_page(path)
    if before is None:  # advice refused: dropping the cache would only cost a read
        return 0, 0
    if before >= 0.9 * whole:
        return before, before
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # pages still to be written back cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return before, _touch_each_huge_page(path) or 0


def _thp_possible() -> bool:
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
