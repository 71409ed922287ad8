"""Cutting special tokens (``<|im_start|>``, ``<s>``...) out of text before BPE runs.

As llama.cpp's ``tokenizer_st_partition``: special tokens are tried longest text first;
each one splits every remaining text fragment at all its occurrences. CONTROL and UNKNOWN
tokens are recognised only when the caller asks for it (``special=True``); USER_DEFINED
tokens are always recognised, as in llama.cpp and Hugging Face ``tokenizers``.
"""

from __future__ import annotations

import numpy as np

from .spec import CONTROL, UNKNOWN, USER_DEFINED


class SpecialTokenSplitter:
    """Splits text into raw-text fragments (str) and special token ids (int)."""

    def __init__(self, tokens: list[str], token_types: np.ndarray):
        ids = [i for i, t in enumerate(token_types) if t in (CONTROL, UNKNOWN, USER_DEFINED) and tokens[i]]
        ids.sort(key=lambda i: -len(tokens[i]))  # stable: equal lengths keep id order
        self._always = [(tokens[i], i) for i in ids if token_types[i] == USER_DEFINED]
        self._all = [(tokens[i], i) for i in ids]

    def split(self, text: str, special: bool) -> list[str | int]:
        """Fragments of ``text`` in order; ``"".join`` of the str parts plus the token texts gives ``text``."""
        fragments: list[str | int] = [text] if text else []
        for token_text, token_id in self._all if special else self._always:
            out: list[str | int] = []
            for frag in fragments:
                if isinstance(frag, int) or token_text not in frag:
                    out.append(frag)
                    continue
                parts = frag.split(token_text)
                for k, part in enumerate(parts):
                    if k:
                        out.append(token_id)
                    if part:
                        out.append(part)
            fragments = out
        return fragments
