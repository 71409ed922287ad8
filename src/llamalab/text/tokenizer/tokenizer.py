"""The Tokenizer facade: text <-> token ids for a TokenizerSpec, with llama.cpp's rules.

Encoding: special tokens are cut out first (see special.py), then each text fragment is
encoded by SentencePiece BPE (kind 'llama', spm.py) or byte-level BPE (kind 'gpt2',
bpe.py). A Python str is UTF-8 encoded; lone surrogates (which UTF-8 cannot hold) are
replaced by U+FFFD first, so ``encode`` accepts any str.

Decoding: each token renders to bytes; the bytes are joined and decoded as UTF-8 with
invalid sequences replaced by U+FFFD. CONTROL and UNKNOWN tokens (``<s>``, ``<|im_end|>``)
render as nothing unless ``skip_special=False`` (llama.cpp's ``special=false``); UNUSED
tokens always render as nothing; USER_DEFINED tokens render as their text. For
SentencePiece vocabularies with ``add_space_prefix``, ``decode`` drops the one leading
space that ``encode`` added (``strip_prefix_space=True``, SentencePiece's rule), so
``decode(encode(s)) == s``; pass ``strip_prefix_space=False`` for text that continues a
prompt.

End of generation: ``eog_ids`` holds every token that ends a reply, found as llama.cpp
finds them (llama_rules.py): eos, the end-of-turn token, and tokens named by their text
(``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``, ``<|end|>``, ``<|endoftext|>``...).
"""

from __future__ import annotations

import re

import operator
from collections.abc import Iterable

import numpy as np
import regex

from ...errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from .bpe import BpeEncoder
from .bytes_unicode import unicode_str_to_bytes
from .spec import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, TokenizerSpec
from .llama_rules import EOG_TEXTS, apply_llama_rules
from .special import SpecialTokenSplitter
from .spm import SPACE, SpmEncoder
from .stream import IncrementalDecoder

_SURROGATE = regex.compile(r"[\ud800-\udfff]")


class Tokenizer:
    """Encodes and decodes text for one vocabulary; build it with ``Tokenizer.from_spec``."""

    def __init__(self, spec: TokenizerSpec):
        _validate(spec)
        self.spec = spec
        self.kind = spec.kind
        self.vocab_size = len(spec.tokens)
        ids = dict(zip(spec.tokens, range(self.vocab_size)))  # last one wins on duplicates, as llama.cpp
        rules = apply_llama_rules(spec, _token_types(spec).tolist(), ids)
        self._types = rules.types
        self.bos_id, self.eos_id = spec.bos_id, spec.eos_id
        self.eot_id, self.eom_id = rules.eot_id, rules.eom_id
        self.unk_id, self.pad_id = spec.unk_id, spec.pad_id
        self.add_bos, self.add_eos = spec.add_bos, spec.add_eos
        self.chat_template = spec.chat_template
        self.strips_prefix_space = spec.kind == "llama" and spec.add_space_prefix
        self.eog_ids: frozenset[int] = rules.eog_ids  # every token that ends generation, as llama.cpp's
        self.stop_ids = self.eog_ids  # the older name
        self._splitter = SpecialTokenSplitter(spec.tokens, self._types, rules.rstrip_ids)
        if spec.kind == "llama":
            self._encoder = SpmEncoder(spec.tokens, spec.scores, self._types, spec.unk_id, ids=ids)
        else:
            self._encoder = BpeEncoder(spec.tokens, spec.merges, spec.pre, ids=ids)
        self._bytes: list[bytes | None] = [None] * self.vocab_size  # rendered lazily

    @classmethod
    def from_spec(cls, spec: TokenizerSpec) -> Tokenizer:
        """Build a tokenizer; raises ModelFormatError / UnsupportedModelError on a bad spec."""
        return cls(spec)

    # -- encoding --------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, special: bool = False, add_eos: bool | None = None) -> list[int]:
        """Token ids for ``text``.

        add_bos / add_eos: None follows the spec. special: recognise CONTROL tokens written
        in the text (``<|im_start|>``); when False they are encoded as plain text.
        """
        if not isinstance(text, str):
            raise InvalidArgumentError(f"encode: text must be a str, got {type(text).__name__}")
        add_bos = self.add_bos if add_bos is None else add_bos
        add_eos = self.add_eos if add_eos is None else add_eos
        for flag, name, tid in ((add_bos, "add_bos", self.bos_id), (add_eos, "add_eos", self.eos_id)):
            if flag and tid is None:
                raise InvalidArgumentError(f"encode: {name}=True but the tokenizer has no {name[4:]} token")
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", text)
        out = [self.bos_id] if add_bos else []
        after_special = True  # SentencePiece: a text fragment at the start or after a special token gets '▁'
        for frag in self._splitter.split(text, special):
            if isinstance(frag, int):
                out.append(frag)
                after_special = True
            elif self.kind == "llama":
                prefix = " " if self.spec.add_space_prefix and after_special else ""
                out.extend(self._encoder.encode((prefix + frag).replace(" ", SPACE)))
                after_special = False
            else:
                out.extend(self._encoder.encode(frag))
        if add_eos:
            out.append(self.eos_id)
        return out

    # -- decoding --------------------------------------------------------------------------

    def piece(self, token_id: int) -> str:
        """The token as the vocabulary spells it ('▁Hello', 'Ġworld', '<0x0A>', '<|im_end|>')."""
        return self.spec.tokens[self._check_id(token_id)]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes the token stands for in text; control tokens give their own text."""
        return self.render(token_id, skip_special=False)

    def render(self, token_id: int, skip_special: bool = True) -> bytes:
        """The bytes ``decode`` emits for this token (no prefix-space handling)."""
        tid = self._check_id(token_id)
        if skip_special and self._types[tid] in (CONTROL, UNKNOWN):
            return b""
        data = self._bytes[tid]
        if data is None:
            data = self._bytes[tid] = self._render(tid)
        return data

    def decode(self, ids: Iterable[int], skip_special: bool = True, strip_prefix_space: bool = True) -> str:
        """Text for ``ids``; see the module docstring for special tokens and the prefix space."""
        data = [self.render(i, skip_special) for i in ids]
        if strip_prefix_space and self.strips_prefix_space:
            for k, d in enumerate(data):
                if d:
                    data[k] = d[1:] if d.startswith(b" ") else d
                    break
        return b"".join(data).decode("utf-8", errors="replace")

    def incremental_decoder(self, skip_special: bool = True, strip_prefix_space: bool = False) -> IncrementalDecoder:
        """A fresh IncrementalDecoder over this vocabulary (for generated text by default)."""
        return IncrementalDecoder(self, skip_special, strip_prefix_space)

    def _render(self, tid: int) -> bytes:
        text, ttype = self.spec.tokens[tid], self._types[tid]
        if ttype == UNUSED:
            return b""
        if ttype == BYTE and len(text) == 6 and text.startswith("<0x"):
            return bytes([int(text[3:5], 16)])
        if ttype != NORMAL:  # control, unknown, user-defined: their text as written
            return text.encode("utf-8")
        if self.kind == "llama":
            return text.replace(SPACE, " ").encode("utf-8")
        return unicode_str_to_bytes(text)

    def _check_id(self, token_id: int) -> int:
        try:
            tid = operator.index(token_id)
        except TypeError:
            raise InvalidArgumentError(f"token id must be an int, got {type(token_id).__name__}") from None
        if not 0 <= tid < self.vocab_size:
            raise InvalidArgumentError(f"token id {tid} is out of range: the vocabulary has {self.vocab_size} tokens")
        return tid


def load_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """Same as ``Tokenizer.from_spec(spec)``."""
    return Tokenizer(spec)


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _validate(spec: TokenizerSpec) -> None:
    if spec.kind not in ("llama", "gpt2"):
        raise UnsupportedModelError(f"tokenizer kind {spec.kind!r} is not supported; expected 'llama' or 'gpt2'")
    n = len(spec.tokens)
    try:
        joined = "\x00".join(spec.tokens)  # one C pass: type check, and one regex search below
    except TypeError:
        joined = None
    if n == 0 or joined is None:
        raise ModelFormatError("tokenizer tokens: expected a non-empty list of str")
    if spec.token_types is not None and len(spec.token_types) != n:
        raise ModelFormatError(f"tokenizer token_types: expected {n} entries (one per token), got {len(spec.token_types)}")
    if spec.kind == "llama" and (spec.scores is None or len(spec.scores) != n):
        got = "none" if spec.scores is None else len(spec.scores)
        raise ModelFormatError(f"tokenizer scores: a SentencePiece vocabulary needs {n} scores, got {got}")
    for name in ("bos_id", "eos_id", "eot_id", "eom_id", "unk_id", "pad_id"):
        tid = getattr(spec, name)
        if tid is not None and not 0 <= tid < n:
            raise ModelFormatError(f"tokenizer {name}: {tid} is out of range for a vocabulary of {n} tokens")
    if spec.token_types is not None:
        for i in np.flatnonzero(np.asarray(spec.token_types) == BYTE):
            if not _BYTE_TOKEN.fullmatch(spec.tokens[i]):
                raise ModelFormatError(f"tokenizer token {i} {spec.tokens[i]!r} is typed BYTE but is not of the form <0xHH>")
    if _SURROGATE.search(joined):
        bad = next(i for i, t in enumerate(spec.tokens) if _SURROGATE.search(t))
        raise ModelFormatError(f"tokenizer token {bad} is not valid Unicode (lone surrogate)")
    if spec.add_bos and spec.bos_id is None:
        raise ModelFormatError("tokenizer add_bos is true but bos_id is not set")
    if spec.add_eos and spec.eos_id is None:
        raise ModelFormatError("tokenizer add_eos is true but eos_id is not set")


def _token_types(spec: TokenizerSpec) -> np.ndarray:
    """The spec's token types; without them: NORMAL, with bos/eos CONTROL, unk UNKNOWN, '<0xXX>' BYTE."""
    if spec.token_types is not None:
        return np.asarray(spec.token_types, dtype=np.int32)
    types = np.full(len(spec.tokens), NORMAL, dtype=np.int32)  # (vocab,)
    if spec.kind == "llama":
        for i, t in enumerate(spec.tokens):
            if _BYTE_TOKEN.fullmatch(t):
                types[i] = BYTE
    for tid in (spec.bos_id, spec.eos_id, spec.eot_id):
        if tid is not None:
            types[tid] = CONTROL
    if spec.unk_id is not None:
        types[spec.unk_id] = UNKNOWN
    return types
