"""The small golden vocabularies of tests/data/tokenizer/, as TokenizerSpecs.

Three stored vocab-only GGUF files hold the pieces: ``vocab_bpe_base.gguf`` (the 256 byte
symbols and SmolLM2's first 2000 merges), ``vocab_spm_gemma.gguf`` (a subset of Gemma 3's
pieces with every special piece and Gemma's flags) and ``vocab_spm_phi3.gguf`` (a subset
of Llama 2's pieces plus Phi-3's chat tokens, named like a Phi-3 file). Each BPE family below
adds its special tokens and ``pre`` name to the base. make_golden.py writes the same specs
out as GGUF files for llama.cpp and stores its ids in golden_<name>.json.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from llamalab.formats.gguf import _open, read_metadata, tokenizer_from_metadata
from llamalab.text.tokenizer import TokenizerSpec
from llamalab.text.tokenizer.spec import CONTROL, NORMAL, USER_DEFINED

DATA = Path(__file__).resolve().parent / "data" / "tokenizer"

# family -> pre name, special tokens appended to the base (text, type), bos, eos, add_bos, general.name
BPE_STYLES = {
    "qwen2": ("qwen2", [("<|endoftext|>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL),
                        ("<|fim_prefix|>", CONTROL), ("<|fim_pad|>", CONTROL), ("<|repo_name|>", CONTROL),
                        ("<|file_sep|>", CONTROL), ("<tool_call>", USER_DEFINED), ("</tool_call>", USER_DEFINED),
                        ("<think>", USER_DEFINED)],
              None, "<|im_end|>", False, "Qwen2.5 style"),
    "llama3": ("llama-bpe", [("<|begin_of_text|>", CONTROL), ("<|end_of_text|>", CONTROL),
                             ("<|start_header_id|>", CONTROL), ("<|end_header_id|>", CONTROL),
                             ("<|eom_id|>", CONTROL), ("<|eot_id|>", CONTROL), ("<|python_tag|>", CONTROL)],
               "<|begin_of_text|>", "<|eot_id|>", True, "Llama 3.1 style"),
    "gpt2": ("gpt-2", [("<|endoftext|>", CONTROL)], "<|endoftext|>", "<|endoftext|>", False, "GPT-2 style"),
    "smollm": ("smollm", [("<|endoftext|>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)],
               "<|im_start|>", "<|im_end|>", False, "SmolLM2 style"),
    "default": ("default", [("<|endoftext|>", CONTROL)], None, "<|endoftext|>", False, "no pre name"),
    "deepseek-llm": ("deepseek-llm", [("<｜begin▁of▁sentence｜>", CONTROL), ("<｜end▁of▁sentence｜>", CONTROL)],
                     "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", True, "DeepSeek LLM style"),
    "deepseek-coder": ("deepseek-coder", [("<｜begin▁of▁sentence｜>", CONTROL), ("<｜end▁of▁sentence｜>", CONTROL)],
                       "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", True, "DeepSeek Coder style"),
    "deepseek-v3": ("deepseek-v3", [("<｜begin▁of▁sentence｜>", CONTROL), ("<｜end▁of▁sentence｜>", CONTROL)],
                    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", True, "DeepSeek V3 style"),
    "gpt-4o": ("gpt-4o", [("<|endoftext|>", CONTROL)], None, "<|endoftext|>", False, "GPT-4o style"),
    "tekken": ("tekken", [("<s>", CONTROL), ("</s>", CONTROL), ("[INST]", CONTROL), ("[/INST]", CONTROL)],
               "<s>", "</s>", True, "Mistral Nemo style"),
    "qwen35": ("qwen35", [("<|endoftext|>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)],
               None, "<|im_end|>", False, "Qwen3.5 style"),
    "falcon": ("falcon", [("<|endoftext|>", CONTROL)], None, "<|endoftext|>", False, "Falcon style"),
    "chatglm-bpe": ("chatglm-bpe", [("<|endoftext|>", CONTROL)], None, "<|endoftext|>", False, "ChatGLM style"),
    "bloom": ("bloom", [("<s>", CONTROL), ("</s>", CONTROL)], "<s>", "</s>", False, "Bloom style"),
}  # fmt: skip
SPM_STYLES = ("gemma", "phi3")


def read_gguf_spec(path: Path) -> tuple[TokenizerSpec, dict]:
    meta = read_metadata(_open(path))
    return tokenizer_from_metadata(meta, path), meta


@lru_cache(maxsize=None)
def bpe_base() -> TokenizerSpec:
    return read_gguf_spec(DATA / "vocab_bpe_base.gguf")[0]


def bpe_spec(style: str) -> TokenizerSpec:
    """The base BPE vocabulary with the special tokens and pre-tokenizer of one family."""
    pre, specials, bos, eos, add_bos, name = BPE_STYLES[style]
    base = bpe_base()
    tokens = list(base.tokens) + [t for t, _ in specials]
    types = np.array([NORMAL] * len(base.tokens) + [ty for _, ty in specials], dtype=np.int32)
    return dataclasses.replace(
        base, tokens=tokens, token_types=types, pre=pre, add_bos=add_bos, model_name=name,
        bos_id=None if bos is None else tokens.index(bos), eos_id=tokens.index(eos),
    )  # fmt: skip


def spm_spec(style: str) -> TokenizerSpec:
    """A stored SentencePiece subset vocabulary; general.name travels as model_name (Phi-3's rstrip rule)."""
    spec, meta = read_gguf_spec(DATA / f"vocab_spm_{style}.gguf")
    return dataclasses.replace(spec, model_name=meta.get("general.name"))


def golden(name: str) -> dict:
    return json.loads((DATA / f"golden_{name}.json").read_text(encoding="utf-8"))
