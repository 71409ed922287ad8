"""A study split by hand (--shard I/N) and merged (study merge), the machine probe, and the
bench's achieved-bandwidth column — all on fake runtimes that report given timings."""

from __future__ import annotations

import json

import pytest

from llamalab.cli import main
from llamalab.errors import InvalidArgumentError
from llamalab.lab.machine import isa_level, probe
from llamalab.lab.matrix import Backend, prepare_models
from llamalab.lab.shards import merge_results, parse_shard, take_shard
from llamalab.lab.study import make_study
from llamalab.lab.sweep import run_bench


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake(name, step) -> Backend:
    return Backend(name, options={"fake": {"prefill_s": [0.01], "step_s": [step]}})


def test_parse_and_take_shard():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(InvalidArgumentError, match="expected I/N"):
            parse_shard(bad)
    plans, skips = list("abcde"), ["s"]
    assert take_shard(plans, skips, 0, 2) == (["a", "c", "e"], ["s"])
    assert take_shard(plans, skips, 1, 2) == (["b", "d"], [])


def test_shards_merge_into_one_report_with_a_section_per_machine(home, tmp_path):
    models, _ = prepare_models(["synth:tiny"])
    backends = [fake("fake:a", 0.01), fake("fake:b", 0.02)]
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}"
        make_study(models, backends, [1], {"short": 4}, n_gen=3, repeats=1, out=out, baseline="none", charts=False,
                   progress=False, shard=(i, 2))
        outs.append(out)
    parts = [json.loads((o / "results.json").read_text()) for o in outs]
    assert [[c["backend"] for c in p["cells"]] for p in parts] == [["fake:a"], ["fake:b"]]
    assert parts[1]["meta"]["shard"] == [1, 2]

    merged_out = tmp_path / "merged"
    assert main(["study", "merge", str(outs[0]), str(outs[1]), "-o", str(merged_out), "--no-charts"]) == 0
    merged = json.loads((merged_out / "results.json").read_text())
    assert sorted(c["backend"] for c in merged["cells"]) == ["fake:a", "fake:b"]  # one machine: no labels
    gen = {c["backend"]: c["metrics"]["gen_tps"]["median"] for c in merged["cells"]}
    assert gen == {"fake:a": pytest.approx(100), "fake:b": pytest.approx(50)}

    parts[1]["machine"] = dict(parts[1]["machine"], hostname="node-b")  # as if run on another machine
    m = merge_results(parts)
    assert len(m["machines"]) == 2 and {c["backend"] for c in m["cells"]} == {
        f"fake:a @ {parts[0]['machine']['hostname']}", "fake:b @ node-b"}
    from llamalab.lab.report import study_markdown

    text = study_markdown({**m, "charts": []})
    assert "## Machine: node-b" in text and "Merged from 2 result folders" in text
    assert main(["study", "merge", str(tmp_path / "nowhere"), "-o", str(merged_out)]) == 1
    assert main(["study", "merged", str(outs[0])]) == 1


def test_probe_and_isa():
    p = probe(seconds=0.05)
    assert p["read_gbs"] > 0.1 and p["peak_gflops"] > 0.1 and isinstance(p["amx"], bool)
    assert isa_level(["avx2", "avx512f", "amx_tile"]) == "AVX-512 + AMX"
    assert isa_level(["sse4_2", "avx", "avx2"]) == "AVX2"
    assert isa_level(["asimd"]) == "NEON/ASIMD" and isa_level([]) == "scalar"


def test_bench_rows_carry_bandwidth_and_gflops(home):
    models, _ = prepare_models(["synth:tiny"])
    rows = run_bench(models, [fake("fake:x", 0.01)], [1], [8], [4], 1)
    tg = next(r for r in rows if r["test"] == "tg4")
    pp = next(r for r in rows if r["test"] == "pp8")
    size, n = models[0].info.size, models[0].info.n_params
    assert tg["bandwidth_gbs"] == pytest.approx(size * 100 / 1e9) and tg["gflops"] == pytest.approx(2 * n * 100 / 1e9)
    assert pp["bandwidth_gbs"] is None and pp["gflops"] == pytest.approx(2 * n * 800 / 1e9)


def test_study_preset_errors(home):
    assert main(["study", "--preset", "nope"]) == 1
