"""How idle OpenMP threads wait: about a millisecond of spinning, then sleep, unless the environment says otherwise.

``kernels.threads.configure_wait_policy`` runs when ``llamalab.kernels`` is imported. Each case
runs in a child process with a controlled environment and reports what the import left in it
and how much CPU time the OpenMP worker thread spent in the 50 ms after a parallel region
(/proc/self/task/*/schedstat): a spinning worker keeps running for its spin count, a passive
one goes to sleep at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from llamalab.kernels.threads import SPIN_COUNT

CHILD = """
import json, os, time
import numba
import numpy as np
from llamalab.kernels import ops

def worker_ns():
    main = str(os.getpid())
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if tid != main:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total

x = np.ones((64, 64), np.float32)
w = np.ones(64, np.float32)
out = np.empty_like(x)
after = []
for _ in range(9):
    numba.set_num_threads(2)  # a team of 2 each time (llamalab's own count may follow the machine's load)
    ops.rms_norm(x, w, 1e-5, out)  # a 2-thread parallel region
    before = worker_ns()
    time.sleep(0.05)
    after.append(worker_ns() - before)
print(json.dumps({"env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}, "idle_ns": after}))
"""


def _child(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base.update(env, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", CHILD], env=base, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_spins_briefly_then_sleeps():
    got = _child()
    assert got["env"] == {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": str(SPIN_COUNT)}
    if (os.cpu_count() or 1) >= 2 and os.path.exists("/proc/self/task"):
        # 30,000 spins ran 0.9-1.0 ms on the AMD EPYC (Zen 5) machine; the median of 9 rounds, so that one
        # round where another process held the worker's core (or the first one's start-up) does not decide it
        assert 100_000 < sorted(got["idle_ns"])[4] < 20_000_000, got["idle_ns"]


def test_an_explicit_wait_policy_gets_no_spin_added():
    got = _child(OMP_WAIT_POLICY="passive")
    assert got["env"] == {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": None}
    if (os.cpu_count() or 1) >= 2 and os.path.exists("/proc/self/task"):
        assert sorted(got["idle_ns"])[4] < 50_000, got["idle_ns"]  # asleep at once: a wake-up's few microseconds


def test_an_explicit_spin_count_is_kept():
    got = _child(GOMP_SPINCOUNT="5")
    assert got["env"] == {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "5"}


def test_an_active_policy_is_left_alone():
    got = _child(OMP_WAIT_POLICY="active")
    assert got["env"] == {"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": None}
