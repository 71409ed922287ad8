"""Decoding: special tokens, the SentencePiece prefix space, and streaming == one-shot."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamalab.errors import InvalidArgumentError
from llamalab.text.tokenizer import IncrementalDecoder, Tokenizer, spec_from_sentencepiece
from test_tokenizer_bpe import toy_spec



@pytest.fixture(scope="module")
def toy():
    return Tokenizer.from_spec(toy_spec())


@pytest.fixture(scope="module")
def llama(spm_model):
    """A SentencePiece tokenizer: the one trained at test time, and Llama 2's where present."""
    return Tokenizer.from_spec(spec_from_sentencepiece(spm_model))


def stream(tok, ids, **kw):
    dec = tok.incremental_decoder(**kw)
    parts = [dec.feed(i) for i in ids]
    return parts, dec.flush()


def test_control_tokens_hidden_unless_asked(toy):
    ids = [1, 262, 2]  # <|im_start|> hello <|im_end|>
    assert toy.decode(ids) == "hello"
    assert toy.decode(ids, skip_special=False) == "<|im_start|>hello<|im_end|>"
    assert toy.decode([262, 268]) == "hello<tool>"  # USER_DEFINED tokens are text


def test_split_character_waits_for_its_last_byte(toy):
    ids = [3 + b for b in "é€🦙".encode()]  # 2 + 3 + 4 byte tokens
    parts, tail = stream(toy, ids)
    assert parts == ["", "é", "", "", "€", "", "", "", "🦙"] and tail == ""


def test_invalid_bytes_become_replacement_characters(toy):
    ids = [3 + 0xFF, 3 + ord("a"), 3 + 0xE2, 3 + 0x82]  # bad byte, 'a', truncated '€'
    assert toy.decode(ids) == "\ufffda\ufffd"
    parts, tail = stream(toy, ids)
    assert "".join(parts) == "\ufffda" and tail == "\ufffd"


def test_prefix_space(llama):
    ids = llama.encode("Hello world")  # [1, '▁Hello', '▁world'] on Llama 2
    assert llama.decode(ids) == "Hello world"  # the space encode added is dropped
    assert llama.decode(ids, strip_prefix_space=False) == " Hello world"
    # generated text continues a prompt: streaming keeps the space by default
    parts, tail = stream(llama, ids)
    assert parts[0] == "" and parts[1].startswith(" ") and "".join(parts) == " Hello world" and tail == ""
    parts, _ = stream(llama, ids, strip_prefix_space=True)
    assert not parts[1].startswith(" ") and "".join(parts) == "Hello world"
    if llama.vocab_size == 32000:  # Llama 2: one piece per word
        assert stream(llama, ids)[0] == ["", " Hello", " world"]


def test_unknown_and_bad_ids(llama):
    assert llama.decode([0]) == "" and llama.decode([0], skip_special=False) == "<unk>"
    with pytest.raises(InvalidArgumentError, match=f"token id {llama.vocab_size} is out of range"):
        llama.decode([llama.vocab_size])
    with pytest.raises(InvalidArgumentError, match="token id -1"):
        llama.incremental_decoder().feed(-1)
    with pytest.raises(InvalidArgumentError, match="must be an int"):
        llama.decode(["5"])


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 268), max_size=40), skip=st.booleans())
def test_stream_equals_one_shot_toy(toy, ids, skip):
    parts, tail = stream(toy, ids, skip_special=skip)
    assert "".join(parts) + tail == toy.decode(ids, skip_special=skip)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 31999) | st.integers(3, 258), max_size=40), strip=st.booleans())
def test_stream_equals_one_shot_llama(llama, ids, strip):
    ids = [i % llama.vocab_size for i in ids]
    parts, tail = stream(llama, ids, strip_prefix_space=strip)
    assert "".join(parts) + tail == llama.decode(ids, strip_prefix_space=strip)


def test_decoder_class_is_exported(toy):
    assert isinstance(toy.incremental_decoder(), IncrementalDecoder)
