#!/usr/bin/env python
"""llamalab against native llama.cpp's llama-bench: same model files, same threads, same tests.

    python benchmarks/vs_llama_bench.py                                   # the default model, pp512/tg128
    python benchmarks/vs_llama_bench.py -m synth:qwen3-0.6b:q4_k_m -m gemma3-270m -p 128 -n 32

llama-bench is found through LLAMA_BENCH or PATH (build it from the llama.cpp copy inside the
llama-cpp-python sdist: see scripts/build-ports/README.md). For each model and thread count it runs
llama-bench once with -fa 0,1 and keeps the faster, then `llamalab bench` (warm-up excluded,
median of -r runs) on the very file llama-bench read. The table gives both, their ratio, and the
machine (AMX or not) it ran on; --out writes it as Markdown too.
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


def llama_bench(exe: str, model: str, p: int, n: int, threads: int, reps: int) -> dict[str, float]:
    """{"pp": tok/s, "tg": tok/s}: the best of flash attention off and on."""
    cmd = [exe, "-m", model, "-p", str(p), "-n", str(n), "-t", str(threads), "-r", str(reps), "-fa", "0,1", "-o", "jsonl"]
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


def model_file(spec: str) -> str:
    """The GGUF a model spec names (synth: specs are written once and cached by llamalab)."""
    from llamalab.lab.models import resolve

    return resolve(spec)[0].path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", help="path, known name or synth:PRESET:DTYPE (repeatable)")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    exe = os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench")
    if exe is None:
        sys.exit("error: llama-bench not found (set LLAMA_BENCH or put it on PATH)")
    from llamalab.lab.machine import describe

    m = describe()
    p = m["probe"]
    lines = [f"Machine: {m['cpu']}, {m['physical_cores']} cores, ISA {p['isa']}, AMX {'yes' if p['amx'] else 'no'}, "
             f"memory read {p['read_gbs']:.1f} GB/s, load average {m['load_average'][0]:.1f}; "
             f"llamalab prefill LLAMALAB_GEMM={os.environ.get('LLAMALAB_GEMM', 'auto')}; "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; llamalab {m['llamalab_commit']}; {exe}", "",
             "| model | threads | test | llamalab t/s | llama.cpp t/s | ratio |", "|---|---:|---|---:|---:|---:|"]
    print(lines[0], flush=True)
    for spec in a.model or ["smollm2-135m"]:
        path = model_file(spec)
        for t in (int(x) for x in a.t.split(",")):
            ours = llamalab_bench(path, a.p, a.n, t, a.r)
            theirs = llama_bench(exe, path, a.p, a.n, t, a.r)
            for kind, size in (("pp", a.p), ("tg", a.n)):
                if kind in ours and kind in theirs:
                    row = (f"| {Path(path).name} | {t} | {kind}{size} | {ours[kind]:.1f} | {theirs[kind]:.1f} | "
                           f"{ours[kind] / theirs[kind]:.2f}× |")
                    lines.append(row)
                    print(row, flush=True)
    if a.out:
        a.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
