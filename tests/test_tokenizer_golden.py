"""Token ids against llama.cpp's, for every family's vocabulary (tests/data/tokenizer/, see make_golden.py).

Each golden file holds 50 tricky texts (whitespace runs, digits, contractions, CJK, emoji, code,
special tokens of every family) and the ids llama.cpp's llama-tokenize gives for them with and
without special-token parsing. The real 262k Gemma 3 file is checked too where it is present.
"""

import os
from pathlib import Path

import pytest

from llamalab.text.tokenizer import Tokenizer
from tokenizer_vocabs import BPE_STYLES, SPM_STYLES, bpe_spec, golden, read_gguf_spec, spm_spec

GEMMA3 = Path(os.environ.get("LLAMALAB_GEMMA3", "/work/peers/models/gemma-3-270m-Q4_K_M.gguf"))


def _mismatches(tok: Tokenizer, data: dict) -> list[str]:
    bad = []
    for mode in ("special", "plain"):
        for text, want in zip(data["texts"], data["ids"][mode], strict=True):
            got = tok.encode(text, special=mode == "special")
            if got != want:
                bad.append(f"{mode} {text[:40]!r}: llama.cpp {want[:12]}..., got {got[:12]}...")
    return bad


@pytest.mark.parametrize("style", list(BPE_STYLES))
def test_bpe_family_matches_llama_cpp(style):
    data = golden(f"bpe_{style}")
    assert len(data["texts"]) == 50
    tok = Tokenizer.from_spec(bpe_spec(style))
    assert _mismatches(tok, data) == []
    assert sorted(tok.eog_ids) == data["eog"]


@pytest.mark.parametrize("style", SPM_STYLES)
def test_spm_family_matches_llama_cpp(style):
    data = golden(f"spm_{style}")
    tok = Tokenizer.from_spec(spm_spec(style))
    assert _mismatches(tok, data) == []
    assert sorted(tok.eog_ids) == data["eog"]


def test_eog_sets_name_the_chat_enders():
    """What the generator stops on, per family (llama.cpp's list, checked above against its ids)."""
    def texts(tok):
        return sorted(tok.piece(i) for i in tok.eog_ids)

    assert texts(Tokenizer.from_spec(bpe_spec("qwen2"))) == sorted(
        ["<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
    )
    assert texts(Tokenizer.from_spec(bpe_spec("llama3"))) == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    assert texts(Tokenizer.from_spec(spm_spec("phi3"))) == sorted(["</s>", "<|end|>", "<|endoftext|>"])
    gemma = Tokenizer.from_spec(spm_spec("gemma"))
    assert texts(gemma) == ["</s>", "<end_of_turn>", "<eos>"]
    assert gemma.piece(gemma.eot_id) == "<end_of_turn>"
    # Gemma's </s> is USER_DEFINED in the file, but as an EOG llama.cpp makes it CONTROL: plain text unless special
    s = gemma.encode("</s>", add_bos=False)
    assert len(s) > 1 and gemma.encode("</s>", add_bos=False, special=True) == [gemma._splitter._by_text["</s>"][0]]


def test_phi3_special_tokens_eat_the_whitespace_after_them():
    tok = Tokenizer.from_spec(spm_spec("phi3"))  # general.name says Phi-3: llama.cpp's rstrip rule
    user, end = (tok._splitter._by_text[t][0] for t in ("<|user|>", "<|end|>"))
    assert tok.encode("<|user|>\n  Hi<|end|>\n", special=True)[:2] == [user, *tok.encode("Hi", add_bos=False)[:1]]
    assert tok.encode("<|user|>\n  Hi<|end|>\n", special=True)[-1] == end


@pytest.mark.slow
def test_real_gemma3_vocabulary_matches_llama_cpp():
    if not GEMMA3.is_file():
        pytest.skip(f"{GEMMA3} is absent (set LLAMALAB_GEMMA3)")
    spec, meta = read_gguf_spec(GEMMA3)
    assert len(spec.tokens) == 262144 and not spec.add_space_prefix and spec.add_bos
    tok, data = Tokenizer.from_spec(spec), golden("gemma3_full")
    assert _mismatches(tok, data) == []
    assert sorted(tok.eog_ids) == data["eog"] == [1, 106, 212]  # <eos>, <end_of_turn>, </s>
    assert tok.eot_id == 106
