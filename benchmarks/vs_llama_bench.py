#!/usr/bin/env python
"""llamalab against native llama.cpp's llama-bench: same model files, same threads, same tests.

    python benchmarks/vs_llama_bench.py                                   # the default model, pp512/tg128
    python benchmarks/vs_llama_bench.py -m synth:qwen3-0.6b:q4_k_m -m gemma3-270m -p 128 -n 32
    python benchmarks/vs_llama_bench.py -p 0 -n 64 -d 4000                # tg64 @ d4000: decode at depth

llama-bench is found through LLAMA_BENCH or PATH (build it from the llama.cpp copy inside the
llama-cpp-python sdist: see scripts/build-ports/README.md). For each model and thread count it runs
llama-bench once with -fa 0,1 and keeps the faster, then `llamalab bench` (warm-up excluded,
median of -r runs) on the very file llama-bench read. The table gives both, their ratio, for
generation each side's achieved bandwidth (the file's bytes × tok/s: every weight is read once a
token; not with -d, where the KV cache is read as well), and the machine (AMX or not) it ran on with its memory probe; --out writes it as Markdown
too, --json as data (what benchmarks/grid.py reads).

With -d (llama-bench's --n-depth) every test runs after that many tokens of context: llama-bench
fills its cache with -d tokens before each timed run, and llamalab does the same in a worker process
of this script (a prefill of -d seeded random ids, untimed; then the -p prompt timed as one forward,
or -n decode steps timed one by one), median of -r runs after one warm-up. --kv-type picks llamalab's
KV cache (llama-bench always runs its default f16 cache).

--rounds N runs each cell's pair (llamalab, then llama-bench) N times in alternation and keeps each
side's best: this machine's host is shared, and one program run can land in a slow spell of several
minutes that the other misses (measured: the same llamalab prefill 42-48 tok/s in one minute,
63-78 in the next).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path


def llama_bench(exe: str, model: str, p: int, n: int, threads: int, reps: int, depth: int = 0) -> dict[str, float]:
    """{"pp": tok/s, "tg": tok/s}: the best of flash attention off and on."""
    cmd = [exe, "-m", model, "-p", str(p), "-n", str(n), "-t", str(threads), "-r", str(reps), "-fa", "0,1",
           "-d", str(depth), "-o", "jsonl"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    best: dict[str, float] = {}
    for line in out.splitlines():
        row = json.loads(line)
        kind = "pp" if row["n_prompt"] and not row["n_gen"] else "tg"
        best[kind] = max(best.get(kind, 0.0), float(row["avg_ts"]))
    return best


def llamalab_bench(model: str, p: int, n: int, threads: int, reps: int) -> dict[str, float]:
    """{"pp": median tok/s, "tg": ...} from `llamalab bench` (one worker process per cell)."""
    cmd = [sys.executable, "-m", "llamalab.cli", "bench", "-m", model, "-b", "llamalab", "-p", str(p), "-n", str(n),
           "-t", str(threads), "-r", str(reps), "-o", "json", "--no-progress"]
    rows = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {r["kind"]: float(r["median_ts"]) for r in rows if r["status"] == "ok"}


def llamalab_at_depth(model: str, p: int, n: int, threads: int, reps: int, depth: int, kv_type: str) -> dict[str, float]:
    """{"pp": median tok/s, "tg": ...} after `depth` tokens of context, from a worker process (this script)."""
    cmd = [sys.executable, __file__, "--worker", model, str(p), str(n), str(threads), str(reps), str(depth), kv_type]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def depth_worker(model: str, p: int, n: int, threads: int, reps: int, depth: int, kv_type: str) -> None:
    """Prints {"pp": tok/s, "tg": tok/s}: the median of reps runs (after one warm-up), each on a cache
    holding `depth` tokens (filled untimed): the p-token prompt as one forward; n single-token steps."""
    import statistics
    import time

    import numpy as np

    from llamalab import kernels
    from llamalab.formats import load
    from llamalab.runtime.model import Llama

    kernels.set_threads(threads)
    llm = Llama(load(model))
    cache = llm.new_cache(depth + p + n, {"f16": np.float16, "f32": np.float32}[kv_type])
    llm.warm_up()
    rng = np.random.default_rng(0)
    context = rng.integers(0, llm.config.vocab_size, depth)
    prompt, gen = rng.integers(0, llm.config.vocab_size, p), rng.integers(0, llm.config.vocab_size, n)
    rates: dict[str, list[float]] = {"pp": [], "tg": []}
    for _ in range(reps + 1):
        for kind, ids in (("pp", prompt), ("tg", gen)):
            if not len(ids):
                continue
            cache.reset()
            if depth:
                llm.forward(context, cache)
            t0 = time.perf_counter()
            if kind == "pp":
                llm.forward(ids, cache)
            else:
                for t in ids:
                    llm.forward(t[None], cache)
            rates[kind].append(len(ids) / (time.perf_counter() - t0))
    print(json.dumps({k: statistics.median(v[1:]) for k, v in rates.items() if v}))


def model_file(spec: str) -> str:
    """The GGUF a model spec names (synth: specs are written once and cached by llamalab)."""
    from _models import load_or_exit  # benchmarks/ is the script's own folder

    return load_or_exit(spec, "vs_llama_bench")[0]


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        m, *nums, kv = sys.argv[2:]
        return depth_worker(m, *map(int, nums), kv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", help="path, known name or synth:PRESET:DTYPE (repeatable)")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-d", type=int, default=0, help="depth: tokens of context before each test (llama-bench -d)")
    ap.add_argument("--kv-type", default="f16", choices=("f16", "f32"), help="llamalab's KV cache: f16 (llama-bench's default) or f32")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run both sides this many times, alternated, and keep each side's best (the host is shared: "
                         "its slow spells last minutes)")
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    ap.add_argument("--json", type=Path, help="also write the rows here as JSON (benchmarks/grid.py reads it)")
    a = ap.parse_args()
    exe = os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench")
    if exe is None:
        sys.exit("error: llama-bench not found (set LLAMA_BENCH or put it on PATH)")
    from llamalab import kernels
    from llamalab.lab.machine import describe

    m = describe()
    p = m["probe"]
    amx = ("yes, off for llamalab (LLAMALAB_AMX=0)" if os.environ.get("LLAMALAB_AMX", "").strip() == "0" else "yes") if p["amx"] else "no"
    lines = [f"Machine: {m['cpu']}, {m['physical_cores']} cores, ISA {p['isa']}, AMX {amx}, "
             f"memory read {p['read_gbs']:.1f} GB/s, load average {m['load_average'][0]:.1f}; "
             f"llamalab prefill LLAMALAB_GEMM={os.environ.get('LLAMALAB_GEMM', 'auto')}, decode activations "
             f"{kernels.get_matvec_backend()}, KV cache {a.kv_type}; "
             f"-r {a.r}, best of {a.rounds} alternated round(s); "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; llamalab {m['llamalab_commit']}; {exe}", "",
             "| model | threads | test | llamalab t/s | llama.cpp t/s | ratio | llamalab GB/s | llama.cpp GB/s |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    print(lines[0], flush=True)
    from llamalab.formats.pages import rehouse

    notes = []  # one line per model, between the machine line and the table
    records = []  # the table's rows as data (--json)
    for spec in a.model or ["smollm2-135m"]:
        path = model_file(spec)
        size = os.path.getsize(path)
        before, after = rehouse(path)  # both runtimes then map the same 2 MiB page-cache folios
        if after:
            note = f"page cache of {Path(path).name}: {after >> 20} of {os.path.getsize(path) >> 20} MiB in 2 MiB folios"
            note += f" (read again: had {before >> 20})" if after != before else ""
            notes.append(note)
            print(note, flush=True)
        for t in (int(x) for x in a.t.split(",")):
            ours, theirs = {}, {}
            for _ in range(a.rounds):  # alternated: a slow spell of the shared host hits both sides alike
                if a.d:
                    mine = llamalab_at_depth(path, a.p, a.n, t, a.r, a.d, a.kv_type)
                else:
                    mine = llamalab_bench(path, a.p, a.n, t, a.r)
                peer = llama_bench(exe, path, a.p, a.n, t, a.r, a.d)
                for best, new in ((ours, mine), (theirs, peer)):
                    for k, v in new.items():
                        best[k] = max(best.get(k, 0.0), v)
            at = f" @ d{a.d}" if a.d else ""  # llama-bench's own label
            for kind, count in (("pp", a.p), ("tg", a.n)):
                if kind in ours and kind in theirs:
                    rec = {"spec": spec, "model": Path(path).name, "bytes": size, "threads": t, "kind": kind,
                           "test": f"{kind}{count}{at}", "ours": ours[kind], "peer": theirs[kind],
                           "ratio": ours[kind] / theirs[kind]}
                    gbs = ""
                    if kind == "tg" and not a.d:  # weights bytes × tok/s: what a token reads (at depth, the KV cache too)
                        rec.update(ours_gbs=size * ours[kind] / 1e9, peer_gbs=size * theirs[kind] / 1e9)
                        gbs = f" {rec['ours_gbs']:.1f} | {rec['peer_gbs']:.1f} |"
                    records.append(rec)
                    row = (f"| {rec['model']} | {t} | {rec['test']} | {ours[kind]:.1f} | {theirs[kind]:.1f} | "
                           f"{rec['ratio']:.2f}× |" + (gbs or " | |"))
                    lines.append(row)
                    print(row, flush=True)
    if a.out:
        a.out.write_text("\n".join([lines[0], *notes, *lines[1:]]) + "\n")
    if a.json:
        a.json.write_text(json.dumps({"machine": lines[0], "notes": notes, "rows": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
