"""`llamalab profile`: every op is timed in both phases, the parts add up, instrumentation is
removed afterwards, and a float64 activation is caught."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import llamalab.runtime.layer as model_mod
from llamalab.api import LLM
from llamalab.lab.profile import REST, TimedLinear, profile_llm, profile_markdown
from llamalab.cli import main
from llamalab.lab.synth import PRESETS, tiny_spm_tokenizer, write_gguf

N_PROMPT, N_GEN = 24, 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from gguf import GGMLQuantizationType

    path = tmp_path_factory.mktemp("prof") / "tiny.gguf"
    return write_gguf(path, PRESETS["tiny"], GGMLQuantizationType.Q8_0, tokenizer=tiny_spm_tokenizer())


def ops(result, phase):
    return {r["op"]: r for r in result["rows"] if r[f"{phase}_calls"] or r["op"] == REST}


def test_reference_profile_times_every_op_in_both_phases(tiny):
    llm = LLM(tiny, threads=1, n_ctx=64, backend="reference", progress=False)
    original_ops, original_fused = llm.model.ops, model_mod.fused
    res = profile_llm(llm, N_PROMPT, N_GEN)
    layers = PRESETS["tiny"].n_layers
    for phase, steps in (("prefill", 1), ("decode", N_GEN)):
        got = ops(res, phase)
        for op in ("matmul q", "matmul k", "matmul v", "matmul o", "matmul gate", "matmul up", "matmul down"):
            assert got[op][f"{phase}_calls"] == layers * steps, (phase, op)
        assert got["matmul output"][f"{phase}_calls"] == steps
        assert got["attention"][f"{phase}_calls"] == layers * steps
        assert got["rms norm"][f"{phase}_calls"] == (2 * layers + 1) * steps
        assert got["sampling"][f"{phase}_calls"] == steps  # prefill's phase includes the first token's draw
        assert {"rope", "silu", "embedding"} <= set(got)
        parts = sum(r[f"{phase}_ms"] for r in res["rows"])
        assert parts == pytest.approx(res["total_ms"][phase], rel=1e-6)
        assert sum(r[f"{phase}_share"] for r in res["rows"]) == pytest.approx(1.0)
    assert res["n_prompt"] == N_PROMPT and res["n_gen"] == N_GEN
    d = res["dtypes"]
    assert d["weights"] == {"Q8_0": 7 * layers + 1} and d["dense_weight_copies"] == ["float32"]
    assert d["kv_cache"]["k"] == "float16" and d["float64_found_in"] == []  # LLM's default f16 cache
    assert "matmul q" in d["activations"] and d["activations"]["matmul q"] == ["float32 -> float32"]
    # the instrumentation is gone
    assert llm.model.ops is original_ops and model_mod.fused is original_fused
    assert not any(isinstance(getattr(b, a), TimedLinear) for b in llm.model.blocks for a in ("wq", "w_down"))
    assert not isinstance(llm.model.output, TimedLinear) and "embed" not in vars(llm.model)
    assert "no float64 anywhere" in profile_markdown(res)


def test_fast_profile_reports_the_compiled_decode_step_or_fused_groups(tiny):
    llm = LLM(tiny, threads=1, n_ctx=64, backend="fast", progress=False)
    res = profile_llm(llm, N_PROMPT, N_GEN)
    dec = ops(res, "decode")
    if getattr(llm.model, "decoder", None) is not None:
        assert dec["decode step (compiled, all layers)"]["decode_calls"] == N_GEN
        split = profile_llm(llm, N_PROMPT, N_GEN, unfused=True)
        assert llm.model.decoder is not None  # restored
        dec = ops(split, "decode")
    matmuls = sum(r["decode_calls"] for op, r in dec.items() if op.startswith("matmul"))
    assert matmuls >= 3 * PRESETS["tiny"].n_layers * N_GEN  # q/k/v (maybe fused), o, ffn ...
    assert "attention" in dec and dec["attention"]["decode_calls"] == PRESETS["tiny"].n_layers * N_GEN


def test_a_float64_activation_is_flagged(tiny, monkeypatch):
    llm = LLM(tiny, threads=1, n_ctx=64, backend="reference", progress=False)
    real = llm.model.ops.glu
    monkeypatch.setattr(llm.model, "ops", replace(llm.model.ops, glu=lambda g, u, a: real(g, u, a).astype(np.float64)))
    res = profile_llm(llm, 8, 2)
    assert "activations of silu" in res["dtypes"]["float64_found_in"]
    assert "WARNING: float64 found in" in profile_markdown(res)


def test_profile_cli_json_and_chart(tiny, tmp_path, capsys):
    chart = tmp_path / "p.png"
    assert main(["profile", str(tiny), "--backend", "reference", "-t", "1", "-p", "16", "-n", "3", "--json",
                 "--chart", str(chart)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["backend"] == "reference" and res["rows"][-1]["op"] == REST
    assert chart.read_bytes()[:4] == b"\x89PNG"
