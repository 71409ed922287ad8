"""Large temporaries reuse heap memory: a freed 4 MiB array's pages serve the next one.

Each case runs in a child process (malloc's settings are per process and fixed at the
first import of ``llamalab.kernels``) that allocates, writes and frees a layer-sized array
40 times and reports two things: its minor page faults (with glibc's defaults each round
faults the array's 1,024 pages in again; configured, almost none), and how many bytes
malloc held in mmapped blocks while an array was alive (``mallinfo2().hblkhd``: the 4 MiB
array is one of them exactly when it was mmapped). The second is what tells a user's own
setting apart: page faults alone cannot, because where the kernel backs NumPy's large
arrays with transparent huge pages, an mmapped 4 MiB array faults in 2 or 3 times, not
1,024 (the CI machines do: 526 faults over 40 rounds there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")

CHILD = """
import ctypes, json, resource
import numpy as np
import llamalab.kernels
from llamalab.kernels import allocator
configured = allocator.configure_allocator()

class MallInfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

mmapped = []
def churn(rounds):
    for _ in range(rounds):
        before = mallinfo2().hblkhd
        a = np.empty(1 << 20, np.float32)  # 4 MiB: an (N, dim) activation of a prefill
        a.fill(1.0)
        mmapped.append(mallinfo2().hblkhd - before)
        del a
churn(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(40)
print(json.dumps({"configured": configured, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  "mmapped": mmapped[2:]}))
"""


def child(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def glibc_with_mallinfo2() -> bool:
    import ctypes

    try:
        ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return False
    return True


ARRAY = 4 << 20  # bytes
needs_glibc = pytest.mark.skipif(not glibc_with_mallinfo2(), reason="glibc >= 2.33 only (mallopt, mallinfo2)")


@needs_glibc
def test_freed_pages_serve_the_next_array():
    got = child()
    assert got["configured"] is True
    mmapped = sum(d >= ARRAY for d in got["mmapped"])  # rounds whose array was an mmapped block
    assert mmapped <= 2, f"the 4 MiB array was mmapped in {mmapped} of 40 rounds"
    # glibc's defaults: ~41,000 (every page of every round); configured: ~500 measured
    assert got["faults"] < 4000, f"{got['faults']} minor faults over 40 x 4 MiB: the array's pages were not reused"


@needs_glibc
def test_user_malloc_settings_are_kept():
    got = child(MALLOC_MMAP_THRESHOLD_="131072")  # glibc's default, fixed: every 4 MiB block mmapped
    assert got["configured"] is False
    # other blocks freed inside a round can lower its delta: most rounds, not all, show the array
    mmapped = sum(d >= ARRAY for d in got["mmapped"])
    assert mmapped >= 30, f"the 4 MiB array came from the heap in {40 - mmapped} of 40 rounds: the user's setting was overridden"
