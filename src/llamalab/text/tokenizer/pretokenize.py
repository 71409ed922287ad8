"""Pre-tokenizer regexes of byte-level BPE vocabularies, selected by ``tokenizer.ggml.pre``.

A pre-tokenizer is a list of regexes applied one after the other, as llama.cpp does
(``unicode_regex_split``): each regex splits every piece left by the previous one into
its matches *and* the unmatched gaps between them, so no character is ever dropped and
no later regex sees across an earlier split.
"""

from __future__ import annotations

import sys

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT: used when the file names no pre-tokenizer
_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")
_STARCODER = (r"\p{N}", GPT2)  # digits one by one, then GPT-2
_FALCON = (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")

# pre name -> regexes, grouped as llama.cpp's llama-vocab.cpp groups them
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": _DEFAULT,
    **dict.fromkeys(("gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "mpt", "olmo", "jais"), (GPT2,)),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe"), (LLAMA3,)),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"), _STARCODER),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen", "hunyuan"), (QWEN2,)),
    "falcon": _FALCON,
}

# llama.cpp takes a whole pre-token as one token, skipping merges, when it is in the vocabulary
IGNORE_MERGES = frozenset(("llama3", "llama-v3", "llama-bpe", "falcon3"))


class PreTokenizer:
    """Splits text into the words that BPE merges run inside."""

    def __init__(self, pre: str | None):
        name = "default" if pre is None else pre
        if name not in PRE_TOKENIZERS:
            print(f"llamalab: unknown BPE pre-tokenizer {pre!r}, using 'default'", file=sys.stderr)
            name = "default"
        self.name = name
        self._regexes = [regex.compile(p) for p in PRE_TOKENIZERS[name]]

    def split(self, text: str) -> list[str]:
        """Split ``text`` into pre-tokens; their concatenation is ``text``."""
        pieces = [text] if text else []
        for rx in self._regexes:
            out: list[str] = []
            for piece in pieces:
                pos = 0
                for m in rx.finditer(piece):
                    start, end = m.span()
                    if start == end:
                        continue
                    if start > pos:
                        out.append(piece[pos:start])
                    out.append(piece[start:end])
                    pos = end
                if pos < len(piece):
                    out.append(piece[pos:])
            pieces = out
        return pieces
