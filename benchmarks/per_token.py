#!/usr/bin/env python
"""Where a generated token's time goes outside the compiled decode step (issue 12 part 4).

    PYTHONPATH=src python benchmarks/per_token.py                     # stories15M, 1 thread, greedy
    PYTHONPATH=src python benchmarks/per_token.py -t 2 -m stories110M
    PYTHONPATH=/tmp/old/src python benchmarks/per_token.py -t 2       # another checkout, for a before/after

Runs ``LLM.generate([BOS], temperature=0, ignore_eos=True)`` on a synthesized llama2.c checkpoint
(the one ``vs_llama2c.py`` times) and wraps, by the calling thread's wall clock, the compiled step
(runtime/decode.py ``_step``), the Python around it (``FastDecoder.step_one``; a tree from before it
existed: ``step``), ``Model.forward`` around that, the sampler, the logprob's normalizer
(``generate.logsumexp``) and the detokenizer's ``feed``. Each row is one round of -n tokens, counted
from the second token: the token's wall time, the part outside the step, and each piece's own time
(without the pieces it wraps); "rest" is the generator, stop strings and the Chunk. The wrappers
cost ~1 us each. This is a benchmark, not a test: other load moves the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
BOS = 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="stories15M", help="llama2.c preset (stories15M, stories42M, stories110M)")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-n", type=int, default=200, help="tokens per round")
    ap.add_argument("-r", "--rounds", type=int, default=5)
    a = ap.parse_args()
    if a.threads < 1 or a.n < 2 or a.rounds < 1:
        sys.exit(f"error: -t and -r must be >= 1 and -n >= 2, got -t {a.threads} -n {a.n} -r {a.rounds}")
    for k in THREAD_ENV:  # before NumPy and Numba are imported
        os.environ[k] = str(a.threads)

    from llamalab import LLM, api, generate
    from llamalab.errors import LlamalabError
    from llamalab.lab.export import export
    from llamalab.runtime import decode

    try:
        llm = LLM(str(export(a.model, "llama2c")), threads=a.threads, progress=False)
    except LlamalabError as e:
        sys.exit(f"error: -m {a.model}: {e}")
    spent: dict[str, float] = defaultdict(float)
    clock = time.perf_counter

    def timed(f, label):
        def run(*args, **kwargs):
            t0 = clock()
            out = f(*args, **kwargs)
            spent[label] += clock() - t0
            return out
        return run

    decoder = llm.model.decoder
    one = "step_one" if hasattr(decoder, "step_one") else "step"
    decode._step = timed(decode._step, "step")
    setattr(decoder, one, timed(getattr(decoder, one), "wrapper"))
    llm.model.forward = timed(llm.model.forward, "forward")
    generate.logsumexp = timed(generate.logsumexp, "logsumexp")
    make_sampler = api.make_sampler
    api.make_sampler = lambda params: timed(make_sampler(params), "sampler")
    incremental = llm.tokenizer.incremental_decoder

    def decoder_of(*args, **kwargs):
        d = incremental(*args, **kwargs)
        d.feed = timed(d.feed, "feed")
        return d

    llm.tokenizer.incremental_decoder = decoder_of
    print(f"{a.model}, {a.threads} thread(s), {a.n} tokens a round; us a token")
    print("| round | token | step | outside | step_one/step wrapper | Model.forward | sampler | logsumexp | feed | rest |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in range(a.rounds):
        stamps = []
        for _ in llm.generate([BOS], max_tokens=a.n, temperature=0.0, ignore_eos=True):
            stamps.append(clock())
            if len(stamps) == 1:
                spent.clear()  # from the first token on: the prompt's forward is not a token's
        k = len(stamps) - 1
        us = {key: v / k * 1e6 for key, v in spent.items()}
        token = (stamps[-1] - stamps[0]) / k * 1e6
        own = {"wrapper": us["wrapper"] - us["step"], "forward": us["forward"] - us["wrapper"],
               "sampler": us["sampler"], "logsumexp": us["logsumexp"], "feed": us["feed"]}
        outside = token - us["step"]
        rest = outside - sum(own.values())
        print(f"| {r + 1} | {token:.0f} | {us['step']:.0f} | **{outside:.0f}** | " +
              " | ".join(f"{v:.0f}" for v in own.values()) + f" | {rest:.0f} |")


if __name__ == "__main__":
    main()
