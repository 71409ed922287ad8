"""The bench lab's plumbing: statistics by hand, a fake backend through real worker processes
(alternation, ratios, JSON fields), and failure handling (missing, crashing, timing out)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from llamalab.lab.backends import ExternalSpec
from llamalab.lab.matrix import Backend, Cap, PreparedModel, parse_backends, parse_caps, parse_ints
from llamalab.lab.models import ModelInfo
from llamalab.lab.stats import percentile, ratio, summarize
from llamalab.lab.sweep import ROW_FIELDS, run_bench
from llamalab.lab.workload import TokenSource, essay_text, token_source
from llamalab.errors import InvalidArgumentError

# ---------------------------------------------------------------------------------------------- statistics


def test_summarize_by_hand():
    s = summarize([10, 20, 30, 40])
    assert s.n == 4 and s.mean == 25 and s.median == 25 and s.min == 10 and s.max == 40
    assert s.stddev == pytest.approx(math.sqrt((15**2 + 5**2 + 5**2 + 15**2) / 3))  # sample stddev, n - 1
    assert s.p90 == pytest.approx(37.0)  # 30 + 0.7 * (40 - 30)
    one = summarize([7.5])
    assert (one.mean, one.stddev, one.median, one.p90) == (7.5, 0.0, 7.5, 7.5)
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize("seed", range(5))
def test_percentile_matches_numpy(seed):
    xs = np.random.default_rng(seed).exponential(size=seed * 7 + 1).tolist()
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))


def test_ratio():
    assert ratio(30.0, 20.0) == 1.5
    assert ratio(None, 20.0) is None and ratio(3.0, None) is None and ratio(3.0, 0.0) is None


# ---------------------------------------------------------------------------------------------- parsing


def test_parse_lists_caps_and_backends():
    assert parse_ints(["1,2", "4"], "threads") == [1, 2, 4]
    with pytest.raises(InvalidArgumentError, match="threads"):
        parse_ints(["0"], "threads")
    assert parse_caps(["reference=512/16", "transformers=/64"]) == {"reference": Cap(512, 16), "transformers": Cap(None, 64)}
    assert parse_caps(["none"]) == {}
    with pytest.raises(InvalidArgumentError, match="--cap"):
        parse_caps(["reference=16"])
    bs = parse_backends(["fast,numpy", "llama-cpp"], caps={"reference": Cap(None, 8)})
    assert [b.name for b in bs] == ["llamalab", "reference", "llama.cpp"]
    assert bs[1].cap == Cap(None, 8) and bs[0].cap is None
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        parse_backends(["vllm"])
    with pytest.raises(InvalidArgumentError, match="not in the run"):
        parse_backends(["llamalab"], caps={"reference": Cap(1, 1)})


def test_external_spec_parsing(tmp_path):
    s = ExternalSpec.parse("name=run.c;cmd=./run {model_llama2c} -n {steps} -i \"{prompt}\";regex=achieved tok/s: ([0-9.]+)")
    assert s.name == "run.c" and s.regex == "achieved tok/s: ([0-9.]+)"
    assert s.placeholders() == {"model_llama2c", "steps", "prompt"}
    f = tmp_path / "ext.json"
    f.write_text(json.dumps({"name": "x", "cmd": "echo {n_gen}", "regex": "(\\d+)", "prompt_regex": "p=(\\d+)"}))
    assert ExternalSpec.parse(str(f)).prompt_regex == "p=(\\d+)"
    with pytest.raises(InvalidArgumentError, match="missing"):
        ExternalSpec.parse("name=x;cmd=echo")
    with pytest.raises(InvalidArgumentError, match="capture group"):
        ExternalSpec.parse("name=x;cmd=echo;regex=tok/s")
    bs = parse_backends(["llamalab", "external:x"], externals=["name=x;cmd=echo 1;regex=(\\d)"])
    assert bs[1].options["external"]["cmd"] == "echo 1"
    with pytest.raises(InvalidArgumentError, match="no --external"):
        parse_backends(["external:y"])


def test_token_source_takes_consecutive_ids_with_bos_and_cycles():
    src = TokenSource(list(range(10, 20)), bos=1, kind="text")
    prompt, gen = src.take(4, 3)
    assert prompt == [1, 10, 11, 12] and gen == [13, 14, 15]
    prompt, gen = src.take(8, 6)  # needs 13 ids from a stream of 10: cycled, with a note
    assert prompt == [1, 10, 11, 12, 13, 14, 15, 16] and gen == [17, 18, 19, 10, 11, 12]
    assert src.notes and "repeated" in src.notes[0]
    rnd = token_source(None, vocab_size=50)
    assert rnd.kind == "random" and all(0 <= i < 50 for i in rnd.ids) and rnd.ids == token_source(None, 50).ids


def test_essay_is_long_enough_for_the_very_long_prompt(shared_data):
    """The shipped text gives >= 4,125 tokens (4,000 prompt + 125 generated) with the Llama 2 tokenizer."""
    from llamalab.formats.llama2c import load_llama2c_tokenizer
    from llamalab.text.tokenizer import Tokenizer

    tok = Tokenizer.from_spec(load_llama2c_tokenizer(shared_data / "llama2c-tokenizer.bin"))
    assert len(tok.encode(essay_text(), add_bos=False)) >= 4125


# ---------------------------------------------------------------------------------------------- fake backend


def fake_model(tmp_path) -> PreparedModel:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF fake")  # never opened: the fake runtime does no work
    info = ModelInfo(spec=str(path), path=str(path), filename=path.name, format="gguf", size=9, n_params=1000,
                     type="llama 1K F32", context_length=4096, config={})
    return PreparedModel(info, token_source(None, vocab_size=100))


def fake(name="fake", **opts) -> Backend:
    return Backend(name, options={"fake": opts})


def test_fake_backend_rows_statistics_and_json_fields(tmp_path):
    m = fake_model(tmp_path)
    b = fake(prefill_s=[0.5, 0.25, 0.2], step_s=[0.01, 0.02, 0.04])
    rows = run_bench([m], [b], [1], n_prompt=[10], n_gen=[5], repeats=3)
    pp, tg = rows
    assert (pp["test"], pp["n_prompt"], pp["n_gen"], tg["test"], tg["n_prompt"], tg["n_gen"]) == ("pp10", 10, 0, "tg5", 0, 5)
    # the fake cycles its timings per run: run 0 is the warm-up (not recorded), then pp, tg, pp, tg, pp, tg
    assert pp["samples_ts"] == pytest.approx([10 / 0.25, 10 / 0.5, 10 / 0.2])  # runs 1, 3, 5
    assert tg["samples_ts"] == pytest.approx([5 / (5 * 0.04), 5 / (5 * 0.02), 5 / (5 * 0.01)])  # runs 2, 4, 6
    assert pp["avg_ts"] == pytest.approx((40 + 20 + 50) / 3)
    assert pp["stddev_ts"] == pytest.approx(np.std([40, 20, 50], ddof=1))
    assert tg["median_ts"] == pytest.approx(50.0) and tg["min_ts"] == pytest.approx(25.0)
    assert pp["samples_ns"] == [250_000_000, 500_000_000, 200_000_000]
    for r in rows:
        assert set(ROW_FIELDS) <= set(r)
        assert r["status"] == "ok" and r["backend"] == "fake" and r["n_threads"] == 1
        assert r["model_filename"] == "fake.gguf" and r["model_n_params"] == 1000 and r["model_size"] == 9
        assert r["peak_rss_bytes"] > 1 << 20  # a Python process holds more than 1 MiB
    json.dumps(rows)  # JSON-able as they are


def test_backends_alternate_within_each_round(tmp_path):
    seen = []
    m = fake_model(tmp_path)

    class Bar:
        def __init__(self, total):
            self.total = total

        def __enter__(self):
            return lambda n, what: seen.append(what) if what.startswith("fake") else None

        def __exit__(self, *a):
            return False

    run_bench([m], [fake("fake:a"), fake("fake:b")], [1], [4], [2], repeats=2, bar=Bar)
    assert seen == ["fake:a t=1 pp4 (repeat 1/2)", "fake:b t=1 pp4 (repeat 1/2)",
                    "fake:a t=1 tg2 (repeat 1/2)", "fake:b t=1 tg2 (repeat 1/2)",
                    "fake:a t=1 pp4 (repeat 2/2)", "fake:b t=1 pp4 (repeat 2/2)",
                    "fake:a t=1 tg2 (repeat 2/2)", "fake:b t=1 tg2 (repeat 2/2)"]


def test_ratios_against_the_baseline_and_caps(tmp_path):
    m = fake_model(tmp_path)
    fast = fake("fake:fast", prefill_s=[0.1], step_s=[0.01])
    slow = fake("fake:slow", prefill_s=[0.4], step_s=[0.05])
    slow.cap = Cap(None, 2)
    rows = run_bench([m], [fast, slow], [1], [8], [6], repeats=2, baseline="fake:slow")
    by = {(r["backend"], r["kind"]): r for r in rows}
    assert by["fake:fast", "pp"]["vs_baseline"] == pytest.approx(4.0)
    assert by["fake:fast", "tg"]["vs_baseline"] == pytest.approx(5.0)
    assert by["fake:slow", "tg"]["vs_baseline"] == pytest.approx(1.0)
    capped = by["fake:slow", "tg"]
    assert capped["test"] == "tg2" and capped["n_gen"] == 2 and capped["capped_from"] == "tg6"
    assert not by["fake:slow", "pp"]["capped"]  # 8 prompt tokens are within the cap


# ---------------------------------------------------------------------------------------------- failures


def test_missing_backend_is_skipped_and_the_others_run(tmp_path):
    rows = run_bench([fake_model(tmp_path)], [fake("fake:gone", crash="import"), fake("fake:ok")], [1], [4], [2],
                     repeats=2)
    gone = [r for r in rows if r["backend"] == "fake:gone"]
    ok = [r for r in rows if r["backend"] == "fake:ok"]
    assert {r["status"] for r in gone} == {"skipped"} and "missing" in gone[0]["reason"]
    assert all(r["status"] == "ok" and len(r["samples_ts"]) == 2 for r in ok)


def test_real_missing_runtime_is_skipped(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.skip("llama-cpp-python is installed here")
    m = fake_model(tmp_path)
    rows = run_bench([m], [Backend("llama.cpp")], [1], [4], [0], repeats=1)
    assert rows[0]["status"] == "skipped" and "llama-cpp-python is not installed" in rows[0]["reason"]


def test_crashing_backend_is_failed_restarted_once_and_the_run_goes_on(tmp_path):
    rows = run_bench([fake_model(tmp_path)], [fake("fake:crash", crash="run", crash_after=1), fake("fake:ok")], [1],
                     [4], [2], repeats=2)
    crash = {r["test"]: r for r in rows if r["backend"] == "fake:crash"}
    # run 0 is the warm-up, run 1 (first pp4) crashes: pp4 failed; the restart crashes again at its first timed run
    assert crash["pp4"]["status"] == "failed" and "crashed (killed by SIGABRT)" in crash["pp4"]["reason"]
    assert crash["tg2"]["status"] == "failed" and "crashed" in crash["tg2"]["reason"]
    assert all(r["status"] == "ok" and len(r["samples_ts"]) == 2 for r in rows if r["backend"] == "fake:ok")


def test_crash_at_load_and_exception_in_run(tmp_path):
    rows = run_bench([fake_model(tmp_path)], [fake("fake:load", crash="load"), fake("fake:raise", crash="raise")],
                     [1], [4], [0], repeats=1)
    load, exc = rows
    assert load["status"] == "failed" and load["reason"].startswith("load crashed (killed by SIGABRT)")
    assert exc["status"] == "failed" and "RuntimeError: fake runtime told to fail" in exc["reason"]


def test_timeout_is_failed_quickly(tmp_path):
    import time

    t = time.perf_counter()
    rows = run_bench([fake_model(tmp_path)], [fake("fake:slow", sleep_s=30)], [1], [4], [0], repeats=3, run_timeout=1)
    assert rows[0]["status"] == "failed" and "timed out after 1 s" in rows[0]["reason"]
    assert time.perf_counter() - t < 20  # never waited for the 30 s sleeps


def test_external_runtime_reads_tokens_per_second_and_its_memory(tmp_path):
    script = tmp_path / "fake_run.py"
    script.write_text("import sys\nx = bytearray(64 << 20)\nprint('steps', sys.argv[1]); print('achieved tok/s: 123.5')\n")
    good = f"name=py;cmd={sys.executable} {script} {{steps}};regex=achieved tok/s: ([0-9.]+)"
    bad = f"name=bad;cmd={sys.executable} -c \"raise SystemExit(3)\";regex=(x)"
    backends = parse_backends(["external:py", "external:bad"], externals=[good, bad])
    rows = run_bench([fake_model(tmp_path)], backends, [1], [], [4], repeats=2)
    py, badrow = rows
    assert py["status"] == "ok" and py["samples_ts"] == [123.5, 123.5]
    assert py["peak_rss_bytes"] >= 64 << 20  # the external program's own peak, from wait4
    assert badrow["status"] == "failed" and "exited with status 3" in badrow["reason"]


def test_external_program_that_does_not_exist_is_skipped(tmp_path):
    backends = parse_backends(["external:nope"], externals=["name=nope;cmd=./no-such-run {model};regex=(\\d+)"])
    rows = run_bench([fake_model(tmp_path)], backends, [1], [4], [0], repeats=1)
    assert rows[0]["status"] == "skipped" and "no such program" in rows[0]["reason"]


def test_progress_reaches_its_total_when_backends_fail(tmp_path):
    done, totals = [], []

    class Bar:
        def __init__(self, total):
            totals.append(total)

        def __enter__(self):
            return lambda n, what: done.append(n)

        def __exit__(self, *a):
            return False

    backends = [fake("fake:gone", crash="import"), fake("fake:late", crash="run", crash_after=2), fake("fake:ok")]
    run_bench([fake_model(tmp_path)], backends, [1], [4], [2], repeats=3, bar=Bar)
    assert totals == [3 * 2 * 3] and sum(done) == totals[0]


def test_peak_rss_is_the_runs_high_water_mark_when_windowed():
    """The table's peak RSS is measured while the tests run; the load's peak (compilation, LLVM
    code that is then released) counts only where the worker could not reset the mark per run."""
    from llamalab.lab.runner import Cell
    from llamalab.lab.sweep import _run_peak

    def cell(windowed: bool) -> Cell:
        runs = [{"peak_rss": 200 << 20, "peak_rss_per_run": windowed}, {"peak_rss": 210 << 20, "peak_rss_per_run": windowed}]
        return Cell(model="m", backend="llamalab", threads=1, test="tg8", n_prompt=0, n_gen=8, samples=runs,
                    load_peak_rss=300 << 20)

    assert _run_peak(cell(True)) == 210 << 20
    assert _run_peak(cell(False)) == 300 << 20
    external = Cell(model="m", backend="external:x", threads=1, test="tg8", n_prompt=0, n_gen=8,
                    samples=[{"child_peak_rss": 64 << 20, "peak_rss": 9 << 20}], load_peak_rss=30 << 20)
    assert _run_peak(external) == 64 << 20
