#!/usr/bin/env python
"""Per-token sampling cost at the vocabularies people run: the default sampler (temperature 0.8,
top-k 40, top-p 0.95, min-p 0.05), greedy, and the top-k step alone against a whole-vocabulary
np.argpartition, on Gaussian logits (a model's spread: std 3).

    python benchmarks/sampling_bench.py [--vocab 32000 49152 128256 262144] [-r 200]

Prints the median microseconds per call. A benchmark, not a test: other load moves the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from llamalab.sampling import SamplingParams, make_sampler, top_k_ids


def median_us(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 49152, 128256, 262144])
    ap.add_argument("-r", type=int, default=200, help="calls per figure")
    a = ap.parse_args()
    sample, greedy = make_sampler(SamplingParams(seed=0)), make_sampler(SamplingParams(temperature=0))
    print("| vocab | default sampler, us | greedy, us | top-k 40 (top_k_ids), us | np.argpartition, us |")
    print("|---:|---:|---:|---:|---:|")
    for n in a.vocab:
        logits = (np.random.default_rng(n).standard_normal(n) * 3).astype(np.float32)
        row = [median_us(lambda: sample(logits), a.r), median_us(lambda: greedy(logits), a.r),
               median_us(lambda: top_k_ids(logits, 40), a.r), median_us(lambda: np.argpartition(logits, -40)[-40:], a.r)]
        print(f"| {n:,} | " + " | ".join(f"{v:.0f}" for v in row) + " |")


if __name__ == "__main__":
    main()
