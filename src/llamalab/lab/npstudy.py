"""The numba-np study's extras: a dtype audit and a per-function profile of llama3.np and its Numba variant.

- dtype audit: the arrays the ports load (the exported .npz) and, for the Numba variant, what its
  own ``--dtype-check`` mode prints (weights float32, KV cache float64 in both: NumPy's default).
- per-function profile: the port run once under ``cProfile`` (whole process, greedy from BOS),
  the functions with the most own time. Prefill vs decode is in the main tables for llamalab;
  the ports prefill only BOS here (they cannot read the id vocabulary's prompt text).
"""

from __future__ import annotations

import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

TOP = 10


def npz_dtypes(path: str) -> dict[str, str]:
    """{dtype: count of arrays} in an .npz."""
    import numpy as np

    out: dict[str, int] = {}
    with np.load(path) as z:
        for k in z.files:
            d = str(z[k].dtype)
            out[d] = out.get(d, 0) + 1
    return {k: str(v) for k, v in out.items()}


def profile_port(python: str, script: str, cwd: str, threads: int = 1, timeout: float = 900) -> list[dict]:
    """The TOP functions by own time of one run of a llama3.np-style script (cProfile)."""
    import os

    with tempfile.TemporaryDirectory() as tmp:
        prof = Path(tmp) / "run.prof"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        r = subprocess.run([python, "-m", "cProfile", "-o", str(prof), script, ""], cwd=cwd, env=env,
                           capture_output=True, timeout=timeout)
        if r.returncode != 0 or not prof.is_file():
            return [{"error": (r.stderr or r.stdout).decode("utf-8", "replace").strip()[-200:]}]
        st = pstats.Stats(str(prof))
        total = st.total_tt or 1.0
        rows = []
        for (file, line, fn), (cc, nc, tt, ct, _) in st.stats.items():
            rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": nc, "own_s": tt, "cum_s": ct,
                         "share": tt / total})
        rows.sort(key=lambda r: -r["own_s"])
        return rows[:TOP]


def numba_np_extras(models, backends, progress: bool = True) -> dict:
    """{'numba_np': {runtime: {'dtypes', 'dtype_check', 'profile'}}} for the np ports that are found."""
    from .matrix import port_files

    out = {}
    for b in backends:
        port = b.options.get("port")
        if not port or not port.get("exe") or not b.name.startswith("llama3.np"):
            continue
        for m in models:
            files, why = port_files(m.info, b.name, 16)
            if why:
                continue
            cwd = str(Path(files["npz"]).parent)
            if progress:
                print(f"numba-np: profiling {b.name}", file=sys.stderr)
            entry = {"dtypes": npz_dtypes(files["npz"]),
                     "profile": profile_port(sys.executable, port["exe"], cwd)}
            if b.name.endswith("numba"):
                r = subprocess.run([sys.executable, port["exe"], "--dtype-check"], cwd=cwd, capture_output=True,
                                   text=True, timeout=900)
                entry["dtype_check"] = [ln for ln in r.stdout.splitlines() if "dtype" in ln.lower()][:12]
            out[b.name] = entry
    return {"numba_np": out} if out else {}


def markdown(extra: dict) -> list[str]:
    """The report section for the extras."""
    from .report import fmt_num, md_table

    data = extra.get("numba_np") or {}
    if not data:
        return []
    out = ["## llama3.np vs Numba: dtypes and per-function profile\n"]
    for name, e in data.items():
        out.append(f"### {name}\n")
        out.append("Arrays in the .npz it loads: " + ", ".join(f"{k} × {v}" for k, v in e["dtypes"].items()) + ".\n")
        if e.get("dtype_check"):
            out.append("Its `--dtype-check`:\n")
            out += [f"    {ln}" for ln in e["dtype_check"]]
            out.append("")
        prof = e.get("profile") or []
        if prof and "error" in prof[0]:
            out.append(f"Profile failed: {prof[0]['error']}\n")
        elif prof:
            out.append("Functions with the most own time (cProfile, one whole run):\n")
            out.append(md_table(["function", "calls", "own s", "cum s", "share"],
                                [[p["function"], str(p["calls"]), fmt_num(p["own_s"], 3), fmt_num(p["cum_s"], 3),
                                  f"{100 * p['share']:.0f}%"] for p in prof], "lrrrr"))
            out.append("")
    return out
