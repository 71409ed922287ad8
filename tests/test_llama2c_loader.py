"""llama2.c checkpoints and tokenizer.bin: exact round trips, run.c's forward pass, corrupt files."""

from __future__ import annotations

import mmap
import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from llamalab.runtime.config import ModelConfig
from llamalab.errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from llamalab.formats.gguf import load_gguf
from llamalab.formats.llama2c import load_llama2c, load_llama2c_tokenizer
from llamalab.lab.synth import PRESETS, random_weights, tiny_spm_tokenizer, write_gguf, write_llama2c
from llamalab.text.tokenizer.spec import TokenizerSpec

TINY = PRESETS["tiny"]  # dim 64, 2 layers, 4 heads, 2 kv heads (GQA), ffn 128, vocab 384, ctx 128


def write_tokenizer_bin(path, spec: TokenizerSpec) -> None:
    """llama2.c's tokenizer.bin, as its tokenizer.py exports it ('▁' -> ' ', <s>/</s> wrapped in newlines)."""
    texts = [{1: "\n<s>\n", 2: "\n</s>\n"}.get(i, t.replace("▁", " ")).encode() for i, t in enumerate(spec.tokens)]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(map(len, texts))))
        for text, score in zip(texts, spec.scores):
            f.write(struct.pack("<fi", score, len(text)) + text)


def header(path) -> list[int]:
    return list(struct.unpack("<7i", path.read_bytes()[:28]))


def patch_header(path, **changes) -> None:
    names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]
    values = header(path)
    for k, v in changes.items():
        values[names.index(k)] = v
    data = bytearray(path.read_bytes())
    data[:28] = struct.pack("<7i", *values)
    path.write_bytes(bytes(data))


# ---- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
def test_round_trip_gives_identical_arrays(tmp_path, shared):
    path = write_llama2c(tmp_path / "m.bin", TINY, shared_classifier=shared, seed=4)
    c = TINY
    n_values = (
        c.vocab_size * c.dim * (1 if shared else 2)
        + c.n_layers * (2 * c.dim + 2 * c.dim * c.dim + 2 * c.kv_dim * c.dim + 3 * c.dim * c.ffn_dim)
        + c.dim + c.context_length * c.head_dim
    )  # fmt: skip
    assert path.stat().st_size == 28 + 4 * n_values
    assert header(path) == [64, 128, 2, 4, 2, 384 if shared else -384, 128]

    loaded = load_llama2c(path)
    ref = random_weights(TINY, seed=4, tied=shared)
    assert set(loaded.weights) == set(ref)  # GGUF names; no output.weight when shared
    for name, x in ref.items():
        w = loaded.weights[name]
        assert w.qtype == T.F32 and w.shape == x.shape, name
        np.testing.assert_array_equal(w.dequantize(), x.reshape(w.shape), err_msg=name)
    cfg = loaded.config
    assert (cfg.dim, cfg.ffn_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (64, 128, 2, 4, 2)
    assert (cfg.vocab_size, cfg.context_length, cfg.tied_output) == (384, 128, shared)
    assert (cfg.norm_eps, cfg.rope_base, cfg.n_rot) == (1e-5, 10000.0, 16)
    assert loaded.tokenizer is None and loaded.metadata["llama2c.shared_classifier"] == shared


def test_weights_are_read_only_views_of_one_memory_map(tmp_path):
    loaded = load_llama2c(write_llama2c(tmp_path / "m.bin", TINY))
    for w in loaded.weights.values():
        assert not w.data.flags.writeable
        base = w.data
        while getattr(base, "base", None) is not None and not isinstance(base, mmap.mmap):
            base = base.base
        assert isinstance(base, mmap.mmap), w.name
    q = loaded.weights["blk.1.attn_q.weight"].data
    assert q.shape == (64, 64 * 4)  # (rows, row_bytes), as gguf_loader shapes F32 tensors


def test_same_seed_gives_the_same_model_in_gguf(tmp_path):
    a = load_llama2c(write_llama2c(tmp_path / "m.bin", TINY, shared_classifier=False, seed=9))
    b = load_gguf(write_gguf(tmp_path / "m.gguf", TINY, T.F32, seed=9, tied=False))
    assert set(a.weights) == set(b.weights)
    for name in a.weights:
        assert a.weights[name].shape == b.weights[name].shape, name
        np.testing.assert_array_equal(a.weights[name].dequantize(), b.weights[name].dequantize(), err_msg=name)


def test_write_llama2c_rejects_other_dtypes(tmp_path):
    with pytest.raises(InvalidArgumentError, match="int8"):
        write_llama2c(tmp_path / "m.bin", TINY, dtype="int8")


# ---- run.c's forward pass, as an independent oracle ---------------------------------------------------------


def runc_logits(path, tokens: list[int]) -> np.ndarray:
    """run.c's transformer(), ported line by line to NumPy; reads the file itself (not via the loader)."""
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = header(path)
    shared, vocab = vocab > 0, abs(vocab)
    hs = dim // n_heads
    kv_dim = n_kv * hs
    f = np.fromfile(path, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = f[pos : pos + n].reshape(shape)
        pos += n
        return out

    emb = take(vocab, dim)
    rms_att, wq, wk = take(n_layers, dim), take(n_layers, dim, dim), take(n_layers, kv_dim, dim)
    wv, wo, rms_ffn = take(n_layers, kv_dim, dim), take(n_layers, dim, dim), take(n_layers, dim)
    w1, w2, w3 = take(n_layers, hidden, dim), take(n_layers, dim, hidden), take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hs // 2), take(seq_len, hs // 2)
    wcls = emb if shared else take(vocab, dim)

    def rmsnorm(x, w):
        return w * (x / np.sqrt(np.mean(x * x) + 1e-5))

    def rope(v, p):  # rotate pairs (i, i+1) by p * 10000^(-(i % hs) / hs)
        i = np.arange(0, v.size, 2)
        ang = p * 10000.0 ** (-(i % hs) / hs)
        a, b = v[0::2].copy(), v[1::2].copy()
        v[0::2], v[1::2] = a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)

    kc = np.zeros((n_layers, len(tokens), kv_dim))
    vc = np.zeros((n_layers, len(tokens), kv_dim))
    out = []
    for p, tok in enumerate(tokens):
        x = emb[tok].astype(np.float64)
        for layer in range(n_layers):
            xb = rmsnorm(x, rms_att[layer])
            q, k, v = wq[layer] @ xb, wk[layer] @ xb, wv[layer] @ xb
            rope(q, p)
            rope(k, p)
            kc[layer, p], vc[layer, p] = k, v
            att_out = np.zeros(dim)
            for h in range(n_heads):
                kvh = h // (n_heads // n_kv)
                qh = q[h * hs : (h + 1) * hs]
                keys = kc[layer, : p + 1, kvh * hs : (kvh + 1) * hs]
                s = keys @ qh / np.sqrt(hs)
                a = np.exp(s - s.max())
                a /= a.sum()
                att_out[h * hs : (h + 1) * hs] = a @ vc[layer, : p + 1, kvh * hs : (kvh + 1) * hs]
            x = x + wo[layer] @ att_out
            xb = rmsnorm(x, rms_ffn[layer])
            h1, h3 = w1[layer] @ xb, w3[layer] @ xb
            x = x + w2[layer] @ (h1 / (1 + np.exp(-h1)) * h3)
        out.append(wcls @ rmsnorm(x, rms_final))
    return np.stack(out)


@pytest.mark.parametrize("shared", [True, False])
def test_model_on_llama2c_checkpoint_matches_run_c(tmp_path, shared):
    """Loader mapping + no Q/K permutation: llamalab's forward equals run.c's on the same file."""
    from llamalab.runtime.model import Llama

    path = write_llama2c(tmp_path / "m.bin", TINY, shared_classifier=shared, seed=11)
    tokens = [1, 280, 17, 300, 5, 99, 383, 2]
    want = runc_logits(path, tokens)  # (8, vocab)
    model = Llama(load_llama2c(path), backend="reference")
    got = model.forward(np.array(tokens), model.new_cache(16), all_logits=True)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # observed 1.4e-6; NeoX-style rope would be off by ~3


# ---- tokenizer.bin ---------------------------------------------------------------------------------------------


def test_llama2_tokenizer_bin_matches_sentencepiece_model(shared_data):
    from llamalab.text.tokenizer import spec_from_sentencepiece

    got = load_llama2c_tokenizer(shared_data / "llama2c-tokenizer.bin")
    want = spec_from_sentencepiece(shared_data / "llama2-tokenizer.model")
    assert len(got.tokens) == 32000 and got.tokens == want.tokens
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.token_types, want.token_types)
    assert (got.unk_id, got.bos_id, got.eos_id, got.add_bos, got.add_space_prefix) == (0, 1, 2, True, True)
    assert got.kind == "llama" and got.tokens[1:3] == ["<s>", "</s>"] and got.tokens[3 + 0x0A] == "<0x0A>"


def test_tokenizer_bin_round_trip_and_model_pairing(tmp_path):
    spec = tiny_spm_tokenizer()
    write_tokenizer_bin(tmp_path / "tok.bin", spec)
    got = load_llama2c_tokenizer(tmp_path / "tok.bin")
    assert got.tokens == spec.tokens
    np.testing.assert_array_equal(got.scores, spec.scores)
    np.testing.assert_array_equal(got.token_types, spec.token_types)

    model = write_llama2c(tmp_path / "m.bin", TINY)
    assert load_llama2c(model, tmp_path / "tok.bin").tokenizer.tokens == spec.tokens
    assert load_llama2c(model).tokenizer is None
    write_tokenizer_bin(tmp_path / "tokenizer.bin", spec)  # found beside the checkpoint, as run.c's default
    assert load_llama2c(model).tokenizer.tokens == spec.tokens

    small = TokenizerSpec(kind="llama", tokens=spec.tokens[:300], scores=spec.scores[:300])
    write_tokenizer_bin(tmp_path / "small.bin", small)
    with pytest.raises(ModelFormatError, match="small.bin.*300 tokens.*expects 384"):
        load_llama2c(model, tmp_path / "small.bin")


def test_llm_runs_a_llama2c_checkpoint(tmp_path):
    from llamalab import LLM

    write_tokenizer_bin(tmp_path / "tok.bin", tiny_spm_tokenizer())
    path = write_llama2c(tmp_path / "m.bin", TINY)
    llm = LLM(path, tokenizer=tmp_path / "tok.bin", backend="reference", progress=False)
    ids = llm.tokenize("Once upon a time")
    assert ids[0] == 1 and llm.detokenize(ids) == "Once upon a time"
    assert llm.logits(ids).shape == (len(ids), 384)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d[:2], "max_token_length"),
        (lambda d: struct.pack("<i", -5) + d[4:], "max_token_length"),
        (lambda d: d[:-1], "token 383 claims 1 bytes"),  # the last token, ")", cut off
        (lambda d: d + b"\x00\x00", "truncated entry for token 384"),
        (lambda d: d[:4] + struct.pack("<fi", 0.0, -7) + d[12:], "token 0 claims -7 bytes"),
        (lambda d: d + struct.pack("<fi", 0.0, 2) + b"\xff\xfe", "token 384 is not valid UTF-8"),
    ],
)
def test_corrupt_tokenizer_bin(tmp_path, mutate, match):
    write_tokenizer_bin(tmp_path / "tok.bin", tiny_spm_tokenizer())
    (tmp_path / "bad.bin").write_bytes(mutate((tmp_path / "tok.bin").read_bytes()))
    with pytest.raises(ModelFormatError, match=f"bad.bin.*{match}"):
        load_llama2c_tokenizer(tmp_path / "bad.bin")


# ---- corrupt checkpoints --------------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    return write_llama2c(tmp_path / "m.bin", TINY)


def test_truncated_checkpoint(good):
    size = good.stat().st_size
    good.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(ModelFormatError, match=rf"m\.bin.*should be {size} bytes.*but it is {size - 4} bytes"):
        load_llama2c(good)


def test_checkpoint_with_trailing_bytes(good):
    size = good.stat().st_size
    good.write_bytes(good.read_bytes() + b"\0" * 8)
    with pytest.raises(ModelFormatError, match=rf"should be {size} bytes.*but it is {size + 8} bytes"):
        load_llama2c(good)


def test_unshared_flag_on_a_shared_file_is_a_size_mismatch(good):
    patch_header(good, vocab_size=-384)
    with pytest.raises(ModelFormatError, match="shared_classifier=False"):
        load_llama2c(good)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"dim": -64}, "dim=-64"),
        ({"n_layers": 0}, "n_layers=0"),
        ({"n_heads": 0}, "n_heads=0"),
        ({"seq_len": -1}, "seq_len=-1"),
        ({"vocab_size": 0}, "vocab_size=0"),
        ({"n_heads": 5}, "multiple of n_heads 5"),
        ({"n_kv_heads": 3}, "n_kv_heads 3"),
        ({"dim": 2**30, "hidden_dim": 2**30}, "should be .* bytes"),  # huge claims: a size error, no allocation
    ],
)
def test_bad_header(good, change, match):
    patch_header(good, **change)
    with pytest.raises(ModelFormatError, match=match):
        load_llama2c(good)


def test_short_or_foreign_files(tmp_path):
    (tmp_path / "short.bin").write_bytes(b"\x01\x00\x00\x00" * 3)
    with pytest.raises(ModelFormatError, match="short.bin.*truncated llama2.c header"):
        load_llama2c(tmp_path / "short.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty.bin"):
        load_llama2c(tmp_path / "empty.bin")
    (tmp_path / "v2.bin").write_bytes(struct.pack("<Ii", 0x616B3432, 2) + b"\0" * 256)
    with pytest.raises(UnsupportedModelError, match="v2.bin.*version 2"):
        load_llama2c(tmp_path / "v2.bin")
    with pytest.raises(ModelFormatError, match="nope.bin: no such file"):
        load_llama2c(tmp_path / "nope.bin")


def test_config_validation_before_writing(tmp_path):
    bad = ModelConfig(**{**TINY.__dict__, "n_heads": 5})
    with pytest.raises(InvalidArgumentError):
        write_llama2c(tmp_path / "m.bin", bad)
    assert not (tmp_path / "m.bin").exists()
