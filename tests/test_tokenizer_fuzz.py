"""Property tests on random unicode: encode never fails, what round-trips, streaming == one-shot.

Decisions pinned here:
- encode accepts any str; lone surrogates (not encodable as UTF-8) are replaced by U+FFFD.
- byte-level BPE ('gpt2'): decode(encode(s)) == s for every s without lone surrogates.
- SentencePiece ('llama', add_space_prefix): decode(encode(s)) == s with or without BOS,
  for every s without lone surrogates and without '▁' (U+2581, which SentencePiece reads
  as a space); special=False, so control-token text in s stays text.
"""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamalab.text.tokenizer import Tokenizer, spec_from_sentencepiece
from test_tokenizer_bpe import toy_spec

# any code point, lone surrogates included, biased towards spaces and special-token texts
TEXT = st.text(
    st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF) | st.sampled_from(" \n\t▁"), max_size=60
) | st.lists(st.sampled_from(["<s>", "</s>", "<|im_end|>", "<tool>", " ", "  ", "\n", "hello", "é", "🦙"]), max_size=12).map("".join)


def no_surrogates(s: str) -> str:
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)


@pytest.fixture(scope="module")
def toy():
    return Tokenizer.from_spec(toy_spec())


@pytest.fixture(scope="module")
def llama(spm_model):
    """A SentencePiece tokenizer: the one trained at test time, and Llama 2's where present."""
    return Tokenizer.from_spec(spec_from_sentencepiece(spm_model))


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "smollm", "qwen2", "default"])
@settings(max_examples=200, deadline=None)
@given(text=TEXT, special=st.booleans())
def test_bpe_round_trip(pre, text, special):
    tok = Tokenizer.from_spec(toy_spec(pre))
    ids = tok.encode(text, special=special)
    assert tok.decode(ids, skip_special=False) == no_surrogates(text)


@settings(max_examples=200, deadline=None)
@given(text=TEXT, add_bos=st.booleans())
def test_spm_round_trip(llama, text, add_bos):
    ids = llama.encode(text, add_bos=add_bos)
    assert llama.decode(ids) == no_surrogates(text).replace("▁", " ")


@settings(max_examples=200, deadline=None)
@given(text=TEXT, special=st.booleans())
def test_spm_encode_any_text(llama, text, special):
    ids = llama.encode(text, special=special)
    assert all(0 <= i < llama.vocab_size for i in ids)
    dec = llama.incremental_decoder(strip_prefix_space=True)
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == llama.decode(ids)


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_bpe_stream_equals_one_shot(toy, text):
    ids = toy.encode(text, special=True)
    dec = toy.incremental_decoder()
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == toy.decode(ids)
