"""Constrained decoding: a JSON schema, a Lark/GBNF grammar or a regex, enforced token by
token by masking the logits with llguidance (the engine llama.cpp uses).

Why llguidance (measured on SmolLM2's 49,152-token vocabulary, see the README's server
section): a mask costs ~0.03 ms per token (median; the model's own step is ~10 ms), a
schema compiles in ~2 ms (outlines-core: ~1 s, as it builds a DFA over the vocabulary),
it reads GBNF, Lark and regex as well as JSON schema, it needs no other package
(xgrammar imports torch), and it refuses a schema keyword it cannot enforce, naming it,
where outlines-core silently dropped `minimum` and `uniqueItems`.

    proc = grammar_processor(tokenizer, compile_grammar(json_schema={...}))
    # proc(logits (vocab,), generated ids so far) -> logits with the forbidden tokens at -inf
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from typing import Any, Sequence

import numpy as np

from .errors import InvalidArgumentError, LlamalabError

# the JSON layout a model is steered into: compact, as OpenAI's structured outputs print it.
# Free whitespace lets a weak model wander in blank space until max_tokens.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_TOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _llg():
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a core dependency; only a broken install lacks it
        raise LlamalabError("constrained decoding needs the llguidance package: pip install llguidance") from None
    return llguidance


def ll_tokenizer(tokenizer):
    """llguidance's view of our vocabulary (built once per tokenizer: ~0.3 s for 49k tokens).

    Control tokens (<|im_end|>) are marked with a leading 0xFF byte, llguidance's
    convention, so no grammar can spell them out of ordinary text.
    """
    llg = _llg()
    with _LOCK:
        found = _TOKENIZERS.get(tokenizer)
        if found is not None:
            return found

        class _Vocab:  # the duck type llguidance.TokenizerWrapper reads
            eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.stop_ids, default=0)
            bos_token_id = tokenizer.bos_id
            tokens: list[bytes] = []
            special_token_ids: list[int] = []

            def __call__(self, text):
                return tokenizer.encode(text, add_bos=False, add_eos=False)

        vocab = _Vocab()
        for i in range(tokenizer.vocab_size):
            raw = tokenizer.token_bytes(i)
            if raw and not tokenizer.render(i, skip_special=True):  # control / unknown
                vocab.special_token_ids.append(i)
                raw = b"\xff" + raw
            vocab.tokens.append(raw)
        found = llg.LLTokenizer(llg.TokenizerWrapper(vocab))
        _TOKENIZERS[tokenizer] = found
        return found


def compile_grammar(json_schema: dict | None = None, grammar: str | None = None, regex: str | None = None,
                    json_object: bool = False, field: str | None = None) -> str | None:
    """llguidance's grammar for at most one of the constraints, or None when none is given.

    Raises InvalidArgumentError naming `field` (the request field) and, for a schema, the
    keyword that cannot be enforced.
    """
    given = [k for k, v in (("json_schema", json_schema), ("grammar", grammar), ("regex", regex)) if v is not None]
    if json_object:
        given.append("json_object")
    if len(given) > 1:
        raise InvalidArgumentError(f"give at most one of json_schema, grammar, regex, json_object; got {', '.join(given)}")
    llg = _llg()
    if json_object:
        json_schema, field = {"type": "object"}, field or "response_format"
    if json_schema is not None and not isinstance(json_schema, dict):
        raise InvalidArgumentError(f"{field or 'json_schema'}: must be a JSON object (a JSON schema), "
                                   f"got {type(json_schema).__name__}")
    if grammar is not None and (not isinstance(grammar, str) or not grammar.strip()):
        raise InvalidArgumentError(f"{field or 'grammar'}: must be a non-empty GBNF or Lark grammar")
    try:
        if json_schema is not None:
            field = field or "json_schema"
            text = llg.LLMatcher.grammar_from_json_schema(json.dumps(json_schema), overrides=JSON_LAYOUT)
        elif grammar is not None:
            field = field or "grammar"
            text = llg.grammar_from("gbnf", grammar)  # Lark, or GBNF converted to Lark
        elif regex is not None:
            field = field or "regex"
            text = llg.LLMatcher.grammar_from_regex(regex)
        else:
            return None
    except (ValueError, TypeError) as e:
        raise InvalidArgumentError(f"{field}: {_explain(str(e))}") from None
    ok, messages = _validate(text)
    if not ok:
        raise InvalidArgumentError(f"{field}: {_explain(messages)}")
    return text


def _validate(text: str) -> tuple[bool, str]:
    llg = _llg()
    is_error, msgs = llg.LLMatcher.validate_grammar_with_warnings(text, None)
    return (not is_error, "; ".join(msgs))


_UNIMPLEMENTED = re.compile(r'Unimplemented keys: \[([^\]]*)\]')


def _explain(message: str) -> str:
    """llguidance's message, led by the unsupported keyword when that is the cause."""
    m = _UNIMPLEMENTED.search(message)
    if m:
        keys = [k.strip().strip('"') for k in m.group(1).split(",") if k.strip()]
        return f"unsupported JSON-schema keyword {', '.join(repr(k) for k in keys)} (cannot be enforced)"
    first = message.strip().splitlines()[0] if message.strip() else "invalid grammar"
    return first[:300]


class GrammarProcessor:
    """A per-request logits processor: forbids every token the grammar cannot take next.

    Called once per step with the tokens generated so far; the ones it has not seen yet
    are fed to the matcher first (so it works inside any generation loop).
    """

    def __init__(self, tokenizer, grammar: str):
        llg = _llg()
        self.matcher = llg.LLMatcher(ll_tokenizer(tokenizer), grammar)
        if self.matcher.is_error():
            raise InvalidArgumentError(f"grammar: {_explain(self.matcher.get_error())}")
        self.n_vocab = tokenizer.vocab_size
        self.mask = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)  # one bit per token
        self.seen = 0

    def __call__(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        m = self.matcher
        for t in generated[self.seen:]:
            if not m.is_stopped() and not m.consume_token(int(t)):
                raise LlamalabError(f"constrained decoding: token {t} refused ({m.get_error()})")
        self.seen = len(generated)
        m.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        if m.is_error():
            raise LlamalabError(f"constrained decoding failed: {m.get_error()}")
        allowed = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: self.n_vocab].astype(bool)
        if logits.shape[0] > self.n_vocab:  # padded output rows: never a token
            allowed = np.concatenate([allowed, np.zeros(logits.shape[0] - self.n_vocab, dtype=bool)])
        return np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32, copy=False)


def grammar_processor(tokenizer, grammar: str | None):
    """A GrammarProcessor, or None for no grammar."""
    return None if grammar is None else GrammarProcessor(tokenizer, grammar)
