"""Heavier tokenizer fuzzing than tests/test_tokenizer_*.py: long runs, arbitrary id streams, odd specs, damaged files.

- Byte-complete vocabularies (SentencePiece with byte fallback, byte-level BPE under several
  pre-tokenizers, and Llama 2 / SmolLM2 where present) are lossless: decode(encode(s)) == s
  with lone surrogates read as U+FFFD (and, for SentencePiece, U+2581 as a space), even for
  runs of tens of thousands of characters.
- Streaming any id sequence (split multi-byte characters, special tokens) equals one-shot decoding.
- Random TokenizerSpecs and mutated SentencePiece .model files build, encode and decode or
  raise a LlamalabError; nothing else. Engine: scripts/fuzz.py (long run: --target tokenizer).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from fuzz_harness import load_fuzz
from hypothesis import given, settings
from hypothesis import strategies as st

from llamalab.errors import LlamalabError
from llamalab.text.tokenizer import Tokenizer


fuzz = load_fuzz()
SPECS = fuzz.byte_complete_specs()
LONG_TEXTS = {
    "letters": "a" * 30000,
    "spaces": " " * 12000 + "x",
    "newlines": "\r\n" * 6000,
    "combining": "e" + "\u0301" * 10000,
    "emoji": "🦙" * 5000,
    "surrogates": "\ud800x\udfff" * 2000,
    "specials": "<s></s><|im_end|>▁" * 1500,
}


@pytest.fixture(scope="module")
def tokenizers():
    return {name: Tokenizer.from_spec(spec) for name, spec in SPECS.items()}


@pytest.mark.parametrize("name", ["spm", "bpe-smollm", "bpe-llama-bpe", "bpe-None"])
@pytest.mark.parametrize("text", list(LONG_TEXTS.values()), ids=list(LONG_TEXTS))
def test_long_runs_round_trip(tokenizers, name, text):
    with fuzz.time_limit(20.0):
        out = fuzz.check_tokenizer_text(tokenizers[name], text, lossless=True)
    assert out.status == "ok", out


def test_random_text_round_trips_on_every_byte_complete_vocabulary(tokenizers):
    rng = random.Random(7)
    for _ in range(25):
        text = fuzz.random_text(rng)
        for name, tok in tokenizers.items():
            out = fuzz.check_tokenizer_text(tok, text, lossless=True)
            assert out.status == "ok", (name, out)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(name=st.sampled_from(sorted(SPECS)), ids=st.lists(st.integers(0, 10**6), max_size=80),
       skip=st.booleans(), strip=st.booleans())  # fmt: skip
def test_streaming_any_ids_equals_one_shot(tokenizers, name, ids, skip, strip):
    tok = tokenizers[name]
    ids = [i % tok.vocab_size for i in ids]  # byte tokens split characters at random
    dec = tok.incremental_decoder(skip_special=skip, strip_prefix_space=strip)
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == tok.decode(ids, skip_special=skip, strip_prefix_space=strip)


def run_cases(kinds: set[str], n: int, tmp_path: Path) -> list:
    """Tokenizer cases whose kind is in `kinds` among the first n (deterministic)."""
    out = []
    for i in range(n):
        if fuzz.tokenizer_case(0, i)[0] in kinds:
            with fuzz.time_limit(10.0):
                out.append(fuzz.run_case("tokenizer", 0, i, tmp_path, ()))
    return out


def check(outcomes: list) -> None:
    new, known = fuzz.triage(outcomes)
    assert not new, new[:5]
    if known:
        pytest.xfail("known issues: " + "; ".join(sorted(known)))


def test_random_specs_build_or_raise_project_errors(tmp_path):
    outcomes = run_cases({"spec"}, 800, tmp_path)
    assert len(outcomes) > 120 and {o.status for o in outcomes} >= {"ok", "rejected"}
    check(outcomes)


def test_mutated_sentencepiece_files(tmp_path):
    outcomes = run_cases({"spm"}, 800, tmp_path)
    assert len(outcomes) > 120 and {o.status for o in outcomes} >= {"ok", "rejected"}
    check(outcomes)


def test_byte_token_with_bad_hex_is_a_project_error():
    """A BYTE-typed '<0xZZ>' (reachable from any GGUF or .model file) must work or be refused, not crash."""
    tokens = list(SPECS["spm"].tokens)
    tokens[3 + 0x41] = "<0xZZ>"  # the byte token for 'A'
    spec = dataclasses.replace(SPECS["spm"], tokens=tokens)
    try:
        tok = Tokenizer.from_spec(spec)
        tok.decode(tok.encode("ABC") + list(range(tok.vocab_size)))
    except LlamalabError:
        pass  # refused with a project error: fine
    except ValueError as e:
        if fuzz.known_issue(str(e)):
            pytest.xfail(fuzz.known_issue(str(e)))
        raise
