"""What the benchmark ran on: CPU, cores, SIMD flags, memory, OS and library versions."""

from __future__ import annotations

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


def describe() -> dict:
    """A JSON-able description of this machine and software."""
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
    if m.get("llamalab_commit"):
        lines.append(f"- llamalab commit: {m['llamalab_commit']}")
    if m.get("load_average"):
        la = m["load_average"]
        lines.append(f"- Load average at start: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return lines
