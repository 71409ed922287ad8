"""`llamalab synth`: llama2.c checkpoints round-trip through the llama2.c loader, and the GGUF
twin (same seed, F32) computes the same logits; synthesized GGUFs carry a usable tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from llamalab.cli import main
from llamalab.formats.gguf import load_gguf
from llamalab.formats.llama2c import load_llama2c
from llamalab.runtime.model import Llama
from llamalab.lab.synth import PRESETS, random_weights


def test_llama2c_round_trip_and_gguf_twin_give_the_same_logits(tmp_path, capsys):
    bin_path, gguf_path = tmp_path / "tiny.bin", tmp_path / "tiny.gguf"
    assert main(["synth", "tiny", "--format", "llama2c", "-o", str(bin_path), "--seed", "3"]) == 0
    assert main(["synth", "tiny", "--dtype", "f32", "-o", str(gguf_path), "--seed", "3"]) == 0
    assert capsys.readouterr().out.split() == [str(bin_path), str(gguf_path)]

    l2c = load_llama2c(bin_path)
    want = PRESETS["tiny"]
    got = l2c.config
    assert (got.dim, got.n_layers, got.n_heads, got.n_kv_heads, got.ffn_dim, got.vocab_size, got.context_length) == (
        want.dim, want.n_layers, want.n_heads, want.n_kv_heads, want.ffn_dim, want.vocab_size, want.context_length)
    w = random_weights(want, seed=3)
    for name in ("token_embd.weight", "blk.1.attn_k.weight", "blk.0.ffn_down.weight", "output_norm.weight"):
        np.testing.assert_array_equal(l2c.weights[name].dequantize().reshape(w[name].shape), w[name])

    tokens = np.array([1, 17, 99, 5, 300, 42])
    a, b = Llama(l2c, "reference"), Llama(load_gguf(gguf_path), "reference")
    la = a.forward(tokens, a.new_cache(16), all_logits=True)
    lb = b.forward(tokens, b.new_cache(16), all_logits=True)
    np.testing.assert_allclose(la, lb, rtol=0, atol=1e-5)


def test_synth_gguf_has_a_tokenizer_padded_to_the_vocabulary(tmp_path):
    from llamalab.lab.models import padded_tokenizer
    from llamalab.lab.workload import essay_text
    from llamalab.text.tokenizer import Tokenizer

    spec = padded_tokenizer(32000, "llama")
    assert len(spec.tokens) == 32000 and len(spec.scores) == 32000 and len(set(spec.tokens)) == 32000
    path = tmp_path / "s.gguf"
    cfg_tiny = PRESETS["tiny"]
    assert main(["synth", "tiny", "-o", str(path), "--ctx", "512"]) == 0
    loaded = load_gguf(path)
    assert loaded.config.context_length == 512 and loaded.config.vocab_size == cfg_tiny.vocab_size
    ids = Tokenizer.from_spec(loaded.tokenizer).encode(essay_text()[:500])
    assert len(ids) > 50 and max(ids) < cfg_tiny.vocab_size


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["synth", "stories1B", "-o", str(tmp_path / "x.gguf")]) == 1
    assert "unknown synth preset 'stories1B'" in capsys.readouterr().err
    assert main(["synth", "tiny", "--format", "llama2c", "--dtype", "q8_0", "-o", str(tmp_path / "x.bin")]) == 1
    assert "float32 only" in capsys.readouterr().err
    assert main(["synth", "tiny", "--dtype", "q9_9", "-o", str(tmp_path / "x.gguf")]) == 1
    assert "unknown dtype 'q9_9'" in capsys.readouterr().err
    assert main(["synth", "tiny", "--format", "safetensors"]) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", ["q4_0", "f16"])
def test_synth_spec_in_the_cache_is_written_once(tmp_path, monkeypatch, dtype):
    from llamalab.lab.models import synthesize

    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path))
    p = synthesize("tiny", dtype, min_ctx=300)
    assert p.name == f"tiny-{dtype}-ctx300-s0.gguf" and p.parent == tmp_path / "synth"
    mtime = p.stat().st_mtime_ns
    assert synthesize("tiny", dtype, min_ctx=300) == p and p.stat().st_mtime_ns == mtime
    assert load_gguf(p).weights["blk.0.attn_q.weight"].qtype.name == dtype.upper()
