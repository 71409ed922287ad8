"""`llamalab convert` on tiny random Hugging Face models (tests/data/convert/, made with transformers by
scripts/make_convert_fixtures.py): llama.cpp's tensor names and keys, llamalab's and llama.cpp's logits
equal to transformers', the tokenizer's ids equal to the HF tokenizer's, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from llamalab.cli import main
from llamalab.convert.hf import _permute, convert_hf
from llamalab.convert.quantize import quantize_file
from llamalab.convert.safetensors_io import Checkpoint
from llamalab.convert.tokenizer import detect_pre, known_pre_tokenizers, probe_hash
from llamalab.errors import InvalidArgumentError, UnsupportedModelError

DATA = Path(__file__).parent / "data" / "convert"
ARCHS = ["llama", "qwen2", "qwen3", "gemma3", "phi3"]
BPE = {"llama", "qwen2", "qwen3"}  # trained byte-level BPE (GPT-2 regex); gemma3/phi3 use SentencePiece


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = {}
    d = tmp_path_factory.mktemp("convert")
    for arch in ARCHS:
        out[arch] = convert_hf(DATA / arch, d / f"{arch}.gguf", "f32", pre="gpt-2" if arch in BPE else None,
                               progress=False).path
    return out


def _fields(path: Path) -> dict:
    return {k: f.contents() for k, f in GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


def _tokens(arch: str) -> dict:
    return json.loads((DATA / arch / "tokens.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_names_and_keys_are_llama_cpps(converted, arch):
    r = GGUFReader(converted[arch])
    names = {t.name for t in r.tensors}
    meta = _fields(converted[arch])
    assert meta["general.architecture"] == arch
    assert meta[f"{arch}.block_count"] == 2 and meta[f"{arch}.embedding_length"] == 64
    assert meta[f"{arch}.attention.head_count"] == 4 and meta[f"{arch}.attention.head_count_kv"] == 2
    assert meta["general.file_type"] == 0  # ALL_F32
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_norm.weight", "blk.1.ffn_down.weight",
            "blk.1.attn_output.weight"} <= names
    if arch == "phi3":  # fused projections, as llama.cpp keeps them
        assert {"blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"} <= names and "blk.0.ffn_gate.weight" not in names
        assert meta["phi3.rope.dimension_count"] == 16 and meta["phi3.rope.scaling.original_context_length"] == 128
    else:
        assert {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.ffn_gate.weight"} <= names
    assert ("output.weight" in names) == (arch in ("llama", "phi3"))  # the others tie embeddings
    if arch == "qwen2":
        assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= names
    if arch in ("qwen3", "gemma3"):
        assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= names
        assert meta[f"{arch}.attention.key_length"] == 16
    if arch == "gemma3":
        assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= names
        assert meta["gemma3.rope.freq_base"] == 1e6 and meta["gemma3.rope.freq_base_swa"] == 1e4
        assert meta["gemma3.attention.sliding_window"] == 16
        assert meta["tokenizer.ggml.add_space_prefix"] is False
    if arch in BPE:
        assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
        assert len(meta["tokenizer.ggml.merges"]) > 0
    else:
        assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.pre"] == "default"
        assert len(meta["tokenizer.ggml.scores"]) == len(meta["tokenizer.ggml.tokens"])
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.eos_token_id"] == 2
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    for t in r.tensors:
        assert T(t.tensor_type) == T.F32


def test_llama_q_k_rows_are_permuted(converted):
    """HF's rotate-half layout -> GGML's interleaved pairs, exactly as convert_hf_to_gguf.py's permute."""
    ckpt = Checkpoint(DATA / "llama")
    ts = {t.name: np.asarray(t.data) for t in GGUFReader(converted["llama"]).tensors}
    q = ckpt.get("model.layers.0.self_attn.q_proj.weight").astype(np.float32)  # (64, 64)
    k = ckpt.get("model.layers.0.self_attn.k_proj.weight").astype(np.float32)  # (32, 64)
    assert np.array_equal(ts["blk.0.attn_q.weight"], _permute(q, 4))
    assert np.array_equal(ts["blk.0.attn_k.weight"], _permute(k, 2))
    assert not np.array_equal(ts["blk.0.attn_q.weight"], q)
    # head 0's rows: HF keeps the two rotated halves apart (0..7, 8..15); GGML interleaves them
    assert np.array_equal(ts["blk.0.attn_q.weight"][1], q[8])


def test_gemma3_norms_are_one_plus_w(converted):
    ckpt = Checkpoint(DATA / "gemma3")
    ts = {t.name: np.asarray(t.data) for t in GGUFReader(converted["gemma3"]).tensors}
    w = ckpt.get("model.layers.0.input_layernorm.weight").astype(np.float32)
    assert np.array_equal(ts["blk.0.attn_norm.weight"], w + 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_llamalab_logits_match_transformers(converted, arch):
    from llamalab import LLM

    try:
        llm = LLM(converted[arch], backend="reference", kv_type="f32", progress=False)  # exact: f32 cache
    except UnsupportedModelError as e:
        pytest.skip(f"architecture {arch} not supported by the loader yet ({e})")
    ref = np.load(DATA / arch / "logits.npy")
    got = llm.logits(_tokens(arch)["ids"])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)  # float32 vs torch float32 (llama: 2.4e-7); logits are ~1


@pytest.mark.parametrize("arch", ARCHS)
def test_llamalab_tokenizer_matches_hf(converted, arch):
    from llamalab.formats import load
    from llamalab.text.tokenizer import Tokenizer

    try:
        loaded = load(converted[arch])
    except UnsupportedModelError as e:
        pytest.skip(f"architecture {arch} not supported by the loader yet ({e})")
    tok = Tokenizer.from_spec(loaded.tokenizer)
    t = _tokens(arch)
    assert tok.encode(t["sample"], add_bos=arch not in BPE) == t["sample_ids"]


@pytest.mark.parametrize("arch", ARCHS)
def test_llama_cpp_logits_match_transformers(converted, arch):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(converted[arch]), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    ids = _tokens(arch)["ids"]
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)], dtype=np.float32)
    np.testing.assert_allclose(got, np.load(DATA / arch / "logits.npy"), atol=1e-3, rtol=0)  # llama.cpp: f16 KV cache


def test_probe_hash_is_transformers(converted):
    """The hash llamalab computes (tokenizers) equals the one llama.cpp's converter computes (AutoTokenizer)."""
    pytest.importorskip("tokenizers")
    for arch in BPE:
        assert probe_hash(DATA / arch / "tokenizer.json") == _tokens(arch)["probe_hash"]
    assert {"llama-bpe", "qwen2", "smollm", "gpt-2"} <= set(known_pre_tokenizers())


def test_unknown_pre_tokenizer_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    h = _tokens("llama")["probe_hash"]
    with pytest.raises(InvalidArgumentError, match=rf"unknown BPE pre-tokenizer \(probe-text hash {h} is not in llama.cpp's table\).*--pre NAME"):
        detect_pre(DATA / "llama" / "tokenizer.json")
    assert main(["convert", str(DATA / "llama"), "-o", str(tmp_path / "x.gguf"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--pre NAME" in err and err.count("\n") == 1
    assert not (tmp_path / "x.gguf").exists() and list(tmp_path.iterdir()) == []
    assert main(["convert", str(DATA / "llama"), "-o", str(tmp_path / "x.gguf"), "--pre", "nonsense"]) == 1
    assert "unknown --pre 'nonsense'" in capsys.readouterr().err


def test_convert_straight_to_a_mix_equals_convert_then_quantize(tmp_path, converted):
    one = convert_hf(DATA / "llama", tmp_path / "q.gguf", "q4_k_m", pre="gpt-2", progress=False).path
    two = quantize_file(converted["llama"], tmp_path / "q2.gguf", "Q4_K_M", progress=False).path
    a, b = GGUFReader(one).tensors, GGUFReader(two).tensors
    assert [t.name for t in a] == [t.name for t in b]
    for x, y in zip(a, b):
        assert x.tensor_type == y.tensor_type and np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)), x.name


def test_cli_convert(tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["convert", str(DATA / "qwen3"), "-o", str(out), "--pre", "gpt-2", "--outtype", "f16", "--no-progress"]) == 0
    assert "qwen3, " in capsys.readouterr().out
    types = {t.name: T(t.tensor_type) for t in GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == T.F16 and types["blk.0.attn_norm.weight"] == T.F32
    assert main(["convert", "--list-pre"]) == 0 and "llama-bpe" in capsys.readouterr().out.split()


def test_bad_inputs(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err
    bad = tmp_path / "m"
    shutil.copytree(DATA / "qwen2", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    assert main(["convert", str(bad), "-o", str(tmp_path / "o.gguf")]) == 1
    assert "architecture ['MambaForCausalLM'] is not supported by llamalab convert (supported: LlamaForCausalLM" in capsys.readouterr().err
    shutil.copytree(DATA / "qwen2", tmp_path / "m2")
    (tmp_path / "m2" / "model.safetensors").write_bytes(b"\xff" * 16)
    assert main(["convert", str(tmp_path / "m2"), "-o", str(tmp_path / "o.gguf"), "--pre", "gpt-2"]) == 1
    assert "not a safetensors file" in capsys.readouterr().err
    assert main(["convert", str(DATA / "qwen2"), "--outtype", "q7"]) == 1
    assert "unknown quantization type 'q7'" in capsys.readouterr().err


def test_known_hash_is_detected_without_pre(tmp_path, monkeypatch):
    """With its hash in the table (as real models' are), no --pre is needed and the table's name is written."""
    pytest.importorskip("tokenizers")
    from llamalab.convert import tokenizer as tk

    monkeypatch.setitem(tk._pre_table()["hashes"], _tokens("qwen2")["probe_hash"], "qwen2")
    out = convert_hf(DATA / "qwen2", tmp_path / "q.gguf", "f32", progress=False).path
    assert _fields(out)["tokenizer.ggml.pre"] == "qwen2"
