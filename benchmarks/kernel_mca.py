"""What a row kernel's inner loop costs on a CPU you do not have: llvm-mca on its machine code.

    python benchmarks/kernel_mca.py --type Q4_K                      # Sapphire Rapids and Zen 4
    python benchmarks/kernel_mca.py --type F16 --mcpu znver4 --mcpu icelake-server

The kernels are tuned per machine by measurement (kernels_bench.py), but the development machines
change from session to session: a Zen 4 loop cannot be timed on an Intel host. llvm-mca (LLVM's
machine-code analyzer; Debian ``llvm-19``, whose models include Zen 4 and Sapphire Rapids) simulates
the loop on a CPU model and says how many cycles an iteration takes and which execution ports are
full. The numbers are a model's, not a measurement: they rank variants of a loop, and port pressure
shows which instructions to take out.

The row dot of the format is compiled for this machine (the CPU features Numba uses, so AVX-512
code here); each innermost loop of its machine code (a backward branch with no label inside) is
analysed. The K-quant and long-row kernels have two such loops, with ``prefetcht0`` (rows reading
under 16 KiB of x) and ``prefetcht1`` (longer rows).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

_LABEL = re.compile(r"^(\.LBB\d+_\d+):")
_JUMP = re.compile(r"^\s+j\w+\s+(\.LBB\d+_\d+)")


def row_dot(type_name: str, bits: int = 16):
    """The compiled row dot of a ggml type (the K-quants: against the 16- or the 8-bit activation),
    called once so that its machine code exists."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T

    from llamalab.kernels import floats, kquants, legacy
    from llamalab.kernels.activation import META_PER_BLOCK

    qt = getattr(T, type_name.upper(), None)
    name = f"dot_{type_name.lower()}"
    if hasattr(kquants, f"dot{bits}_{type_name.lower()}"):  # the K-quants: one activation's kernel, not the choice of two
        name = f"dot{bits}_{type_name.lower()}"
    elif bits == 8:
        sys.exit(f"kernel_mca: --activation-bits 8 is for the K-quants (Q2_K..Q6_K), got {type_name!r}")
    module = next((m for m in (kquants, legacy, floats) if hasattr(m, name)), None)
    if qt is None or module is None:
        sys.exit(f"kernel_mca: no row kernel for type {type_name!r}; expected one of F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K..Q6_K")
    fn = getattr(module, name)
    cols = 2048
    block, size = GGML_QUANT_SIZES[qt]
    row = np.zeros(cols // block * size, np.uint8)
    if module is floats:
        fn(row, np.zeros(cols, np.float32))
    else:
        fn(row, np.zeros(cols, np.int16), np.zeros(cols // 32 * META_PER_BLOCK, np.float32))
    return fn


def inner_loops(asm: str) -> list[list[str]]:
    """Each innermost loop of an assembly listing: the lines from a label to the branch back to it."""
    lines = asm.splitlines()
    where = {}
    loops = []
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            where[m.group(1)] = i
            continue
        m = _JUMP.match(line)
        if m and m.group(1) in where:
            start = where[m.group(1)]
            body = lines[start + 1 : i + 1]
            if not any(_LABEL.match(b) for b in body):
                loops.append([b for b in body if b.strip() and not b.strip().startswith((".", "#"))])
    return loops


def analyse(loop: list[str], mcpu: str, mca: str) -> str:
    text = "\n".join(loop) + "\n"
    out = subprocess.run([mca, f"-mcpu={mcpu}", "-iterations=200"], input=text, capture_output=True, text=True)
    if out.returncode:
        return f"  {mcpu}: llvm-mca failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
    report = out.stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", report).group(1)) / 200
    rthroughput = re.search(r"Block RThroughput:\s+([\d.]+)", report).group(1)
    ports, pressure = _pressure(report)
    top = sorted(zip(ports, pressure), key=lambda p: -p[1])[:4]
    busiest = ", ".join(f"{name} {value:.1f}" for name, value in top)
    return f"  {mcpu:16s} {cycles:6.1f} cycles/iteration (throughput bound {rthroughput}); busiest resources: {busiest}"


def _pressure(report: str) -> tuple[list[str], list[float]]:
    """The resource names and their uops per iteration, from llvm-mca's summary tables."""
    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\S+)", report, re.M))
    m = re.search(r"Resource pressure per iteration:\n(.+)\n(.+)\n", report)
    if not m:
        return [], []
    keys = re.findall(r"\[([\d.]+)\]", m.group(1))
    values = [0.0 if v == "-" else float(v) for v in m.group(2).split()]
    return [names.get(k, k) for k in keys], values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--type", default="Q4_K", help="ggml type of the row kernel (default Q4_K)")
    ap.add_argument("--mcpu", action="append", help="llvm-mca CPU model, repeatable (default: sapphirerapids, znver4)")
    ap.add_argument("--llvm-mca", default=None, help="llvm-mca to run (default: llvm-mca-19, then llvm-mca on PATH)")
    ap.add_argument("--activation-bits", type=int, choices=(16, 8), default=16,
                    help="the K-quants' activation: 16 bits, or 8 (the int8 matvec backend)")
    args = ap.parse_args(argv)
    mca = args.llvm_mca or shutil.which("llvm-mca-19") or shutil.which("llvm-mca")
    if not mca:
        sys.exit("kernel_mca: llvm-mca not found: install Debian's llvm-19 (apt-get install llvm-19) or pass --llvm-mca PATH")
    fn = row_dot(args.type, args.activation_bits)
    loops = inner_loops(fn.inspect_asm(fn.signatures[0]))
    if not loops:
        sys.exit(f"kernel_mca: found no inner loop in the machine code of {args.type}'s row kernel")
    for k, loop in enumerate(loops):
        vector = sum(1 for line in loop if re.match(r"\s+v", line))
        hint = next((p for p in ("prefetcht0", "prefetcht1") if any(p in line for line in loop)), "no prefetch")
        print(f"{args.type} row kernel, loop {k + 1} of {len(loops)} ({hint}): {len(loop)} instructions, {vector} vector")
        for cpu in args.mcpu or ["sapphirerapids", "znver4"]:
            print(analyse(loop, cpu, mca))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
