"""Large temporaries reuse heap memory: a freed 4 MiB array's pages serve the next one.

Each case runs in a child process (malloc's settings are per process and fixed at the
first import of ``llamalab.kernels``) that allocates, writes and frees a layer-sized array
40 times and reports its minor page faults: with glibc's defaults each round faults the
array's 1,024 pages in again; configured, almost none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")

CHILD = """
import json, resource
import numpy as np
import llamalab.kernels
from llamalab.kernels import allocator
configured = allocator.configure_allocator()
def churn(rounds):
    for _ in range(rounds):
        a = np.empty(1 << 20, np.float32)  # 4 MiB: an (N, dim) activation of a prefill
        a.fill(1.0)
        del a
churn(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(40)
print(json.dumps({"configured": configured, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def child(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def glibc() -> bool:
    import ctypes

    try:
        ctypes.CDLL(None).gnu_get_libc_version
    except AttributeError:
        return False
    return True


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_freed_pages_serve_the_next_array():
    got = child()
    assert got["configured"] is True
    # glibc's defaults: ~41,000 (every page of every round); configured: ~500 measured
    assert got["faults"] < 4000, f"{got['faults']} minor faults over 40 x 4 MiB: the array's pages were not reused"


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_user_malloc_settings_are_kept():
    got = child(MALLOC_MMAP_THRESHOLD_="131072")  # glibc's default, fixed: every 4 MiB block mmapped
    assert got["configured"] is False
    assert got["faults"] > 40 * 500, f"only {got['faults']} faults: the user's setting was overridden"
