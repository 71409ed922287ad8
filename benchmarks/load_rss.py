#!/usr/bin/env python
"""Load time and peak memory of `LLM()` against the bound the weights set: file + KV cache + 100 MB.

    python benchmarks/load_rss.py MODEL [-t 2] [--n-ctx 4096] [-p 32 -n 32]

MODEL is a path, a known name (smollm2-135m) or synth:PRESET:DTYPE, as everywhere in llamalab.

Each thread count runs in a fresh process (peak RSS is per process): it times `LLM(model)`
(the memory map, the plans, and the warm-up that loads or compiles the kernels), then a
prompt of -p tokens and -n generated ones, and reports the peak resident set size
(getrusage) next to file size + the KV cache of --n-ctx positions + 100 MB. File pages the
process touched count in RSS (they are the weights, read in place: nothing is copied).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(model: str, threads: int, n_ctx: int, p: int, n: int) -> dict:
    t0 = time.perf_counter()
    from llamalab import LLM

    llm = LLM(model, threads=threads, n_ctx=n_ctx, progress=False)
    load_s = time.perf_counter() - t0
    prompt = [int(t) for t in range(1, p + 1)]
    t1 = time.perf_counter()
    out = list(llm.generate(prompt, max_tokens=n, temperature=0, ignore_eos=True))
    gen_s = time.perf_counter() - t1
    cache = llm.model.new_cache(n_ctx)
    return {"load_s": load_s, "generate_s": gen_s, "tokens": len(out), "kv_bytes": cache.k.nbytes + cache.v.nbytes,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "file_bytes": os.path.getsize(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-t", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("-p", type=int, default=32)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.model, int(a.t), a.n_ctx, a.p, a.n)))
        return
    from _models import load_or_exit  # benchmarks/ is the script's own folder

    a.model = load_or_exit(a.model, "load_rss")[0]  # the children and the file size read the file itself
    mib = 1 << 20
    print(f"{os.path.basename(a.model)}: load = LLM() incl. warm-up; bound = file + KV cache ({a.n_ctx} positions) + 100 MiB; "
          f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for t in a.t.split(","):
        cmd = [sys.executable, __file__, a.model, "-t", t, "--n-ctx", str(a.n_ctx), "-p", str(a.p), "-n", str(a.n), "--child"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"load_rss: the {t}-thread run failed: {last}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
        bound = r["file_bytes"] + r["kv_bytes"] + 100 * mib
        print(f"  {t} thread(s): load {r['load_s']:.1f} s, pp{a.p}+tg{a.n} {r['generate_s']:.1f} s, peak RSS "
              f"{r['peak_rss'] / mib:,.0f} MiB vs bound {bound / mib:,.0f} MiB (file {r['file_bytes'] / mib:,.0f}, "
              f"KV {r['kv_bytes'] / mib:,.0f}): {'within' if r['peak_rss'] <= bound else 'OVER'}")


if __name__ == "__main__":
    main()
