#!/usr/bin/env python
"""The benchmark anyone can rerun: llama-bench's pp512 and tg128 at 1 and 2 threads for llamalab
(fast and reference) and, when installed, llama.cpp (llama-cpp-python) and PyTorch/transformers,
in one run, backends alternating within each repeat round, median of 3 repeats, ratios against
llama.cpp and the peak RSS of each runtime's own process. These are `llamalab bench`'s defaults,
on the default model (fetched on first use):

    python benchmarks/speed.py                          # markdown table on stdout
    python benchmarks/speed.py -o json --out-file speed.json
    BENCH_PYTHON=/path/to/venv/bin/python python benchmarks/speed.py   # peers installed in another venv

Extra arguments go to `llamalab bench` (see `llamalab bench --help`). The NumPy reference decodes
at about 1 token/s on this model, so by default it generates 16 tokens instead of 128
(--cap reference=/16); its rows say so. Pass `--cap none` to run it in full.
"""

import os
import sys

from llamalab.cli import main

if __name__ == "__main__":
    args = ["bench", *sys.argv[1:]]
    if os.environ.get("BENCH_PYTHON") and "--python" not in args:
        args += ["--python", os.environ["BENCH_PYTHON"]]
    sys.exit(main(args))
