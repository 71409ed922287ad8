"""Streaming detokenization: text out as tokens come in, never half a character."""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


class IncrementalDecoder:
    """Turns token ids into text one token at a time.

    ``feed`` returns only complete UTF-8 characters; bytes of a character split across
    tokens (byte-fallback or byte-level tokens) are held until it is complete. Invalid
    byte sequences become U+FFFD exactly as in one-shot decoding, so the concatenation of
    every ``feed`` plus ``flush`` equals ``tokenizer.decode(ids, skip_special,
    strip_prefix_space)``.

    The default ``strip_prefix_space=False`` suits generated text, which continues a
    prompt: a generated '▁Paris' streams as ' Paris'.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True, strip_prefix_space: bool = False):
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._strip = strip_prefix_space and tokenizer.strips_prefix_space
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Text completed by this token (possibly '')."""
        data = self._tokenizer.render(token_id, self._skip_special)
        if self._strip and data:
            self._strip = False
            if data.startswith(b" "):
                data = data[1:]
        return self._utf8.decode(data)

    def flush(self) -> str:
        """Whatever is still held: an unfinished character becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)
