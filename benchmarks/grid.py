#!/usr/bin/env python
"""Issue 12's whole grid in one run: llamalab against native llama.cpp and llama2.c, one table, one chart.

    LLAMA_BENCH=/path/to/llama-bench LLAMA2C=/path/to/run python benchmarks/grid.py
    python benchmarks/grid.py --stages smollm2 d4000            # a part of it
    python benchmarks/grid.py --from docs/bench/grid-2026-12-03-1930   # table and chart again, from its JSON

Runs, one after the other, the commands the README's speed tables come from (each prints its
progress as it goes, and writes its own Markdown and JSON into --out):

    smollm2  vs_llama_bench.py -p 512 -n 128 -r 3 --rounds 2           the default model, pp512 / tg128
    d4000    vs_llama_bench.py -p 0 -n 64 -d 4000 -r 2 --rounds 2       tg64 after 4,000 tokens of context
    1b       vs_llama_bench.py -m synth:llama-3.2-1b:{f16,q4_k_m,q8_0} -p 128 -n 32 -r 3 --rounds 2
    8b       vs_llama_bench.py -m synth:llama-3-8b:q4_k_m -p 0 -n 32 -r 2 --rounds 2
    stories  vs_llama2c.py -r 5 -t 1 2                                stories15M / stories110M .bin

then writes ``grid.md`` (a row per cell, 1 and 2 threads side by side: llamalab / peer tok/s, the
ratio, and for generation each side's GB/s, the file's bytes × tok/s, beside the machine's memory
probe; not for tg64 @ d4000, whose tokens read the KV cache too) and ``grid.png`` (the ratios, with the issue's goal of 1.2× drawn in). A stage that fails is
named in the table and the others still run. The synthesized 1B and 8B files are written on first
use (~25 GB under ~/.cache/llamalab/synth, the 8B F16 they are quantized from included). About 45 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONE_B = ["-m", "synth:llama-3.2-1b:f16", "-m", "synth:llama-3.2-1b:q4_k_m", "-m", "synth:llama-3.2-1b:q8_0"]
STAGES = {  # name: (script, arguments)
    "smollm2": ("vs_llama_bench.py", ["-p", "512", "-n", "128", "-r", "3", "--rounds", "2"]),
    "d4000": ("vs_llama_bench.py", ["-p", "0", "-n", "64", "-d", "4000", "-r", "2", "--rounds", "2"]),
    "1b": ("vs_llama_bench.py", [*ONE_B, "-p", "128", "-n", "32", "-r", "3", "--rounds", "2"]),
    "8b": ("vs_llama_bench.py", ["-m", "synth:llama-3-8b:q4_k_m", "-p", "0", "-n", "32", "-r", "2", "--rounds", "2"]),
    "stories": ("vs_llama2c.py", ["-r", "5", "-t", "1", "2"]),
}
GOAL = 1.2  # issue 12: every cell at least this much faster than the peer


def label(row: dict) -> str:
    """A cell's name: the model (synth presets by their shape and type) and the test."""
    from llamalab.lab.models import SYNTH_PREFIX, parse_synth_spec

    spec = row["spec"]
    if spec.startswith(SYNTH_PREFIX):
        preset, dtype = parse_synth_spec(spec)
        model = f"{preset} {dtype.upper()}"
    elif row["model"].endswith(".bin"):
        model = f"{spec} .bin vs llama2.c"
    else:
        model = Path(row["model"]).stem
    return f"{model} {row['test']}"


def cells(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """{cell label: {threads: row}}, in the order the rows came."""
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(label(r), {})[r["threads"]] = r
    return out


def cell_text(r: dict | None) -> str:
    """'ours / peer (ratio×)' with the GB/s of generation; the ratio bold where it meets the goal."""
    if r is None:
        return ""
    ratio = f"{r['ratio']:.2f}×"
    text = f"{r['ours']:.1f} / {r['peer']:.1f} ({f'**{ratio}**' if r['ratio'] >= GOAL else ratio})"
    if "ours_gbs" in r and "@ d" not in r["test"]:  # at depth a token reads the KV cache too
        text += f": {r['ours_gbs']:.1f} / {r['peer_gbs']:.1f} GB/s"
    return text


def table(rows: list[dict]) -> list[str]:
    """The grid's Markdown table: a row per cell, a column per thread count."""
    by_cell = cells(rows)
    threads = sorted({t for c in by_cell.values() for t in c})
    head = "| cell | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |"
    lines = [head, "|---|" + "---|" * len(threads)]
    for name, c in by_cell.items():
        lines.append(f"| {name} | " + " | ".join(cell_text(c.get(t)) for t in threads) + " |")
    return lines


def chart(rows: list[dict], title: str, path: Path) -> None:
    """Horizontal bars of llamalab / peer per cell and thread count, log scale, parity and the goal drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    by_cell = cells(rows)
    names = list(by_cell)[::-1]  # the first cell on top
    threads = sorted({t for c in by_cell.values() for t in c})
    height = 0.8 / len(threads)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) * len(threads) + 1.6))
    for k, t in enumerate(threads):
        ys = [i + ((len(threads) - 1) / 2 - k) * height for i in range(len(names))]  # 1 thread on top
        vals = [by_cell[n][t]["ratio"] if t in by_cell[n] else 0.0 for n in names]
        bars = ax.barh(ys, vals, height=height * 0.95, label=f"{t} thread{'s' if t > 1 else ''}")
        for bar, v in zip(bars, vals):
            if v > 0:
                ax.text(v * 1.02, bar.get_y() + bar.get_height() / 2, f"{v:.2f}×", va="center", fontsize=7)
    ax.set_xscale("log")
    top = max(r["ratio"] for r in rows)
    ax.set_xlim(min(0.5, min(r["ratio"] for r in rows) * 0.9), max(2.0, top * 1.35))
    ticks = [t for t in (0.5, 0.75, 1, 1.2, 1.5, 2, 3, 5, 8) if t <= top * 1.35]
    ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.axvline(1.0, color="0.4", lw=1)
    ax.axvline(GOAL, color="tab:red", lw=1, ls="--", label=f"goal {GOAL:g}×")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("llamalab tok/s ÷ peer tok/s (llama.cpp's llama-bench; llama2.c for the .bin checkpoints)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_title(line: str) -> str:
    """The chart's machine: a stage's machine line up to its load average ('- stage: Machine: CPU, ...')."""
    text = line.split(": ", 1)[-1].removeprefix("Machine: ").removeprefix("machine at start: ")
    return text.split("; ")[0].split(", load average")[0]


def write(out: Path, done: dict[str, str], commands: dict[str, str]) -> None:
    """grid.md and grid.png from the stages' JSON in out (done: stage -> 'ok' or why not)."""
    rows, machines, notes = [], [], []
    for stage in done:
        f = out / f"{stage}.json"
        if done[stage] == "ok" and f.is_file():
            data = json.loads(f.read_text())
            rows += data["rows"]
            machines.append(f"- {stage}: {data['machine']}")
            notes += [f"- {stage}: {n}" for n in data.get("notes", [])]
    lines = [f"# llamalab against native peers: issue 12's grid ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             "Each stage's own line (machine, memory probe, commit, settings):", "", *machines, *notes, "",
             "Commands (from the repository root):", "",
             *[f"- {s}: `python benchmarks/{c}`" for s, c in commands.items()], ""]
    failed = [f"- {s}: {why}" for s, why in done.items() if why != "ok"]
    if failed:
        lines += ["Stages without figures:", "", *failed, ""]
    if rows:
        lines += ["llamalab / peer tok/s (ratio); generation also as the file's bytes × tok/s, each side (not after a "
                  "depth, where a token reads the KV cache too):", "",
                  *table(rows), "", "![ratios](grid.png)"]
        chart(rows, f"{machine_title(machines[0]) if machines else ''}\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
              out / "grid.png")
    (out / "grid.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    ap.add_argument("--out", type=Path, help="folder for every stage's table and the grid (default: docs/bench/grid-DATE-TIME)")
    ap.add_argument("--from", dest="again", type=Path, metavar="DIR", help="no runs: the table and chart again from DIR's JSON")
    a = ap.parse_args()
    if a.again:
        if not a.again.is_dir():
            sys.exit(f"error: --from {a.again}: no such folder")
        done = {s: "ok" for s in STAGES if (a.again / f"{s}.json").is_file()}
        if not done:
            sys.exit(f"error: --from {a.again}: no stage's JSON in it (expected {', '.join(f'{s}.json' for s in STAGES)})")
        write(a.again, done, {s: " ".join([STAGES[s][0], *STAGES[s][1]]) for s in done})
        print(a.again / "grid.md")
        return
    out = a.out or HERE.parent / "docs" / "bench" / f"grid-{datetime.now(timezone.utc):%Y-%m-%d-%H%M}"
    out.mkdir(parents=True, exist_ok=True)
    done, commands = {}, {}
    for stage in a.stages:
        script, args = STAGES[stage]
        commands[stage] = " ".join([script, *args])
        t0 = time.time()
        print(f"== {stage}: {commands[stage]}", flush=True)
        p = subprocess.run([sys.executable, str(HERE / script), *args, "--out", str(out / f"{stage}.md"),
                            "--json", str(out / f"{stage}.json")])
        done[stage] = "ok" if p.returncode == 0 else f"exit status {p.returncode} (its error is in the run's output)"
        print(f"== {stage}: {done[stage]}, {time.time() - t0:.0f} s", flush=True)
        write(out, done, commands)  # after each stage: a stopped run keeps what it measured
    print(out / "grid.md")


if __name__ == "__main__":
    main()
