"""Prefill (and decode) speed of a model file at several thread counts and gemm backends.

    PYTHONPATH=src python benchmarks/prefill_model.py MODEL.gguf -p 128 -n 32 -t 1,2 --gemm blas,int,auto

Each (threads, backend) cell runs in turn, round after round (best of --repeats): on a busy
machine alternating keeps the comparison fair. pp = prompt tokens / prefill seconds, tg =
generated tokens / decode seconds, as llama-bench reports them (warm-up excluded).
"""

from __future__ import annotations

import argparse

import numpy as np

from llamalab import kernels
from llamalab.formats import load as load_model_file
from llamalab.runtime.model import Llama

from _timing import prefill_decode  # benchmarks/ is the script's own folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-p", type=int, default=128, help="prompt tokens")
    ap.add_argument("-n", type=int, default=0, help="generated tokens (0: prefill only)")
    ap.add_argument("-t", default="1,2")
    ap.add_argument("--gemm", default="", help="comma-separated gemm backends (default: the current one)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    model = Llama(load_model_file(a.model, None), backend="fast")
    cache = model.new_cache(a.p + a.n + 1)
    model.warm_up()
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.config.vocab_size, a.p).astype(np.int64)
    cells = [(int(t), g) for t in a.t.split(",") for g in (a.gemm.split(",") if a.gemm else [kernels.get_gemm_backend()])]
    best = {c: [float("inf"), float("inf")] for c in cells}
    for r in range(a.repeats + 1):  # round 0: warm-up (and the 'auto' timing of each shape)
        for c in cells:
            kernels.set_threads(c[0])
            kernels.set_gemm_backend(c[1])
            pp_s, tg_s = prefill_decode(model, cache, prompt, a.n)
            if r:
                best[c][0] = min(best[c][0], pp_s)
                best[c][1] = min(best[c][1], tg_s)
    for c in cells:
        tg = f"  tg{a.n} {a.n / best[c][1]:7.2f} tok/s" if a.n else ""
        print(f"t={c[0]} gemm={c[1]:5s} pp{a.p} {a.p / best[c][0]:7.2f} tok/s{tg}", flush=True)


if __name__ == "__main__":
    main()
