"""benchmarks/grid.py: the grid's table, chart and folder handling (the runs themselves are benchmarks)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "grid.py"
_spec = importlib.util.spec_from_file_location("bench_grid", _PATH)
grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grid)


def _row(spec, model, threads, kind, test, ours, peer, size=1_000_000_000):
    r = {"spec": spec, "model": model, "bytes": size, "threads": threads, "kind": kind, "test": test,
         "ours": ours, "peer": peer, "ratio": ours / peer}
    if kind == "tg":
        r.update(ours_gbs=size * ours / 1e9, peer_gbs=size * peer / 1e9)
    return r


ROWS = [
    _row("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", 1, "pp", "pp512", 939.0, 165.3),
    _row("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", 1, "tg", "tg128", 10.0, 9.0, size=98_000_000),
    _row("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", 2, "pp", "pp512", 1734.2, 313.8),
    _row("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", 2, "tg", "tg128", 12.0, 10.0, size=98_000_000),
    _row("synth:llama-3.2-1b:f16", "llama-3.2-1b-f16-ctx8192-s0.gguf", 2, "tg", "tg32", 12.4, 9.0),
    _row("stories15M", "stories15M-f32-ctx256-s0.bin", 1, "tg", "tg255", 387.0, 262.0, size=60_816_028),
]


def test_cells_are_named_by_model_and_test():
    assert [grid.label(r) for r in ROWS[:2]] == ["SmolLM2-135M-Instruct.Q4_1 pp512", "SmolLM2-135M-Instruct.Q4_1 tg128"]
    assert grid.label(ROWS[4]) == "llama-3.2-1b F16 tg32"
    assert grid.label(ROWS[5]) == "stories15M .bin vs llama2.c tg255"


def test_table_puts_thread_counts_side_by_side_and_bolds_only_the_goal():
    """A cell's row holds each thread count; the ratio is bold from 1.2x (the issue's goal), GB/s for generation."""
    assert grid.table(ROWS) == [
        "| cell | 1 thread | 2 threads |",
        "|---|---|---|",
        "| SmolLM2-135M-Instruct.Q4_1 pp512 | 939.0 / 165.3 (**5.68×**) | 1734.2 / 313.8 (**5.53×**) |",
        "| SmolLM2-135M-Instruct.Q4_1 tg128 | 10.0 / 9.0 (1.11×): 1.0 / 0.9 GB/s | 12.0 / 10.0 (**1.20×**): 1.2 / 1.0 GB/s |",
        "| llama-3.2-1b F16 tg32 |  | 12.4 / 9.0 (**1.38×**): 12.4 / 9.0 GB/s |",
        "| stories15M .bin vs llama2.c tg255 | 387.0 / 262.0 (**1.48×**): 23.5 / 15.9 GB/s |  |",
    ]


def test_chart_is_a_png(tmp_path):
    out = tmp_path / "grid.png"
    grid.chart(ROWS, "a machine\n2026-12-03", out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_grid_names_failed_stages_and_keeps_the_others(tmp_path):
    machine = "Machine: Intel(R) Xeon(R) Processor, 2 cores, ISA AVX-512 + AMX, AMX yes, memory read 15.4 GB/s, load average 1.0; x"
    (tmp_path / "smollm2.json").write_text(json.dumps({"machine": machine, "notes": ["page cache: 92 of 93 MiB"],
                                                       "rows": ROWS[:4]}))
    grid.write(tmp_path, {"smollm2": "ok", "8b": "exit status 1 (its error is in the run's output)"},
               {"smollm2": "vs_llama_bench.py -p 512", "8b": "vs_llama_bench.py -m synth:llama-3-8b:q4_k_m"})
    md = (tmp_path / "grid.md").read_text().splitlines()
    assert f"- smollm2: {machine}" in md and "- smollm2: page cache: 92 of 93 MiB" in md
    assert "- 8b: `python benchmarks/vs_llama_bench.py -m synth:llama-3-8b:q4_k_m`" in md
    assert md[md.index("Stages without figures:") + 2] == "- 8b: exit status 1 (its error is in the run's output)"
    assert grid.table(ROWS[:4])[2] in md and (tmp_path / "grid.png").is_file()
    assert grid.machine_title(f"- smollm2: {machine}") == \
        "Intel(R) Xeon(R) Processor, 2 cores, ISA AVX-512 + AMX, AMX yes, memory read 15.4 GB/s"


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "nope", "error: --from {d}/nope: no such folder"),
    (lambda d: d, "error: --from {d}: no stage's JSON in it (expected smollm2.json, d4000.json, 1b.json, 8b.json, stories.json)"),
])
def test_from_a_folder_without_results_is_one_line(tmp_path, make, expected):
    p = subprocess.run([sys.executable, str(_PATH), "--from", str(make(tmp_path))], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip() == expected.format(d=tmp_path) and not p.stdout


def test_no_bandwidth_after_a_depth():
    """At depth a token reads the KV cache as well as the weights: the file's bytes × tok/s would understate it."""
    r = _row("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", 1, "tg", "tg64 @ d4000", 44.1, 24.6, size=98_000_000)
    assert grid.cell_text(r) == "44.1 / 24.6 (**1.79×**)"
