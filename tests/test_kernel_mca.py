"""benchmarks/kernel_mca.py: the inner loops it hands to llvm-mca, and its errors."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_mca.py"
_spec = importlib.util.spec_from_file_location("kernel_mca", _PATH)
kernel_mca = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernel_mca)

ASM = """\
f:
\tpushq\t%rbp
.LBB0_1:
\tmovq\t(%rdi), %rax
.LBB0_2:
\t.p2align\t4
\tvaddps\t%zmm0, %zmm1, %zmm1
\taddq\t$64, %rdi
\tjne\t.LBB0_2
\tdecq\t%rcx
\tjne\t.LBB0_1
.LBB0_3:
\tret
\tjmp\t.LBB0_9
"""


def test_only_innermost_backward_loops_are_taken_without_directives():
    loops = kernel_mca.inner_loops(ASM)
    assert loops == [["\tvaddps\t%zmm0, %zmm1, %zmm1", "\taddq\t$64, %rdi", "\tjne\t.LBB0_2"]]


def test_the_q4_k_kernel_has_a_short_row_and_a_long_row_loop():
    fn = kernel_mca.row_dot("Q4_K")
    loops = kernel_mca.inner_loops(fn.inspect_asm(fn.signatures[0]))
    hints = sorted(next(h for h in ("prefetcht0", "prefetcht1") if any(h in line for line in loop)) for loop in loops)
    assert hints == ["prefetcht0", "prefetcht1"]
    assert all(loop[-1].split()[0].startswith("j") for loop in loops)


def test_unknown_type_is_a_one_line_error():
    with pytest.raises(SystemExit, match="no row kernel for type 'Q9'"):
        kernel_mca.row_dot("Q9")


@pytest.mark.skipif(not (shutil.which("llvm-mca-19") or shutil.which("llvm-mca")), reason="llvm-mca is not installed")
def test_analysis_reports_cycles_and_ports(capsys):
    assert kernel_mca.main(["--type", "Q8_0", "--mcpu", "skylake-avx512"]) == 0
    out = capsys.readouterr().out
    assert "Q8_0 row kernel, loop 1 of" in out and "cycles/iteration" in out and "busiest resources:" in out
