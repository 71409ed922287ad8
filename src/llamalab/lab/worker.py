"""The per-backend worker process: ``python -m llamalab.lab.worker``.

One worker holds one runtime (backend × model × thread count), so its memory and its
threads are its own: the parent sets OMP_NUM_THREADS & co. in the environment before
this process imports NumPy. The protocol is one JSON object per line:

    parent -> worker   {"op": "load", "job": {...}}   |  {"op": "run", "prompt": [...], "gen": [...], "text": "..."}
                       |  {"op": "quit"}
    worker -> parent   {"ok": true, ...}  |  {"ok": false, "status": "skipped" | "failed", "reason": "..."}

Replies go to a private copy of the original stdout; file descriptor 1 is pointed at
stderr so that anything a library prints cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time


def peak_rss_bytes() -> int:
    """This process's peak resident set size since start (or since the last reset_peak_rss)."""
    try:  # Linux: VmHWM, which reset_peak_rss() can lower
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: write 5 to /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:  # pragma: no cover - psutil is a dependency
        return None


def _serve(requests, reply) -> None:
    from .backends import BackendUnavailable, Job, make_runtime

    runtime = None
    for line in requests:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.get("op")
        try:
            if op == "quit":
                reply({"ok": True})
                return
            if op == "load":
                t0 = time.perf_counter()
                runtime = make_runtime(Job(**req["job"]))
                info = runtime.load()
                reply({"ok": True, "load_s": time.perf_counter() - t0, "rss_after_load": current_rss_bytes(),
                       "peak_rss": peak_rss_bytes(), "info": info, "pid": os.getpid()})
            elif op == "run":
                if runtime is None:
                    raise RuntimeError("run before load")
                windowed = reset_peak_rss()
                timing = runtime.run(req["prompt"], req["gen"], text=req.get("text", ""))
                reply({"ok": True, "timing": timing.as_dict(), "peak_rss": peak_rss_bytes(), "peak_rss_per_run": windowed})
            else:
                raise RuntimeError(f"unknown op {op!r}")
        except BackendUnavailable as e:
            reply({"ok": False, "status": "skipped", "reason": str(e)})
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as one line
            reply({"ok": False, "status": "failed", "reason": f"{type(e).__name__}: {e}".strip()})


def die_with_parent() -> None:
    """A worker must not outlive `llamalab bench`/`study`, however they end (kill -9 included): the
    kernel sends SIGTERM when the parent dies (Linux), and SIGTERM takes the whole process group
    (the worker leads its own session, so external runtimes it started go with it)."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: os.killpg(os.getpgrp(), signal.SIGKILL))
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = os.environ.get("LLAMALAB_WORKER_PARENT")
    if parent and os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def main() -> None:
    die_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    _serve(sys.stdin, reply)


if __name__ == "__main__":
    main()
