"""What the benchmark ran on: CPU, cores, SIMD flags, memory, OS and library versions."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# the SIMD / ISA flags that decide how fast a CPU runs these kernels
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
                     "asimd", "sve", "i8mm")  # fmt: skip

PACKAGES = ("llamalab", "numpy", "numba", "llvmlite", "gguf", "llama_cpp_python", "torch", "transformers")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The interesting SIMD flags this CPU reports, in INTERESTING_FLAGS order."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in INTERESTING_FLAGS if f in have]


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when absent), read from package metadata without importing."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The llamalab checkout's commit (with '+dirty' when modified), when run from a git checkout."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha or None


@functools.lru_cache(maxsize=None)
def probe(seconds: float = 0.3) -> dict:
    """What the machine can do, measured quickly with NumPy (numbers are rough; a busy machine lowers them):

    read_gbs     bytes/s of a sum over a 256 MiB float32 array (one thread: NumPy's reduction)
    peak_gflops  float32 GFLOP/s of a 1024x1024 matmul (the BLAS, its default threads)
    amx          whether the CPU reports AMX tiles (amx_tile), which llama.cpp's extra buffers use
    """
    import time

    import numpy as np

    a = np.ones(64 << 20, np.float32)  # 256 MiB: well past any cache
    a.sum()
    best = float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    read = a.nbytes / best / 1e9
    del a
    m = np.ones((1024, 1024), np.float32)
    m @ m
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        m @ m
        best = min(best, time.perf_counter() - t0)
    flags = cpu_flags()
    return {"read_gbs": read, "peak_gflops": 2 * 1024**3 / best / 1e9, "amx": "amx_tile" in flags,
            "isa": isa_level(flags)}


def isa_level(flags: list[str]) -> str:
    """The widest vector ISA in the flags: 'AVX-512 + AMX', 'AVX-512', 'AVX2', 'NEON/ASIMD', ..."""
    have = set(flags)
    if "avx512f" in have:
        return "AVX-512 + AMX" if "amx_tile" in have else "AVX-512"
    for flag, name in (("avx2", "AVX2"), ("avx", "AVX"), ("sve", "SVE"), ("asimd", "NEON/ASIMD"), ("sse4_2", "SSE4.2")):
        if flag in have:
            return name
    return "scalar"


def describe(with_probe: bool = True) -> dict:
    """A JSON-able description of this machine and software (with the quick probe unless told not to)."""
    import psutil

    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "flags": cpu_flags(),
        "memory_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": package_versions(),
        "llamalab_commit": git_commit(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "hostname": platform.node(),
        "probe": probe() if with_probe else None,
    }


def describe_lines(m: dict) -> list[str]:
    """Human-readable lines (markdown bullets) for a report."""
    mem = m.get("memory_bytes") or 0
    pk = ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items() if v)
    lines = [
        f"- CPU: {m.get('cpu')} ({m.get('arch')}), {m.get('physical_cores')} physical / "
        f"{m.get('logical_cores')} logical cores",
        f"- SIMD flags: {' '.join(m.get('flags') or []) or 'none detected'}",
        f"- Memory: {mem / 2**30:.1f} GiB",
        f"- OS: {m.get('os')}; Python {m.get('python')}",
        f"- Libraries: {pk}",
    ]
    p = m.get("probe")
    if p:
        lines.append(f"- Probe: memory read {p['read_gbs']:.1f} GB/s (one thread), float32 matmul "
                     f"{p['peak_gflops']:.0f} GFLOP/s, ISA {p['isa']}, AMX {'yes' if p['amx'] else 'no'}")
    if m.get("llamalab_commit"):
        lines.append(f"- llamalab commit: {m['llamalab_commit']}")
    if m.get("load_average"):
        la = m["load_average"]
        lines.append(f"- Load average at start: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return lines
