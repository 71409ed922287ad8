"""Cutting special tokens (``<|im_start|>``, ``<s>``...) out of text before BPE runs.

As llama.cpp's ``tokenizer_st_partition``: special tokens are tried longest text first;
each one splits every remaining text fragment at all its occurrences. CONTROL and UNKNOWN
tokens are recognised only when the caller asks for it (``special=True``); USER_DEFINED
tokens are always recognised, as in llama.cpp and Hugging Face ``tokenizers``. After a
token with the rstrip rule (Phi-3), the whitespace that follows it is dropped.

Gemma 3 has 6,400 special tokens, so trying each one on every text would cost more than
the encoding itself. Instead the text is scanned once for where any special text could
start (its first character, then its first two), and only the special texts found there
are tried, in llama.cpp's order: the same result, at a cost that grows with the text.
"""

from __future__ import annotations

import numpy as np

from .spec import CONTROL, UNKNOWN, USER_DEFINED

_ASCII_SPACE = " \t\n\v\f\r"  # C isspace(), what llama.cpp strips


class SpecialTokenSplitter:
    """Splits text into raw-text fragments (str) and special token ids (int)."""

    def __init__(self, tokens: list[str], token_types, rstrip_ids: frozenset[int] = frozenset()):
        types = np.asarray(token_types)
        ids = [i for i in np.flatnonzero(np.isin(types, (CONTROL, UNKNOWN, USER_DEFINED))).tolist() if tokens[i]]
        ids.sort(key=lambda i: -len(tokens[i]))  # stable: equal lengths keep id order
        self._order = {i: k for k, i in enumerate(ids)}  # llama.cpp's trial order
        self._text = {i: tokens[i] for i in ids}
        self._always = {i for i in ids if types[i] == USER_DEFINED}
        self._rstrip = rstrip_ids
        by_text: dict[str, list[int]] = {}
        for i in ids:
            by_text.setdefault(tokens[i], []).append(i)
        self._by_text = by_text
        # where a special text can start: first character -> two-character head -> lengths, longest first
        heads: dict[str, dict[str, list[int]]] = {}
        for t in by_text:
            lengths = heads.setdefault(t[0], {}).setdefault(t[:2], [])
            if len(t) not in lengths:
                lengths.append(len(t))
        for by_head in heads.values():
            for lengths in by_head.values():
                lengths.sort(reverse=True)
        self._heads = heads

    def split(self, text: str, special: bool) -> list[str | int]:
        """Fragments of ``text`` in order; ``"".join`` of the str parts plus the token texts gives ``text``."""
        fragments: list[str | int] = [text] if text else []
        if not text or not self._heads:
            return fragments
        found = self._found(text)
        ids = sorted(
            (i for t in found for i in self._by_text[t] if special or i in self._always), key=self._order.__getitem__
        )
        for token_id in ids:
            token_text = self._text[token_id]
            rstrip = token_id in self._rstrip
            out: list[str | int] = []
            for frag in fragments:
                if isinstance(frag, int) or token_text not in frag:
                    out.append(frag)
                    continue
                parts = frag.split(token_text)
                for k, part in enumerate(parts):
                    if k:
                        out.append(token_id)
                        if rstrip:
                            part = part.lstrip(_ASCII_SPACE)
                    if part:
                        out.append(part)
            fragments = out
        return fragments

    def _found(self, text: str) -> set[str]:
        """Every special text that occurs in ``text``."""
        found: set[str] = set()
        by_text = self._by_text
        for first in self._heads.keys() & set(text):
            by_head = self._heads[first]
            if first in by_text:  # a one-character special text
                found.add(first)
            pos = text.find(first)
            while pos >= 0:
                for n in by_head.get(text[pos : pos + 2], ()):
                    if text[pos : pos + n] in by_text:
                        found.add(text[pos : pos + n])
                pos = text.find(first, pos + 1)
        return found
