"""The benchmark scripts that take a model: a name that is no model is one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, args", [("decode_fidelity", ["-n", "2"]), ("prefill_fidelity", []), ("busy", [])])
def test_an_unknown_model_is_one_line(script, args):
    p = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "no-such-model", *args],
                       capture_output=True, text=True, timeout=120)
    err = p.stderr.strip()
    assert p.returncode == 1 and not p.stdout and "\n" not in err
    assert err.startswith(f"{script}: error: no model named 'no-such-model' and no such file; give a .gguf path")
