#!/usr/bin/env python
"""llamalab's generator against llama2.c's ``run``: same checkpoint, greedy, same tokens, same threads.

    PYTHONPATH=src python benchmarks/vs_llama2c.py                         # stories15M and stories110M, 1 thread
    PYTHONPATH=src python benchmarks/vs_llama2c.py -t 1 2                  # and at 2 threads
    PYTHONPATH=src python benchmarks/vs_llama2c.py -m stories15M -n 256 -r 9
    PYTHONPATH=src python benchmarks/vs_llama2c.py --src /tmp/base/src --src src   # A/B two checkouts

The checkpoints are synthesized llama2.c ``.bin`` files (``llamalab synth NAME --format llama2c``:
random weights, the preset's shapes; the same file for both). llama2.c (``run``, built
``-Ofast -fopenmp -march=native`` as scripts/build-ports/build.sh does; found through --llama2c,
$LLAMA2C, $LLAMALAB_LLAMA2_C or $LLAMALAB_PORTS/llama2.c/run) runs ``-t 0 -n N`` from BOS with
OMP_NUM_THREADS=T (its matmuls are OpenMP loops) and the id vocabulary (``lab/export.py``: it prints
``[id]`` per token, so its tokens are read back and compared with llamalab's). llamalab runs
``LLM(path, threads=T).generate([BOS], max_tokens=N, temperature=0, ignore_eos=True)`` (the
generator the CLI, server and lab use, with the checkpoint's own tokenizer.bin: sampling,
detokenization, stop handling all included) in a worker process per --src tree and thread count,
with every thread count set to T before import.

Timed alike: llama2.c's "achieved tok/s" is (N - 1) / (time from its first token printed to its
last); llamalab's is (N - 1) / (time from the first chunk received to the last). Both exclude load
and the first token (BOS's forward). Rounds alternate the runtimes; best of -r rounds is reported
(median beside it). "cpu" columns time by CPU time instead (steadier on a shared machine):
llamalab's process CPU between the first and last chunk; llama2.c's CPU of an -n N run minus that of
an -n 1 run, over N - 1 (at T > 1 the CPU of all threads). "ms/token in step" is the wall time
inside the compiled decode step (runtime/decode.py ``_step``, wrapped by the worker), "outside" the
rest of a token's wall time: the Python wrapper, sampling, logprob, detokenization, stop strings, the
generator (issue 12 part 4). Wall time, not CPU: at T > 1 Linux adds another thread's running time to
the process clock only at scheduler ticks, so a CPU split of a 1.5 ms token put 1.2-2.4 ms "outside"
where the calling thread spent ~0.15. Each llamalab row names how its process reads F32 rows ("F32: hardware prefetch"
or "software prefetch": the choice floats.calibrate_f32 makes once per process, at its first load).
This is a benchmark, not a test: other load moves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")
BOS = 1


# ---- the llamalab side: one worker process per source tree ---------------------------------------------------


def _time_compiled_step() -> list[float]:
    """Wrap the compiled decode step (runtime/decode.py's module-level ``_step``, which
    FastDecoder calls) to add its wall time to the returned cell: the split between the
    step and everything else per token. An empty list when the tree has no such step."""
    try:
        from llamalab.runtime import decode
    except ImportError:
        return []
    inner = getattr(decode, "_step", None)
    if inner is None:
        return []
    spent = [0.0]

    def timed(*args):
        t0 = time.perf_counter()
        inner(*args)
        spent[0] += time.perf_counter() - t0

    decode._step = timed
    return spent


def _f32_prefetch() -> str:
    """How this process's F32 rows are read (floats.calibrate_f32 measures it once per process): the
    software prefetch or the hardware prefetchers alone streamed 20-50% apart on the AMD EPYC machines,
    so a table says which one its figures come from; '?' for a tree without the choice."""
    try:
        from llamalab.kernels import tuning
    except ImportError:
        return "?"
    return "software" if tuning.get(tuning.F32_SOFT_PREFETCH) else "hardware"


def worker() -> None:
    """Read {"model": path, "n": N} lines on stdin; answer one JSON line per run."""
    from llamalab import LLM

    models: dict[str, LLM] = {}
    spent = _time_compiled_step()
    for line in sys.stdin:
        req = json.loads(line)
        llm = models.get(req["model"])
        if llm is None:
            llm = models[req["model"]] = LLM(req["model"], threads=int(os.environ["OMP_NUM_THREADS"]), progress=False)
        wall, cpu, tokens, text = [], [], [], []
        for c in llm.generate([BOS], max_tokens=req["n"], temperature=0.0, ignore_eos=True):
            wall.append(time.perf_counter())
            cpu.append(time.process_time())
            if spent and len(wall) == 1:
                spent[0] = 0.0  # from the first token on, as the tok/s
            tokens.append(c.token)
            text.append(c.text)  # what a consumer does with it; llama2.c prints each piece
        k = len(tokens) - 1
        cpu_per_token, wall_per_token = (cpu[-1] - cpu[0]) / k, (wall[-1] - wall[0]) / k
        step = spent[0] / k if spent else float("nan")
        print(json.dumps({"tps": 1 / wall_per_token, "cpu_tps": 1 / max(cpu_per_token, 1e-12),
                          "step_ms": step * 1e3, "other_ms": (wall_per_token - step) * 1e3,
                          "tokens": tokens, "n_chars": len("".join(text)), "f32_prefetch": _f32_prefetch()}),
              flush=True)


class Worker:
    def __init__(self, src: str, threads: int):
        env = dict(os.environ, PYTHONPATH=src, PYTHONUNBUFFERED="1", **{k: str(threads) for k in THREAD_ENV})
        self.src = src
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def run(self, model: str, n: int) -> dict:
        self.proc.stdin.write(json.dumps({"model": model, "n": n}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"error: the llamalab worker for {self.src} died (exit status {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---- the llama2.c side ---------------------------------------------------------------------------------------


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def llama2c(exe: str, files: dict, n: int, threads: int) -> tuple[dict, float]:
    """(parsed output: gen_tps, tokens; CPU seconds of the process) of one run."""
    from llamalab.lab.ports import PORTS, Invocation

    port = PORTS["llama2.c"]
    argv, cwd, env = port.command(Invocation(exe=exe, files=files, n_gen=n, threads=threads))
    before = _child_cpu()
    p = subprocess.run(argv, cwd=cwd, env={**os.environ, **env, **{k: str(threads) for k in THREAD_ENV}},
                       capture_output=True, text=True)
    cpu = _child_cpu() - before
    if p.returncode != 0:
        sys.exit(f"error: {exe} exited with status {p.returncode}: {(p.stdout + p.stderr).strip()[-300:]}")
    return port.parse(p.stdout, p.stderr), cpu


def find_llama2c(given: str | None) -> str:
    from llamalab.lab.ports import find

    path, why = find("llama2.c", {"llama2.c": given} if given else None)
    if path is None:
        why = f"{given}: no such file" if given else why
        sys.exit(f"error: llama2.c's run not found ({why}); pass --llama2c PATH or set LLAMA2C")
    return path


# ---- the table -----------------------------------------------------------------------------------------------


def machine_line() -> str:
    from llamalab.lab.machine import cpu_flags, cpu_model, isa_level

    flags = cpu_flags()
    la = os.getloadavg()
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, ISA {isa_level(flags)}, "
            f"AMX {'yes' if 'amx_tile' in flags else 'no'}, load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


def first_mismatch(a: list[int], b: list[int]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"differ at {i}"
    return "same" if len(a) == len(b) else f"same for {min(len(a), len(b))}, lengths {len(a)}/{len(b)}"


def compare(exe: str, preset: str, n: int, repeats: int, t: int, workers: list[Worker]) -> tuple[list[str], list[dict]]:
    """The table rows of one preset at t threads (the workers': one per source tree): llama2.c, then each
    tree; and each tree's row as data (--json)."""
    from llamalab.lab.export import export

    srcs = [w.src for w in workers]
    ckpt = str(export(preset, "llama2c"))  # llamalab reads the tokenizer.bin written beside it
    files = {"llama2c": ckpt, "tokenizer.bin": str(export(preset, "tokenizer.bin"))}
    # import and load now (a worker still starting up would take a core from the first round); the load
    # makes the process's one F32 prefetch choice
    prefetch = {w.src: w.run(ckpt, 2)["f32_prefetch"] for w in workers}
    base_cpu = min(llama2c(exe, {**files}, 1, t)[1] for _ in range(3))  # load + BOS's forward
    res = {"llama2.c": [], **{s: [] for s in srcs}}
    cpu = {"llama2.c": [], **{s: [] for s in srcs}}
    split = {s: [] for s in srcs}  # (tok/s, ms in the compiled step, ms outside it) per round
    tokens = {}
    for r in range(repeats):
        order = [None, *workers] if r % 2 == 0 else [*workers, None]
        for w in order:
            if w is None:
                got, c = llama2c(exe, files, n, t)
                if got["gen_tps"] is not None:
                    res["llama2.c"].append(got["gen_tps"])
                cpu["llama2.c"].append((len(got["tokens"]) - 1) / max(c - base_cpu, 1e-9))
                tokens["llama2.c"] = got["tokens"]
            else:
                got = w.run(ckpt, n)
                res[w.src].append(got["tps"])
                cpu[w.src].append(got["cpu_tps"])
                split[w.src].append((got["tps"], got["step_ms"], got["other_ms"]))
                tokens[w.src] = got["tokens"]
        print(f"{preset} {t} thread(s) round {r + 1}: " + ", ".join(
            f"{Path(k).parent.name if k != 'llama2.c' else k} {v[-1]:.0f}" for k, v in res.items() if v),
            file=sys.stderr, flush=True)
    ref_tps, ref_cpu = max(res["llama2.c"]), max(cpu["llama2.c"])
    rows = [f"| {preset} | {t} | {n} | llama2.c | {ref_tps:.0f} | {statistics.median(res['llama2.c']):.0f} | "
            f"{ref_cpu:.0f} | | | | | |"]
    records = []
    size = os.path.getsize(ckpt)
    for s in srcs:
        best, bcpu = max(res[s]), max(cpu[s])
        records.append({"spec": preset, "model": Path(ckpt).name, "bytes": size, "threads": t, "kind": "tg",
                        "test": f"tg{n - 1}", "src": s, "ours": best, "peer": ref_tps, "ratio": best / ref_tps,
                        "ours_gbs": size * best / 1e9, "peer_gbs": size * ref_tps / 1e9,
                        "tokens": first_mismatch(tokens[s], tokens["llama2.c"])})
        _, step_ms, other_ms = max(split[s])  # the best round's split
        other = min(o for _, _, o in split[s])
        rows.append(f"| {preset} | {t} | {n} | llamalab {s} (F32: {prefetch[s]} prefetch) | {best:.0f} | "
                    f"{statistics.median(res[s]):.0f} | {bcpu:.0f} | **{best / ref_tps:.2f}×** | {bcpu / ref_cpu:.2f}× | "
                    f"{step_ms:.3f} | {other_ms:.3f} (min {other:.3f}) | {first_mismatch(tokens[s], tokens['llama2.c'])} |")
    return rows, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-m", "--model", action="append", help="preset (stories15M, stories42M, stories110M); repeatable")
    ap.add_argument("-n", type=int, default=256, help="tokens per run, BOS's forward included (llama2.c's -n)")
    ap.add_argument("-r", "--repeats", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[1], help="thread counts, both runtimes (default 1)")
    ap.add_argument("--src", action="append", help="llamalab source tree(s) to time (default: this checkout's src)")
    ap.add_argument("--llama2c", default=os.environ.get("LLAMA2C"), help="llama2.c's run (default: $LLAMA2C, ...)")
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    ap.add_argument("--json", type=Path, help="also write llamalab's rows here as JSON (benchmarks/grid.py reads it)")
    a = ap.parse_args()
    if a.worker:
        return worker()
    from llamalab.lab.models import synth_config

    exe = find_llama2c(a.llama2c)
    srcs = [str(Path(s).resolve()) for s in (a.src or [Path(__file__).resolve().parents[1] / "src"])]
    presets = a.model or ["stories15M", "stories110M"]
    from llamalab.errors import LlamalabError

    for preset in presets:  # before any worker starts
        try:
            synth_config(preset)
        except LlamalabError as e:
            sys.exit(f"error: -m {preset}: {e}")
    if a.n < 2 or a.repeats < 1 or min(a.threads) < 1:
        sys.exit(f"error: -n must be >= 2, -r and -t >= 1, got -n {a.n} -r {a.repeats} -t {a.threads}")
    start = machine_line()
    print(f"start: {start}", file=sys.stderr, flush=True)
    rows, records = [], []
    for t in a.threads:
        workers = [Worker(s, t) for s in srcs]
        for preset in presets:
            got, recs = compare(exe, preset, min(a.n, synth_config(preset).context_length), a.repeats, t, workers)
            rows, records = rows + got, records + recs
        for w in workers:
            w.close()
    lines = [f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; llama2.c {exe}; "
             f"threads {', '.join(map(str, a.threads))}; best of {a.repeats} rounds (alternating)",
             f"machine at start: {start}", f"machine at end:   {machine_line()}", "",
             "| model | threads | tokens | runtime | best tok/s | median tok/s | best cpu tok/s | ratio | cpu ratio | "
             "ms/token in step | ms/token outside | tokens vs llama2.c |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|", *rows]
    print("\n".join(lines))
    if a.out:
        a.out.write_text("\n".join(lines) + "\n")
    if a.json:
        a.json.write_text(json.dumps({"machine": f"{start}; {lines[0]}", "notes": [], "rows": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
