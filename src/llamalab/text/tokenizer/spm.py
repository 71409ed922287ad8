"""SentencePiece BPE encoding, as llama.cpp's ``llm_tokenizer_spm`` does it.

Text is cut into UTF-8 characters; the adjacent pair whose concatenation is the
highest-scoring vocabulary piece is merged first (ties: leftmost), until no pair is in
the vocabulary. Characters that are no piece fall back to ``<0xXX>`` byte tokens, or to
the unknown token where the vocabulary has no byte tokens.

A merge can cross the start of a '▁' run only by making a piece with a '▁' after another
character ("inner space"). Llama 2 has no such piece and Gemma 3 has one ('>▁</'), so the
text is cut at every run start that no occurrence of such a piece covers, and the words
are encoded, and cached, independently with the same result (merges in different words
never interact, and each word's merges keep their relative order).
"""

from __future__ import annotations

import heapq

import numpy as np
import regex

from ...errors import ModelFormatError
from .spec import BYTE

SPACE = "\u2581"  # '▁', SentencePiece's visible space
_WORD = regex.compile(SPACE + "*[^" + SPACE + "]+|" + SPACE + "+")
_INNER_SPACE = regex.compile("[^\x00" + SPACE + "]" + SPACE)  # searched in the tokens joined by NULs
_MAX_INNER = 64  # inner-space pieces beyond which cutting into words is not worth it
_CACHE_LIMIT = 200_000  # words kept; the cache is cleared when it grows past this


class SpmEncoder:
    """Encodes text fragments with a SentencePiece vocabulary (scores decide merge order)."""

    def __init__(self, tokens: list[str], scores: np.ndarray, token_types, unk_id: int | None,
                 ids: dict[str, int] | None = None):
        # last one wins on duplicates, as llama.cpp
        self._ids = ids if ids is not None else dict(zip(tokens, range(len(tokens))))
        self._scores = np.asarray(scores, dtype=np.float32).tolist()
        self._byte_ids: list[int | None] = [None] * 256
        for i in np.flatnonzero(np.asarray(token_types) == BYTE).tolist():
            t = tokens[i]
            if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                self._byte_ids[int(t[3:5], 16)] = i
        self._unk_id = unk_id
        joined = "\x00".join(tokens)
        self._inner = [tokens[joined.count("\x00", 0, m.start())] for m in _INNER_SPACE.finditer(joined)]
        self._by_word = len(self._inner) <= _MAX_INNER  # else one span per text: slower, same ids
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text`` (spaces must already be '▁'); empty text gives []."""
        if not self._by_word:
            return self._encode_span(text)
        out: list[int] = []
        cache = self._cache
        for word in self._words(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_span(word)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    def _words(self, text: str) -> list[str]:
        """``text`` cut at the starts of '▁' runs that no inner-space piece occurring in it covers."""
        cuts = [m.start() for m in _WORD.finditer(text)][1:]
        covered: set[int] = set()
        for piece in self._inner:
            pos = text.find(piece)
            while pos >= 0:
                covered.update(range(pos + 1, pos + len(piece)))
                pos = text.find(piece, pos + 1)
        starts = [0, *(c for c in cuts if c not in covered)]
        return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]

    def _encode_span(self, text: str) -> list[int]:
        n = len(text)
        if n == 0:
            return []
        ids, scores = self._ids, self._scores
        length = [1] * n  # symbol i covers text[i:i + length[i]]; 0 once merged into its left neighbour
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        heap: list[tuple[float, int, int, int]] = []  # (-score, left, right, merged length)

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            size = length[left] + length[right]
            tid = ids.get(text[left : left + size])
            if tid is not None:
                heapq.heappush(heap, (-scores[tid], left, right, size))

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
                continue  # stale: one side was merged since this pair was queued
            length[left] = size
            length[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])

        out: list[int] = []
        i = 0
        while i != -1:
            piece = text[i : i + length[i]]
            tid = ids.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte_fallback(piece))
            i = nxt[i]
        return out

    def _byte_fallback(self, piece: str) -> list[int]:
        """``<0xXX>`` tokens for the bytes of ``piece`` (one character), else one unknown token."""
        byte_ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        if None not in byte_ids:
            return byte_ids
        if self._unk_id is None:
            raise ModelFormatError(
                f"tokenizer: {piece!r} is in no token, and the vocabulary has no byte tokens and no unk_id"
            )
        return [self._unk_id]
