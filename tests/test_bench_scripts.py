"""The benchmark scripts that take a model: a name that is no model is one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, args", [
    ("decode_fidelity", ["no-such-model", "-n", "2"]), ("prefill_fidelity", ["no-such-model"]), ("busy", ["no-such-model"]),
    ("load_rss", ["no-such-model"]), ("vs_llama_bench", ["-m", "no-such-model"]),
])
def test_an_unknown_model_is_one_line(script, args):
    env = {**os.environ, "LLAMA_BENCH": "/bin/true"}  # vs_llama_bench looks for llama-bench first
    p = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], capture_output=True, text=True,
                       timeout=120, env=env)
    err = p.stderr.strip()
    assert p.returncode == 1 and "\n" not in err
    assert not p.stdout or script == "vs_llama_bench"  # which prints its machine line before it reads -m
    assert err.startswith(f"{script}: error: no model named 'no-such-model' and no such file; give a .gguf path")
