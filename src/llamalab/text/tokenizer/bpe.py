"""Byte-level BPE encoding (GPT-2 style), as llama.cpp's ``llm_tokenizer_bpe`` does it.

Text is split into pre-tokens by the pre-tokenizer regexes; each pre-token's UTF-8 bytes
are mapped to GPT-2 stand-in characters and merged pairwise by merge rank (lowest rank
first, ties: leftmost) until no adjacent pair has a merge rule. Results are cached per
pre-token, since natural text repeats words a lot.
"""

from __future__ import annotations

import heapq

from ...errors import ModelFormatError
from .bytes_unicode import bytes_to_unicode_str
from .pretokenize import IGNORE_MERGES, PreTokenizer

_CACHE_LIMIT = 200_000  # pre-tokens kept; the cache is cleared when it grows past this


class BpeEncoder:
    """Encodes text fragments with a byte-level BPE vocabulary and its merge list."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str | None, ids: dict[str, int] | None = None):
        # last one wins on duplicates, as llama.cpp
        self._ids = ids if ids is not None else dict(zip(tokens, range(len(tokens))))
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, rule in enumerate(merges):
            left, sep, right = rule.partition(" ")
            if not sep or not left or not right:
                raise ModelFormatError(f"tokenizer merges[{rank}]: expected 'left right', got {rule!r}")
            self._ranks.setdefault((left, right), rank)
        self.pre_tokenizer = PreTokenizer(pre)
        self._ignore_merges = self.pre_tokenizer.name in IGNORE_MERGES
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; empty text gives []."""
        out: list[int] = []
        cache = self._cache
        for word in self.pre_tokenizer.split(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(bytes_to_unicode_str(word.encode("utf-8")))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        if self._ignore_merges and word in self._ids:
            return (self._ids[word],)
        return self._to_ids(self._merge(word))

    def _merge(self, word: str) -> list[str]:
        """Apply merge rules to the characters of ``word``; returns the final symbols."""
        n = len(word)
        if n <= 1:
            return [word] if n else []
        ranks = self._ranks
        sym = list(word)  # "" once merged into its left neighbour
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        heap: list[tuple[int, int, int, str, str]] = []  # (rank, left, right, left text, right text)

        def push(left: int, right: int) -> None:
            if left >= 0 and right >= 0:
                rank = ranks.get((sym[left], sym[right]))
                if rank is not None:
                    heapq.heappush(heap, (rank, left, right, sym[left], sym[right]))

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, ltext, rtext = heapq.heappop(heap)
            if sym[left] != ltext or sym[right] != rtext or nxt[left] != right:
                continue  # stale: one side changed since this pair was queued
            sym[left] = ltext + rtext
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])
        return [s for s in sym if s]

    def _to_ids(self, pieces: list[str]) -> tuple[int, ...]:
        ids = self._ids
        out: list[int] = []
        for piece in pieces:
            tid = ids.get(piece)
            if tid is not None:
                out.append(tid)
            else:  # no such token: one token per byte, skipping bytes the vocabulary lacks (as llama.cpp)
                out.extend(ids[c] for c in piece if c in ids)
        return tuple(out)
