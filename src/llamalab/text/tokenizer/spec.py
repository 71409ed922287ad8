"""What a loader hands the tokenizer: the vocabulary and its rules, no file format."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# token types, as llama.cpp numbers them (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True, eq=False)
class TokenizerSpec:
    kind: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: list[str]
    scores: np.ndarray | None = None  # float32 (vocab,), SentencePiece only
    token_types: np.ndarray | None = None  # int32 (vocab,), see constants above
    merges: list[str] = field(default_factory=list)  # "a b" pairs, BPE only
    pre: str | None = None  # tokenizer.ggml.pre: selects the BPE pre-tokenizer regex
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None  # end of turn (chat), when it differs from eos
    eom_id: int | None = None  # end of message (Llama 3.1 tool calls: <|eom_id|>)
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = True  # SentencePiece: prepend "▁" to the text
    chat_template: str | None = None
    model_name: str | None = None  # general.name: llama.cpp keys a few token rules on it (Phi-3's rstrip)
