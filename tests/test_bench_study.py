"""The study end to end on a tiny synthesized model (real reference backend in worker processes,
plus fake backends that crash or are missing), and the bench CLI's JSON on real backends."""

from __future__ import annotations

import csv
import io
import json

import pytest

from llamalab.lab.matrix import Backend, prepare_models
from llamalab.lab.study import make_study
from llamalab.lab.sweep import ROW_FIELDS
from llamalab.cli import main


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A private llamalab home, so synthesized models land in tmp_path."""
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake(name, **opts) -> Backend:
    return Backend(name, options={"fake": opts})


def test_study_writes_results_report_and_charts(home, tmp_path):
    models, problems = prepare_models(["synth:tiny"], min_ctx=0)  # tiny's context stays 128
    assert not problems and (home / "synth").is_dir()
    backends = [Backend("reference"), fake("fake:crash", crash="run"), fake("fake:gone", crash="import")]
    prompts = {"short": 5, "long": 40, "huge": 200}
    out = tmp_path / "study"
    result = make_study(models, backends, [1], prompts, n_gen=6, repeats=2, out=out, baseline="reference",
                        progress=False)

    cells = {(c["backend"], c["prompt"]): c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert len(cells) == 9
    for p, n in (("short", 5), ("long", 40)):
        c = cells["reference", p]
        assert c["status"] == "ok" and c["repeats"] == 2 and (c["n_prompt"], c["n_gen"]) == (n, 6)
        for run in c["runs"]:  # the metrics of one inference agree with each other
            assert run["prompt_tps"] * run["ttft_ms"] / 1e3 == pytest.approx(n)
            assert run["tpot_mean_ms"] == pytest.approx(1e3 / run["gen_tps"])
            assert run["tpot_median_ms"] <= run["tpot_p90_ms"] * (1 + 1e-9)
            assert run["wall_s"] * 1e3 >= run["ttft_ms"] + 6 * run["tpot_mean_ms"] * (1 - 1e-6)
            assert run["peak_rss_mib"] > 10
        m = c["metrics"]["gen_tps"]
        assert m["min"] <= m["median"] <= m["max"]
    huge = cells["reference", "huge"]
    assert huge["status"] == "skipped" and "exceed the model's context length 128" in huge["reason"]
    assert cells["fake:crash", "short"]["status"] == "failed"
    assert "crashed (killed by SIGABRT)" in cells["fake:crash", "short"]["reason"]
    assert cells["fake:gone", "long"]["status"] == "skipped"
    status = {b["backend"]: b["status"] for b in result["backends"]}
    assert status == {"reference": "ok", "fake:crash": "failed", "fake:gone": "skipped"}

    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert len(rows) == 9 and {"gen_tps_median", "ttft_ms_min", "peak_rss_mib_max", "status"} <= set(rows[0])

    report = (out / "report.md").read_text()
    for text in ("## Machine", "CPU:", "throughput depends only on shapes", "## Generation speed", "## Every cell",
                 "**failed**", "**skipped**", "tokens_per_s.png", "memory.png"):
        assert text in report
    for name, _ in result["charts"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {n for n, _ in result["charts"]} >= {"tokens_per_s.png", "prefill_vs_decode.png", "memory.png"}


def test_bench_cli_json_on_real_backends(home, tmp_path, capsys):
    """Default-shaped run, scaled down: llamalab (fast) and reference on a tiny model, 2 repeats."""
    rc = main(["bench", "-m", "synth:tiny", "-p", "16", "-n", "8", "-t", "1", "-r", "2", "-o", "json",
               "--backend", "llamalab,reference", "--baseline", "reference", "--no-progress"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["test"]) for r in rows] == [("llamalab", "pp16"), ("llamalab", "tg8"),
                                                         ("reference", "pp16"), ("reference", "tg8")]
    for r in rows:
        assert list(r)[: len(ROW_FIELDS)] == list(ROW_FIELDS)
        assert r["status"] == "ok", r["reason"]
        assert r["model_filename"].startswith("tiny-q8_0") and r["model_n_params"] > 0 and r["model_size"] > 0
        assert len(r["samples_ts"]) == 2 and all(t > 0 for t in r["samples_ts"])
        assert r["avg_ts"] == pytest.approx(sum(r["samples_ts"]) / 2)
        assert r["peak_rss_bytes"] > 1 << 20 and r["n_threads"] == 1
    assert all(r["vs_baseline"] == pytest.approx(1.0) for r in rows if r["backend"] == "reference")


def test_bench_cli_markdown_and_bad_options(home, capsys):
    rc = main(["bench", "-m", "synth:tiny", "-p", "8", "-n", "0", "-t", "1", "-r", "1", "--backend", "reference",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "| model | size | params | backend | threads | test |" in out and "pp8" in out
    assert main(["bench", "-o", "xml"]) == 1
    assert "-o/--output must be one of md, csv, json, jsonl" in capsys.readouterr().err
    assert main(["bench", "--backend", "vllm"]) == 1
    assert "unknown backend 'vllm'" in capsys.readouterr().err
    assert main(["bench", "--cap", "reference"]) == 1
    assert "--cap" in capsys.readouterr().err
