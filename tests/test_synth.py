"""Synthetic GGUF writer: llama.cpp's names, shapes, types and metadata, read back by gguf-py and our loader."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from llamalab import quants
from llamalab.lab import synth
from llamalab.runtime.config import ModelConfig
from llamalab.errors import InvalidArgumentError
from llamalab.formats.gguf import load_gguf
from llamalab.lab.synth import PRESETS, random_weights, tiny_bpe_tokenizer, tiny_spm_tokenizer, write_gguf
from llamalab.text.tokenizer import Tokenizer
from llamalab.text.tokenizer.spec import BYTE, CONTROL, NORMAL, UNKNOWN

ALL = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
TINY256 = PRESETS["tiny256"]

LAYER_TENSORS = {  # suffix -> numpy shape for TINY256 (dim 256, kv_dim 128, ffn 512)
    "attn_norm": (256,), "attn_q": (256, 256), "attn_k": (128, 256), "attn_v": (128, 256),
    "attn_output": (256, 256), "ffn_norm": (256,), "ffn_gate": (512, 256), "ffn_up": (512, 256),
    "ffn_down": (256, 512),
}  # fmt: skip


def expected_shapes(tied: bool) -> dict[str, tuple[int, ...]]:
    want = {"token_embd.weight": (384, 256)}
    want |= {f"blk.{i}.{s}.weight": shape for i in range(2) for s, shape in LAYER_TENSORS.items()}
    want["output_norm.weight"] = (256,)
    if not tied:
        want["output.weight"] = (384, 256)
    return want


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    """One tiny256 file per format, SPM and BPE tokenizers alternating."""
    d = tmp_path_factory.mktemp("synth")
    out = {}
    for i, qtype in enumerate(ALL):
        tok = tiny_spm_tokenizer() if i % 2 else tiny_bpe_tokenizer()
        out[qtype] = (write_gguf(d / f"tiny256-{qtype.name}.gguf", TINY256, qtype, tokenizer=tok, seed=i), tok, i)
    return out


@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_gguf_tensors_read_back_through_gguf_py(gguf_files, qtype):
    path, _, seed = gguf_files[qtype]
    reader = GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    want = expected_shapes(tied=False)
    assert list(tensors) == list(want)  # llama.cpp's order: embedding, blocks, output_norm, output
    ref = random_weights(TINY256, seed=seed)
    for name, shape in want.items():
        t = tensors[name]
        assert tuple(int(n) for n in t.shape) == shape[::-1], name  # GGUF stores ne0 (row length) first
        if len(shape) == 1:
            assert t.tensor_type == T.F32
            np.testing.assert_array_equal(t.data, ref[name])
        else:
            assert t.tensor_type == qtype, name
            stored = np.asarray(t.data).view(np.uint8).reshape(shape[0], -1)  # (rows, row_bytes)
            np.testing.assert_array_equal(stored, quants.quantize(ref[name], qtype), err_msg=name)
            assert quants.dequantize(stored, qtype).shape == shape


@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_gguf_metadata_and_tokenizer_round_trip(gguf_files, qtype):
    path, tok, _ = gguf_files[qtype]
    fields = {k: f.contents() for k, f in GGUFReader(path).fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "tiny256"
    expect = {
        "llama.block_count": 2, "llama.context_length": 128, "llama.embedding_length": 256,
        "llama.feed_forward_length": 512, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.rope.freq_base": 10000.0, "llama.rope.dimension_count": 64, "llama.vocab_size": 384,
        "tokenizer.ggml.model": tok.kind, "tokenizer.ggml.bos_token_id": tok.bos_id,
        "tokenizer.ggml.eos_token_id": tok.eos_id, "tokenizer.ggml.add_bos_token": tok.add_bos,
        "tokenizer.ggml.add_space_prefix": tok.add_space_prefix, "general.quantization_version": 2,
    }  # fmt: skip
    for key, value in expect.items():
        assert fields[key] == value, key
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5, rel=1e-6)
    assert fields["tokenizer.ggml.tokens"] == tok.tokens
    assert fields["tokenizer.ggml.token_type"] == tok.token_types.tolist()

    loaded = load_gguf(path)  # the project's own loader sees the same model
    assert loaded.config.dim == 256 and loaded.config.n_kv_heads == 2 and loaded.config.ffn_dim == 512
    assert not loaded.config.tied_output
    spec = loaded.tokenizer
    assert spec.tokens == tok.tokens and spec.merges == tok.merges and spec.pre == tok.pre
    assert (spec.bos_id, spec.eos_id, spec.unk_id) == (tok.bos_id, tok.eos_id, tok.unk_id)
    assert spec.chat_template == tok.chat_template
    if tok.scores is None:
        assert "tokenizer.ggml.scores" not in fields
    else:
        np.testing.assert_array_equal(spec.scores, tok.scores)


@pytest.mark.parametrize("tied", [True, False])
def test_tied_output_leaves_out_output_weight(tmp_path, tied):
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], T.Q8_0, tokenizer=tiny_spm_tokenizer(), tied=tied)
    names = {t.name for t in GGUFReader(path).tensors}
    assert ("output.weight" in names) == (not tied)
    assert load_gguf(path).config.tied_output == tied


def test_tied_defaults_to_config(tmp_path):
    cfg = ModelConfig(**{**PRESETS["tiny"].__dict__, "tied_output": True})
    names = {t.name for t in GGUFReader(write_gguf(tmp_path / "m.gguf", cfg, T.F16)).tensors}
    assert "output.weight" not in names and "token_embd.weight" in names


def test_without_tokenizer_there_are_no_tokenizer_keys(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], T.Q4_0)
    assert not [k for k in GGUFReader(path).fields if k.startswith("tokenizer.")]
    assert load_gguf(path).tokenizer is None


def test_write_gguf_rejects_bad_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="Q4_K.*multiple of 256.*dim is 64"):
        write_gguf(tmp_path / "a.gguf", PRESETS["tiny"], T.Q4_K)
    with pytest.raises(InvalidArgumentError, match="384 tokens.*vocab_size is 32000"):
        write_gguf(tmp_path / "b.gguf", PRESETS["stories15M"], T.Q8_0, tokenizer=tiny_spm_tokenizer())
    bad = ModelConfig(**{**PRESETS["tiny"].__dict__, "n_kv_heads": 3})
    with pytest.raises(InvalidArgumentError, match="n_kv_heads"):
        write_gguf(tmp_path / "c.gguf", bad, T.F32)
    with pytest.raises(Exception, match="IQ2_XXS"):
        write_gguf(tmp_path / "d.gguf", PRESETS["tiny"], T.IQ2_XXS)


# ---- weights ------------------------------------------------------------------------------------------------


def test_random_weights_are_deterministic_and_scaled():
    a, b = random_weights(TINY256, seed=5), random_weights(TINY256, seed=5)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    c = random_weights(TINY256, seed=6)
    assert not np.array_equal(a["blk.0.attn_q.weight"], c["blk.0.attn_q.weight"])
    assert all(x.dtype == np.float32 for x in a.values())
    # matrices N(0, 1/cols): std within 3% for >= 32k samples; norms 1 +- a little
    assert a["blk.0.ffn_down.weight"].std() == pytest.approx(1 / np.sqrt(512), rel=0.03)
    assert a["token_embd.weight"].std() == pytest.approx(1 / np.sqrt(256), rel=0.03)
    assert np.abs(a["output_norm.weight"] - 1).max() < 0.15 and a["output_norm.weight"].std() > 0


def test_presets_match_published_shapes():
    s15, s42, s110, smol = (PRESETS[k] for k in ("stories15M", "stories42M", "stories110M", "smollm2-135m"))
    assert (s15.dim, s15.n_layers, s15.n_heads, s15.ffn_dim, s15.context_length) == (288, 6, 6, 768, 256)
    assert (s42.dim, s42.n_layers, s42.n_heads, s42.ffn_dim, s42.context_length) == (512, 8, 8, 1376, 1024)
    assert (s110.dim, s110.n_layers, s110.n_heads, s110.ffn_dim, s110.context_length) == (768, 12, 12, 2048, 1024)
    assert (smol.dim, smol.n_layers, smol.n_heads, smol.n_kv_heads, smol.ffn_dim) == (576, 30, 9, 3, 1536)
    assert (smol.vocab_size, smol.rope_base, smol.tied_output) == (49152, 100000.0, True)
    assert s15.tied_output and s42.tied_output and s110.tied_output  # llama2.c ties the classifier
    # parameter counts as published: 15M, 42M, 110M, 135M
    assert s15.n_params() == pytest.approx(15.19e6, rel=0.005)
    assert s42.n_params() == pytest.approx(41.7e6, rel=0.005)
    assert s110.n_params() == pytest.approx(109.5e6, rel=0.005)
    assert smol.n_params() == pytest.approx(134.5e6, rel=0.005)


# ---- tiny tokenizers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_spm_tokenizer, tiny_bpe_tokenizer])
def test_tiny_tokenizers_are_deterministic_and_well_formed(make):
    a, b = make(), make()
    assert a.tokens == b.tokens and a.merges == b.merges
    assert len(a.tokens) == synth.TINY_VOCAB == len(set(a.tokens))
    assert a.token_types.shape == (synth.TINY_VOCAB,)
    vocab = set(a.tokens)
    for merge in a.merges:  # every merge joins two tokens into a token
        left, right = merge.split(" ")
        assert {left, right, left + right} <= vocab, merge
    if a.kind == "llama":
        assert a.token_types[:3].tolist() == [UNKNOWN, CONTROL, CONTROL]
        assert (a.token_types[3:259] == BYTE).all() and a.tokens[3 + 0x41] == "<0x41>"
        assert a.scores.shape == (synth.TINY_VOCAB,)
    else:
        assert a.tokens[1:3] == ["<|im_start|>", "<|im_end|>"] and (a.token_types[:3] == CONTROL).all()
        assert (a.token_types[3:] == NORMAL).all() and a.chat_template and a.pre == "smollm"


@pytest.mark.parametrize("make", [tiny_spm_tokenizer, tiny_bpe_tokenizer])
def test_tiny_tokenizers_encode_and_decode(make):
    tok = Tokenizer.from_spec(make())
    text = "Once upon a time, the little girl named Lily saw a big dog. ünïcödé 🦙"
    ids = tok.encode(text, add_bos=False)
    assert tok.decode(ids) == text
    the = tok.encode("the" if tok.kind == "llama" else " the", add_bos=False)  # SentencePiece adds the space
    assert [tok.spec.tokens[i] for i in the] == ["▁the" if tok.kind == "llama" else "Ġthe"]  # merges reach words
    assert len(ids) < len(text.encode())  # merges do compress


@pytest.mark.parametrize(
    "qtype,fallback", [(T.Q2_K, T.Q4_0), (T.Q3_K, T.Q4_0), (T.Q4_K, T.Q5_0), (T.Q5_K, T.Q5_1), (T.Q6_K, T.Q8_0)]
)
def test_k_quant_fallback_for_rows_not_multiple_of_256(tmp_path, qtype, fallback):
    cfg = ModelConfig(**{**PRESETS["tiny"].__dict__, "ffn_dim": 256})  # dim 64: only ffn_down has 256-value rows
    path = write_gguf(tmp_path / "m.gguf", cfg, qtype, fallback=True, seed=2)
    types = {t.name: t.tensor_type for t in GGUFReader(path).tensors}
    assert types["blk.0.ffn_down.weight"] == qtype and types["blk.1.ffn_down.weight"] == qtype
    assert types["blk.0.ffn_up.weight"] == fallback and types["token_embd.weight"] == fallback
    assert types["output_norm.weight"] == T.F32
    loaded = load_gguf(path)
    ref = random_weights(cfg, seed=2)
    for name in ("blk.1.ffn_down.weight", "blk.0.attn_q.weight"):
        np.testing.assert_array_equal(loaded.weights[name].data, quants.quantize(ref[name], types[name]))


def test_synth_mix_is_llamalab_quantize_of_the_f16_file(tmp_path, monkeypatch):
    """synth:PRESET:q4_k_m is the preset in F16 quantized to the mix, as a user would make it."""
    from gguf import GGUFReader

    from llamalab.convert.quantize import quantize_file
    from llamalab.lab import models

    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path))
    mix = models.synthesize("tiny256", "q4_k_m")
    ref = tmp_path / "ref.gguf"
    quantize_file(models.synthesize("tiny256", "f16"), ref, "Q4_K_M", progress=False)
    assert mix.read_bytes() == ref.read_bytes()
    assert {t.tensor_type.name for t in GGUFReader(mix).tensors} == {"Q4_K", "Q6_K", "F32"}
    with pytest.raises(InvalidArgumentError, match=r"unknown dtype 'q4_k_x'; choose one of .*or a mix: .*q4_k_m"):
        models.synthesize("tiny256", "q4_k_x")
