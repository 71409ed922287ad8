#!/usr/bin/env python
"""The study behind docs/study/: the default model plus synthesized stories15M / 42M / 110M
(random weights, real shapes), every backend, 1 and 2 threads, prompts of 5 / 1,200 / 4,000
tokens, 125 generated tokens, 3 repeats. Writes report.md, results.json, results.csv and PNG
charts into docs/study/ (or --out).

    python benchmarks/study.py
    BENCH_PYTHON=/path/to/venv/bin/python python benchmarks/study.py    # llama-cpp-python / torch there
    LLAMA2C_RUN=/path/to/llama2.c/run python benchmarks/study.py        # add llama2.c (run.c) side by side

LLAMA2C_RUN points at a compiled llama2.c `run` (gcc -Ofast -fopenmp -march=native run.c -lm -o run)
with its tokenizer.bin beside it; it runs the synthesized models' llama2.c twins (same weights,
float32) on the short prompt only, since run.c feeds prompts one token at a time. The NumPy
reference is capped at the long prompt and 16 generated tokens (--cap reference=1200/16).
Extra arguments go to `llamalab study` (see `llamalab study --help`); `--quick` for a smoke run.

The studies the project reproduces are presets of the same command, each writing its own folder:

    python benchmarks/study.py --preset languages --quick -o docs/study/languages        # llama2.c and its ports
    python benchmarks/study.py --preset llamafile-mlx --quick -o docs/study/llamafile-mlx
    python benchmarks/study.py --preset numba-np --quick -o docs/study/numba-np          # llama3.np vs Numba

(with a preset the default model, the caps and LLAMA2C_RUN's --external are left out: the preset
names its runtimes, found as `llamalab runtimes` lists them).
"""

import os
import sys
from pathlib import Path

from llamalab.cli import main

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    # Caps first, so that the caller's own --cap (later on the line) wins: the NumPy reference
    # decodes ~1 token/s and its 4,000-token prefill alone takes minutes, so it runs the short
    # and long prompts with 16 generated tokens.
    preset = "--preset" in sys.argv[1:]
    args = ["study"] if preset else ["study", "--cap", "reference=1200/16"]
    run = os.environ.get("LLAMA2C_RUN")
    if run and not preset:
        tok = Path(run).with_name("tokenizer.bin")
        args += ["--external", f"name=llama2.c;cmd={run} {{model_llama2c}} -n {{steps}} -t 0 -i {{prompt}} -z {tok};"
                               "regex=achieved tok/s: ([0-9.]+)",
                 "--cap", "external:llama2.c=5/"]
    args += sys.argv[1:]
    if "-o" not in args and "--out" not in args:
        args += ["--out", str(ROOT / "docs" / "study")]
    if os.environ.get("BENCH_PYTHON") and "--python" not in args:
        args += ["--python", os.environ["BENCH_PYTHON"]]
    sys.exit(main(args))
