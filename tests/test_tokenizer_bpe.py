"""Byte-level BPE ('gpt2' kind): a hand-built vocabulary with hand-computed ids, the
pre-tokenizer regexes by name, special tokens; and the real SmolLM2 vocabulary (slow)."""

import numpy as np
import pytest

from llamalab.errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from llamalab.text.tokenizer import Tokenizer, TokenizerSpec
from llamalab.text.tokenizer.bytes_unicode import BYTE_TO_UNICODE, bytes_to_unicode_str, unicode_str_to_bytes
from llamalab.text.tokenizer.pretokenize import PreTokenizer
from llamalab.text.tokenizer.spec import CONTROL, NORMAL, USER_DEFINED

# toy vocabulary: 3 control tokens, the 256 byte tokens (id = 3 + byte), then merged tokens
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
MERGED = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"]  # ids 259..267
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def toy_spec(pre: str | None = "gpt-2") -> TokenizerSpec:
    """The toy vocabulary above plus a USER_DEFINED '<tool>' (id 268)."""
    tokens = SPECIALS + [BYTE_TO_UNICODE[b] for b in range(256)] + MERGED + ["<tool>"]
    types = [CONTROL] * 3 + [NORMAL] * (256 + len(MERGED)) + [USER_DEFINED]
    return TokenizerSpec(
        kind="gpt2", tokens=tokens, token_types=np.array(types, dtype=np.int32), merges=list(MERGES), pre=pre,
        bos_id=1, eos_id=2, unk_id=None, add_bos=False, add_space_prefix=False,
    )  # fmt: skip


def byte_ids(text: str) -> list[int]:
    return [3 + b for b in text.encode("utf-8")]


@pytest.fixture(scope="module")
def toy():
    return Tokenizer.from_spec(toy_spec())


def test_bytes_unicode_map():
    assert len(set(BYTE_TO_UNICODE.values())) == 256
    assert BYTE_TO_UNICODE[ord(" ")] == "Ġ" and BYTE_TO_UNICODE[ord("\n")] == "Ċ" and BYTE_TO_UNICODE[ord("A")] == "A"
    everything = bytes(range(256))
    assert unicode_str_to_bytes(bytes_to_unicode_str(everything)) == everything


def test_merges_follow_rank_order(toy):
    assert toy.encode("hello world") == [262, 267]
    assert toy.encode("hello  world") == [262, 3 + 32, 267]  # pre-tokens 'hello', ' ', ' world'
    assert toy.encode("hel") == [259, 3 + ord("l")]  # 'h e' (rank 0) first
    assert toy.encode("ell") == [3 + ord("e"), 260]  # 'e l' has no rule
    assert toy.encode("lll") == [260, 3 + ord("l")]  # equal ranks: leftmost pair merges first
    assert toy.encode("worlds") == byte_ids("w") + [264, 266] + byte_ids("s")  # 'Ġ w' needs the space
    assert toy.encode("é") == [3 + 0xC3, 3 + 0xA9]
    assert toy.encode("") == []


def test_special_tokens_only_when_asked(toy):
    text = "<|im_start|>hello<|im_end|>"
    assert toy.encode(text, special=True) == [1, 262, 2]
    assert toy.encode(text) == byte_ids("<|im_start|>") + [262] + byte_ids("<|im_end|>")
    # USER_DEFINED tokens are cut out even with special=False, as in llama.cpp
    assert toy.encode("a<tool>b") == byte_ids("a") + [268] + byte_ids("b")
    # the longer special text wins over a shorter one inside it
    assert toy.encode("<|endoftext|><|im_end|>x", special=True) == [0, 2, *byte_ids("x")]


def test_bos_eos_and_stop_ids(toy):
    assert toy.encode("hello", add_bos=True, add_eos=True) == [1, 262, 2]
    assert toy.eog_ids == toy.stop_ids == frozenset({0, 2})  # eos, and <|endoftext|> as llama.cpp's EOG list
    # the file names no end-of-turn token: llama.cpp takes <|im_end|> by its text
    assert (toy.bos_id, toy.eos_id, toy.eot_id, toy.vocab_size) == (1, 2, 2, 269)


def test_piece_and_token_bytes(toy):
    assert toy.piece(267) == "Ġworld" and toy.token_bytes(267) == b" world"
    assert toy.token_bytes(3 + 0xFF) == b"\xff"
    assert toy.token_bytes(2) == b"<|im_end|>"
    with pytest.raises(InvalidArgumentError, match="out of range"):
        toy.piece(269)


@pytest.mark.parametrize(
    "pre, text, words",
    [
        ("gpt-2", "Hello world's 123  x\n", ["Hello", " world", "'s", " 123", " ", " x", "\n"]),
        ("gpt-2", "a  \tb", ["a", "  ", "\t", "b"]),  # the last blank before a word stands alone
        ("llama-bpe", "Hello 12345 world!!\n\nI'M", ["Hello", " ", "123", "45", " world", "!!\n\n", "I", "'M"]),
        ("smollm", "abc 123 x2", ["abc", " ", "1", "2", "3", " x", "2"]),
        ("qwen2", "x 123 don't", ["x", " ", "1", "2", "3", " don", "'t"]),
        ("default", "a+=b 1234", ["a", "+=", "b", " ", "123", "4"]),
    ],
)
def test_pre_tokenizers(pre, text, words):
    pieces = PreTokenizer(pre).split(text)
    assert pieces == words and "".join(pieces) == text


def test_unknown_pre_falls_back_with_a_warning(capsys):
    assert PreTokenizer("no-such-pre").name == "default"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-pre" in err
    assert PreTokenizer(None).name == "default" and capsys.readouterr().err == ""


def test_long_prompt_is_fast(toy):
    import time

    text = "hello world, " * 2000 + "x" * 3000 + " " * 3000
    t0 = time.perf_counter()
    ids = toy.encode(text)
    elapsed = time.perf_counter() - t0
    assert len(ids) > 4000 and toy.decode(ids) == text
    assert elapsed < 1.0, f"{len(ids)} tokens took {elapsed:.2f}s"


def test_bad_specs():
    spec = toy_spec()
    with pytest.raises(UnsupportedModelError, match="tokenizer kind 'wpm'"):
        Tokenizer.from_spec(TokenizerSpec(**{**spec.__dict__, "kind": "wpm"}))
    with pytest.raises(ModelFormatError, match="token_types"):
        Tokenizer.from_spec(TokenizerSpec(**{**spec.__dict__, "token_types": spec.token_types[:5]}))
    with pytest.raises(ModelFormatError, match="merges\\[1\\]"):
        Tokenizer.from_spec(TokenizerSpec(**{**spec.__dict__, "merges": ["h e", "ll"]}))
    with pytest.raises(ModelFormatError, match="eos_id"):
        Tokenizer.from_spec(TokenizerSpec(**{**spec.__dict__, "eos_id": 10_000}))
    with pytest.raises(ModelFormatError, match="scores"):
        Tokenizer.from_spec(TokenizerSpec(**{**spec.__dict__, "kind": "llama"}))
    with pytest.raises(InvalidArgumentError, match="text must be a str"):
        Tokenizer.from_spec(spec).encode(b"bytes")


# -- the real SmolLM2 vocabulary (pre 'smollm'); ids computed with llama.cpp 0.3.36 ------------

SMOL_IDS = {  # text -> (ids with special=False, ids with special=True)
    "Hello world": [19556, 905],
    "The capital of France is": [504, 3575, 282, 4649, 314],
    " leading space": [2899, 1898],
    "  leading and trailing  ": [216, 2899, 284, 35079, 256],
    "line one\nline two\n\nline four": [1311, 582, 198, 1311, 827, 198, 198, 1311, 1876],
    "def f(x):\n    return x ** 2  # square\n": [1604, 275, 24, 104, 727, 472, 1003, 1792, 1903, 216, 34, 216, 907, 5222, 198],
    "I'm you're they've he'd DON'T": [57, 5248, 346, 2316, 502, 3543, 384, 6737, 422, 2154, 23, 68],
    "3.14159 -42": [35, 30, 33, 36, 33, 37, 41, 731, 36, 34],
    "日本語のテキストです。": [23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226, 7365, 117, 39958, 19076],
    "🦙 \u00a0 \u2028": [10813, 116, 243, 3351, 250, 459, 118],
}
CHAT = "<|im_start|>user\nHi<|im_end|>"
CHAT_IDS = {
    False: [44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306, 79, 486, 108, 46],
    True: [1, 4093, 198, 26843, 2],
}


def smol_spec(path: str) -> TokenizerSpec:
    """The tokenizer of a GGUF file, read with gguf-py (the project's loader is tested elsewhere)."""
    gguf = pytest.importorskip("gguf")
    fields = gguf.GGUFReader(path).fields
    if fields["tokenizer.ggml.pre"].contents() != "smollm":
        pytest.skip(f"{path} is not a SmolLM2 model (tokenizer.ggml.pre != 'smollm')")
    return TokenizerSpec(
        kind="gpt2",
        tokens=list(fields["tokenizer.ggml.tokens"].contents()),
        token_types=np.array(fields["tokenizer.ggml.token_type"].contents(), dtype=np.int32),
        merges=list(fields["tokenizer.ggml.merges"].contents()),
        pre="smollm",
        bos_id=1, eos_id=2, add_bos=False, add_space_prefix=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def smol_path(default_model):
    return str(default_model)


@pytest.fixture(scope="module")
def smol(smol_path):
    return Tokenizer.from_spec(smol_spec(smol_path))


@pytest.mark.slow
@pytest.mark.parametrize("text", list(SMOL_IDS))
def test_smollm2_ids_match_llama_cpp(smol, text):
    assert smol.encode(text) == SMOL_IDS[text]
    assert smol.decode(SMOL_IDS[text]) == text


@pytest.mark.slow
@pytest.mark.parametrize("special", [False, True])
def test_smollm2_chat_markup(smol, special):
    ids = smol.encode(CHAT, special=special)
    assert ids == CHAT_IDS[special]
    assert smol.decode(ids, skip_special=False) == CHAT
    assert smol.decode(ids) == (CHAT if not special else "user\nHi")
    # <|im_end|> (eos), <|endoftext|> and <reponame> (fill-in-the-middle "repo"), as llama.cpp's EOG list
    assert smol.eog_ids == frozenset({0, 2, 4})


@pytest.mark.slow
def test_smollm2_against_llama_cpp_when_installed(smol, smol_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=smol_path, vocab_only=True, verbose=False)
    texts = [*SMOL_IDS, CHAT, "<|endoftext|><|im_end|>x<repo_name>y", "a\u0301 \x00\t\r\n ½²١", " " * 40]
    for text in texts:
        for special in (False, True):
            assert smol.encode(text, special=special) == llm.tokenize(text.encode(), add_bos=False, special=special)
