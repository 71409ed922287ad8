"""SentencePiece BPE ('llama' kind) against the sentencepiece library: on a model trained at test time
(conftest.train_sentencepiece, always) and on Llama 2's tokenizer.model (where ../shared has it)."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamalab.errors import ModelFormatError, ModelNotFoundError
from llamalab.text.tokenizer import Tokenizer, TokenizerSpec, spec_from_sentencepiece
from llamalab.text.tokenizer.spec import BYTE, CONTROL, NORMAL, UNKNOWN

from conftest import LLAMA2_SPM as MODEL

CASES = [
    "", " ", "  ", "\n", "\t", "Hello world", " Hello world", "Hello world ", "  leading and trailing  ",
    "The capital of France is", "Hello, world! How are you?", "multiple   spaces   here",
    "line one\nline two\n\nline four", "tabs\there\t\tand\tthere", "\r\n windows \r\n",
    "日本語のテキストです。", "中文文本，包含标点。", "한국어 텍스트", "Ünïcödé àccents ñ ß Ø",
    "Ελληνικά και Русский", "emoji 🦙🔥👍🏽 and flags 🇫🇷", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝛑",
    "def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { a[i] = b[i]; }",
    "<s>not special</s> <unk>", "<0x41> looks like a byte", "1234567890 3.14159 -42 1e-9",
    "a" * 200, "ab" * 150, "   " * 30, "\u200b zero width \u00a0 nbsp", "\x00\x01\x7f control chars",
    "mixed: English, français, 日本, العربية, עברית", "▁ already a meta space", "\ufeffBOM",
]


@pytest.fixture(scope="module")
def spec(spm_model):
    return spec_from_sentencepiece(spm_model)


@pytest.fixture(scope="module")
def sp(spm_model):
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=str(spm_model))


@pytest.fixture(scope="module")
def tok(spec):
    return Tokenizer.from_spec(spec)


@pytest.fixture(scope="module")
def llama2():
    """Llama 2's tokenizer, for the tests that pin its token ids."""
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is absent (shared Llama 2 tokenizer)")
    return Tokenizer.from_spec(spec_from_sentencepiece(MODEL))


def test_spec_from_sentencepiece_matches_the_library(spec, sp, spm_model):
    n = sp.vocab_size()
    assert spec.kind == "llama" and len(spec.tokens) == n == (32000 if spm_model == MODEL else 1000)
    assert spec.tokens == [sp.id_to_piece(i) for i in range(n)]
    np.testing.assert_array_equal(spec.scores, np.array([sp.get_score(i) for i in range(n)], dtype=np.float32))
    expected_types = [
        CONTROL if sp.is_control(i) else UNKNOWN if sp.is_unknown(i) else BYTE if sp.is_byte(i) else NORMAL
        for i in range(n)
    ]
    assert spec.token_types.tolist() == expected_types
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, None)
    assert spec.add_bos and not spec.add_eos and spec.add_space_prefix


@pytest.mark.parametrize("text", CASES)
def test_encode_matches_sentencepiece(tok, sp, text):
    assert tok.encode(text, add_bos=False) == sp.encode(text)
    assert tok.encode(text) == [1, *sp.encode(text)]  # add_bos defaults to the spec's True


@pytest.mark.parametrize("text", CASES)
def test_decode_matches_sentencepiece_and_round_trips(tok, sp, text):
    ids = sp.encode(text)
    expected = text.replace("\u2581", " ")  # '▁' in the text is a space to SentencePiece
    assert tok.decode(ids) == sp.decode(ids) == expected
    assert tok.decode([1, *ids, 2]) == expected  # <s> and </s> render as nothing


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_encode_matches_sentencepiece(tok, sp, text):
    if any("\ud800" <= c <= "\udfff" for c in text):
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    assert tok.encode(text, add_bos=False) == sp.encode(text)


def test_known_ids(llama2):
    tok = llama2
    assert tok.encode("Hello world") == [1, 15043, 3186]
    assert tok.encode("\n", add_bos=False) == [29871, 13]  # '▁' then byte-fallback <0x0A>
    assert tok.encode("🦙", add_bos=False) == [29871, 243, 162, 169, 156]  # 4 byte tokens: F0 9F A6 99
    assert tok.encode("", add_bos=True) == [1]
    assert tok.encode("hi", add_bos=False, add_eos=True) == [7251, 2]


def test_control_tokens_are_text_unless_special(tok, sp):
    text = "<s>Hello</s>"
    assert tok.encode(text, add_bos=False) == sp.encode(text)
    # special=True: llama.cpp cuts <s>, </s> out and prefixes the text after a special token with '▁'
    assert tok.encode(text, add_bos=False, special=True) == [1, *sp.encode("Hello"), 2]
    assert tok.encode("a<unk>", add_bos=False, special=True) == [*sp.encode("a"), 0]


def test_control_token_ids_llama2(llama2):
    assert llama2.encode("<s>Hello</s>", add_bos=False) == [529, 29879, 29958, 10994, 829, 29879, 29958]
    assert llama2.encode("<s>Hello</s>", add_bos=False, special=True) == [1, 15043, 2]


def test_add_space_prefix_false(spec, sp):
    tok = Tokenizer.from_spec(TokenizerSpec(**{**spec.__dict__, "add_space_prefix": False}))
    ids = tok.encode("Hello world", add_bos=False)
    assert not tok.piece(ids[0]).startswith("▁")  # 'Hello' without '▁'
    assert ids == sp.encode("Hello world")[-len(ids):] or tok.decode(ids) == "Hello world"
    assert tok.decode(ids) == "Hello world"
    first = sp.encode("Hello")[0]  # '▁...': with no prefix space added, none is stripped
    assert tok.decode([first]).startswith(" ")


def test_add_space_prefix_false_llama2(llama2):
    tok = Tokenizer.from_spec(TokenizerSpec(**{**llama2.spec.__dict__, "add_space_prefix": False}))
    assert tok.encode("Hello world", add_bos=False) == [10994, 3186]
    assert tok.decode([10994, 3186]) == "Hello world"
    assert tok.decode([15043]) == " Hello"


def test_stop_ids_and_special_ids(tok, sp):
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.eot_id) == (sp.vocab_size(), 1, 2, None)
    assert tok.stop_ids == frozenset({2})
    hello = sp.piece_to_id("▁the")
    assert tok.piece(hello) == "▁the" and tok.token_bytes(hello) == b" the"
    newline = sp.piece_to_id("<0x0A>")
    assert tok.token_bytes(newline) == b"\n" and tok.piece(newline) == "<0x0A>"
    assert tok.token_bytes(1) == b"<s>"


def test_special_ids_llama2(llama2):
    assert llama2.vocab_size == 32000
    assert llama2.piece(15043) == "▁Hello" and llama2.token_bytes(15043) == b" Hello"
    assert llama2.token_bytes(13) == b"\n" and llama2.piece(13) == "<0x0A>"


def test_long_prompt_is_fast(tok, sp):
    import time

    text = " ".join(f"word{i} and some more text, with punctuation; x{i % 97}" for i in range(500))
    t0 = time.perf_counter()
    ids = tok.encode(text, add_bos=False)
    elapsed = time.perf_counter() - t0
    assert len(ids) > 4000 and ids == sp.encode(text)
    assert elapsed < 1.0, f"{len(ids)} tokens took {elapsed:.2f}s"


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such"):
        spec_from_sentencepiece(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f")  # field 1, length far past the end
    with pytest.raises(ModelFormatError, match="not a valid SentencePiece model"):
        spec_from_sentencepiece(bad)


def test_toy_vocabulary_without_byte_tokens():
    # '▁ab' wins over '▁a' + 'b' only through 'ab' (score -1) then '▁ab' (-2); 'c' is in no piece -> <unk>
    tokens = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "ab", "\u2581ab", "\u2581a"]
    scores = np.array([0, 0, 0, -5, -6, -7, -1, -2, -3], dtype=np.float32)
    types = np.array([UNKNOWN, CONTROL, CONTROL] + [NORMAL] * 6, dtype=np.int32)
    tok = Tokenizer.from_spec(
        TokenizerSpec(kind="llama", tokens=tokens, scores=scores, token_types=types, unk_id=0, bos_id=1, eos_id=2)
    )
    assert tok.encode("ab c") == [7, 3, 0]
    assert tok.encode("a") == [8]  # '▁a' (-3)
    assert tok.encode("ba") == [3, 5, 4]  # no '▁b', no 'ba'
    assert tok.decode([7, 3, 0]) == "ab "  # <unk> renders as nothing
