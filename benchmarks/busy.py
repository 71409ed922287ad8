"""Generation beside a busy core: the default thread count must never be slower than -t 1.

    PYTHONPATH=src python benchmarks/busy.py [MODEL] [-p 128] [-n 32] [--wait-policy passive|active]

A hog process spins on one core (pinned to it) while the model prefills -p tokens and
decodes -n, at the default thread count and at 1 thread, alternating for --rounds rounds
(best of each), and at "auto", the count ``LLM()`` uses when none is given (the cores other
processes leave, ``kernels.threads_for_load``); then the same without the hog. Prints
tokens/s and the ratios default / 1 thread and auto / 1 thread (>= 1 is the goal; issue 12
measured 0.05-0.2 before the fix). The hog is stopped
on exit and after --max-seconds at the latest. MODEL defaults to the default model.
``--wait-policy active`` sets OMP_WAIT_POLICY=active before llamalab is imported (the old
behaviour of every entry point but ``serve``), to see what the default buys; ``--wait-policy
passive`` makes idle OpenMP threads sleep at once, without the default's ~1 ms spin
(kernels/threads.py ``SPIN_COUNT``). ``--llama-bench`` (``$LLAMA_BENCH`` or PATH, or a path) runs native
llama.cpp's llama-bench on the same file beside the same hog, at the default thread count and at 1
(best of ``-fa 0,1``, -r --rounds), for its ratio: what a user of llama.cpp gets there.
This is a benchmark, not a test: the machine's other load moves the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def _hog(core: int, seconds: float) -> None:
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        pass
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for _ in range(100_000):
            x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("-p", type=int, default=128, help="prompt tokens")
    ap.add_argument("-n", type=int, default=32, help="generated tokens")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wait-policy", choices=("passive", "active"), default=None)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="the hog's lifetime at most")
    ap.add_argument("--llama-bench", nargs="?", const="", default=None, metavar="PATH",
                    help="also time native llama-bench beside the hog (default path: $LLAMA_BENCH or PATH)")
    a = ap.parse_args()
    exe = None
    if a.llama_bench is not None:
        import shutil

        exe = a.llama_bench or os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench")
        if not exe or not os.path.isfile(exe):
            raise SystemExit(f"busy: error: --llama-bench: {exe or 'llama-bench'} not found (give its path, or set LLAMA_BENCH)")
    if a.wait_policy:
        os.environ["OMP_WAIT_POLICY"] = a.wait_policy
    import numpy as np

    from llamalab import kernels
    from llamalab.runtime.model import Llama

    from _models import load_or_exit  # benchmarks/ is the script's own folder
    from _timing import prefill_decode
    from vs_llama_bench import llama_bench

    path, loaded = load_or_exit(a.model, "busy")
    model = Llama(loaded, backend="fast")
    cache = model.new_cache(a.p + a.n + 1)
    model.warm_up()
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, a.p).astype(np.int64)
    default = kernels.default_threads()

    probe = kernels.BusyCores()
    probe()

    def run(threads: int | str) -> tuple[float, float]:
        # "auto": what LLM() does when no thread count is given (the cores other processes leave)
        kernels.set_threads(kernels.threads_for_load(default, probe()) if threads == "auto" else threads)
        pp_s, tg_s = prefill_decode(model, cache, prompt, a.n)
        return a.p / pp_s, a.n / tg_s

    print(f"{os.path.basename(path)}: default threads {default}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, "
          f"gemm {kernels.get_gemm_backend()}", flush=True)
    for label, hog in (("hog on core 0", True), ("no hog", False)):
        proc = None
        if hog:
            proc = mp.get_context("spawn").Process(target=_hog, args=(0, a.max_seconds), daemon=True)
            proc.start()
        try:
            best = {t: [0.0, 0.0] for t in (default, 1, "auto")}
            peer = {t: [0.0, 0.0] for t in (default, 1)} if exe else {}
            for _ in range(a.rounds):
                for t in best:
                    pp, tg = run(t)
                    best[t] = [max(best[t][0], pp), max(best[t][1], tg)]
                for t in peer:
                    got = llama_bench(exe, path, a.p, a.n, t, 1)
                    peer[t] = [max(peer[t][0], got.get("pp", 0.0)), max(peer[t][1], got.get("tg", 0.0))]
                if peer:
                    probe()  # "auto" reads the load from here on: llama-bench's own threads are not another program's
        finally:
            if proc is not None:
                proc.terminate()
                proc.join(5)
        d, one, auto = best[default], best[1], best["auto"]
        print(f"{label:14s} pp{a.p}: -t {default} {d[0]:8.1f}  -t 1 {one[0]:8.1f}  auto {auto[0]:8.1f}  "
              f"ratios {d[0] / one[0]:5.2f} {auto[0] / one[0]:5.2f}   "
              f"tg{a.n}: -t {default} {d[1]:7.1f}  -t 1 {one[1]:7.1f}  auto {auto[1]:7.1f}  "
              f"ratios {d[1] / one[1]:5.2f} {auto[1] / one[1]:5.2f}", flush=True)
        if peer:
            d, one = peer[default], peer[1]
            print(f"{'  llama.cpp':14s} pp{a.p}: -t {default} {d[0]:8.1f}  -t 1 {one[0]:8.1f}  ratio {d[0] / one[0]:5.2f}"
                  f"{'':20s}tg{a.n}: -t {default} {d[1]:7.1f}  -t 1 {one[1]:7.1f}  ratio {d[1] / one[1]:5.2f}", flush=True)


if __name__ == "__main__":
    main()
