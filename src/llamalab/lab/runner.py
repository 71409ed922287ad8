"""Run a measurement matrix: one worker process per (model, backend, threads), alternating.

For each model, every worker is started and warmed up (a short run, not recorded);
then each repeat round runs test 1 on every worker in turn, then test 2, and so on
(A B C A B C ...), so slow drift of the machine — heat, other load — touches every
runtime alike. A worker that crashes or times out has its current cell recorded as
failed and is restarted (once) for the cells that remain; one that cannot load is
recorded as skipped (not installed, wrong format) or failed, and the run goes on.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .backends import Job

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")  # fmt: skip
WARMUP_PROMPT = 64  # tokens in the warm-up run's prompt (first test's prompt, cut)
WARMUP_GEN = 2


class WorkerFailed(Exception):
    """The worker process died, timed out or could not start."""


def worker_env(threads: int) -> dict[str, str]:
    """The environment for a worker: thread counts fixed before it imports NumPy, hubs offline,
    and this llamalab first on the path (so another interpreter runs the same code)."""
    env = dict(os.environ)
    for k in THREAD_ENV:
        env[k] = str(threads)
    env.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, job: Job, python: str | None = None):
        self.job = job
        self.python = python or sys.executable
        self.proc: subprocess.Popen | None = None
        self.load_reply: dict | None = None

    # -- process ------------------------------------------------------------------------------
    def _spawn(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen([self.python, "-m", "llamalab.lab.worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr,
                                         env={**worker_env(self.job.threads), "LLAMALAB_WORKER_PARENT": str(os.getpid())},
                                         start_new_session=True, text=True, bufsize=1)
        except OSError as e:
            raise WorkerFailed(f"cannot start {self.python}: {e}") from None
        self._lines: queue.Queue = queue.Queue()
        out = self.proc.stdout

        def pump():
            for line in out:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def stderr_tail(self, n: int = 3) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, AttributeError, ValueError):
            return ""
        return " | ".join(lines[-n:])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: external commands die too
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, obj: dict, timeout: float) -> dict:
        """Send one request, wait up to timeout seconds for the reply."""
        if not self.alive():
            raise WorkerFailed("worker is not running")
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died; the reader sees EOF below
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerFailed(f"timed out after {timeout:g} s") from None
        if line is None:
            rc = self.proc.wait()
            tail = self.stderr_tail()
            raise WorkerFailed(f"crashed ({_exit_text(rc)})" + (f": {tail}" if tail else ""))
        return json.loads(line)

    # -- protocol -------------------------------------------------------------------------------
    def start(self, timeout: float) -> dict:
        """Spawn and load; returns the load reply ({'ok': False, 'status': ...} when it could not load)."""
        self._spawn()
        reply = self.request({"op": "load", "job": asdict(self.job)}, timeout)
        self.load_reply = reply
        if not reply.get("ok"):
            self.close()
        return reply

    def run(self, prompt: list[int], gen: list[int], text: str, timeout: float) -> dict:
        return self.request({"op": "run", "prompt": prompt, "gen": gen, "text": text}, timeout)

    def close(self) -> None:
        if self.alive():
            try:
                self.request({"op": "quit"}, timeout=10)
                self.proc.wait(timeout=10)
            except (WorkerFailed, subprocess.TimeoutExpired, ValueError):
                pass
        self.kill()
        for f in (getattr(self.proc, "stdin", None), getattr(self.proc, "stdout", None)):
            try:
                if f:
                    f.close()
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------- plans


@dataclass
class Workload:
    """One test: the ids to prefill and the ids to feed one by one."""

    name: str  # "pp512", "tg128", "short", ...
    prompt: list[int]
    gen: list[int]
    text: str = ""  # the prompt as text (for external runtimes)
    capped_from: str | None = None  # the test asked for, when a --cap shortened this one


@dataclass
class Plan:
    """One worker's share of the matrix: a job and its tests, in order."""

    model: str  # model key (ModelInfo.path)
    job: Job
    workloads: list[Workload]


@dataclass
class Cell:
    """The outcome of one (worker, test): samples from each repeat, or why there are none."""

    model: str
    backend: str
    threads: int
    test: str
    n_prompt: int
    n_gen: int
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    samples: list[dict] = field(default_factory=list)  # Timing dicts + peak_rss
    load_s: float | None = None
    load_peak_rss: int | None = None
    info: dict = field(default_factory=dict)
    capped_from: str | None = None


Progress = Callable[[int, str], None]  # (steps done, what is running)


def _fail(cells: list[Cell], status: str, reason: str) -> None:
    for c in cells:
        if c.status == "ok":
            c.status, c.reason = status, reason


def _start(plan: Plan, python: str | None, load_timeout: float, run_timeout: float, warmup: bool) -> tuple[Worker | None, dict]:
    """Start, load and warm up a worker; (None, reply-with-reason) when that fails."""
    w = Worker(plan.job, python)
    try:
        reply = w.start(load_timeout)
    except WorkerFailed as e:
        w.kill()
        return None, {"ok": False, "status": "failed", "reason": f"load {e}"}
    if not reply.get("ok"):
        return None, reply
    if warmup and plan.workloads:
        first = plan.workloads[0]
        try:
            r = w.run(first.prompt[:WARMUP_PROMPT], first.gen[:WARMUP_GEN], first.text, run_timeout)
        except WorkerFailed as e:
            w.kill()
            return None, {"ok": False, "status": "failed", "reason": f"warm-up {e}"}
        if not r.get("ok"):
            w.close()
            return None, {"ok": False, "status": r.get("status", "failed"), "reason": f"warm-up: {r.get('reason')}"}
    return w, reply


def run_plans(plans: list[Plan], repeats: int, *, run_timeout: float = 600, load_timeout: float = 600,
              python: str | None = None, warmup: bool = True, restarts: int = 1,
              progress: Progress | None = None) -> list[Cell]:
    """Run every plan's workloads `repeats` times, alternating workers within each round."""
    progress = progress or (lambda n, what: None)
    cells: dict[tuple[int, int], Cell] = {}
    for pi, p in enumerate(plans):
        for ti, wl in enumerate(p.workloads):
            cells[pi, ti] = Cell(p.model, p.job.backend, p.job.threads, wl.name, len(wl.prompt), len(wl.gen),
                                 capped_from=wl.capped_from)
    order: list[str] = []
    for p in plans:
        if p.model not in order:
            order.append(p.model)
    for model in order:
        group = [pi for pi, p in enumerate(plans) if p.model == model]
        workers: dict[int, Worker] = {}
        restarts_left = {pi: restarts for pi in group}

        def own(pi):
            return [cells[pi, ti] for ti in range(len(plans[pi].workloads))]

        def start(pi) -> bool:
            p = plans[pi]
            progress(0, f"loading {p.job.backend} ({p.job.threads} threads) on {Path(model).name}")
            w, reply = _start(p, python, load_timeout, run_timeout, warmup)
            for c in own(pi):
                c.load_s = reply.get("load_s", c.load_s)
                c.load_peak_rss = reply.get("peak_rss", c.load_peak_rss)
                c.info = reply.get("info") or c.info
            if w is None:
                _fail(own(pi), reply.get("status", "failed"), reply.get("reason") or "could not load")
                return False
            workers[pi] = w
            return True

        try:
            for pi in group:
                start(pi)  # a worker that cannot start leaves its cells not ok: the rounds below skip them
            n_tests = max((len(plans[pi].workloads) for pi in group), default=0)
            for r in range(repeats):
                for ti in range(n_tests):
                    for pi in group:
                        if ti >= len(plans[pi].workloads):
                            continue
                        cell, wl, job = cells[pi, ti], plans[pi].workloads[ti], plans[pi].job
                        if cell.status != "ok" or pi not in workers:
                            progress(1, "")
                            continue
                        progress(0, f"{job.backend} t={job.threads} {wl.name} (repeat {r + 1}/{repeats})")
                        try:
                            reply = workers[pi].run(wl.prompt, wl.gen, wl.text, run_timeout)
                        except WorkerFailed as e:
                            cell.status, cell.reason = "failed", f"repeat {r + 1}: {e}"
                            workers.pop(pi).kill()
                            if restarts_left[pi] > 0:
                                restarts_left[pi] -= 1
                                start(pi)
                            else:
                                _fail(own(pi), "failed", f"worker gave up after: {e}")
                            progress(1, "")
                            continue
                        if reply.get("ok"):
                            cell.samples.append({**reply["timing"], "peak_rss": reply.get("peak_rss"),
                                                 "peak_rss_per_run": reply.get("peak_rss_per_run")})
                        else:
                            cell.status = reply.get("status", "failed")
                            cell.reason = f"repeat {r + 1}: {reply.get('reason')}"
                        progress(1, "")
        finally:
            for w in workers.values():
                w.close()
    return [cells[k] for k in sorted(cells)]
