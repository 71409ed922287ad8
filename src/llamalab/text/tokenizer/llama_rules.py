"""llama.cpp's fix-ups of a vocabulary at load time (``llama_vocab::impl::load``), found by token text.

GGUF files often lack ids for the tokens that end a chat turn, so llama.cpp finds them by
text: the end-of-turn token (``<|eot_id|>``, ``<|im_end|>``, ``<end_of_turn>``...), the
end-of-message ``<|eom_id|>``, the fill-in-the-middle tokens, and the set of every token
that ends generation (EOG). Every token it finds that way becomes CONTROL, whatever the
file says: Gemma 3's ``</s>`` is USER_DEFINED in the file but an EOG, hence CONTROL, so
llama.cpp encodes a literal "</s>" as text unless special tokens are parsed. A few more
rules mirror llama.cpp: gpt-oss's ``<|channel|>``-like tokens are USER_DEFINED; with both
``<|return|>`` and ``<|call|>`` present, ``<|end|>`` is no EOG; Phi-3 files (by
general.name) strip whitespace after their special tokens. Only dictionary look-ups of a
few dozen texts: no pass over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import CONTROL, NORMAL, UNKNOWN, USER_DEFINED, TokenizerSpec

# in llama.cpp's order; the first present text is taken when the file names no id
EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
EOM_TEXTS = ("<|eom_id|>",)
FIM_TEXTS = {
    "pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>",
            "<|prefix|>"),
    "suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>",
            "<|suffix|>"),
    "mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>",
            "<|middle|>"),
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}  # fmt: skip
# texts of end-of-generation tokens, as llama.cpp recognises them
EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
)  # fmt: skip
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss


@dataclass(frozen=True)
class TokenRules:
    types: list[int]  # the token types after llama.cpp's overrides
    eot_id: int | None
    eom_id: int | None
    eog_ids: frozenset[int]
    rstrip_ids: frozenset[int]  # whitespace after these (when cut out as special tokens) is dropped


def apply_llama_rules(spec: TokenizerSpec, types: list[int], ids: dict[str, int]) -> TokenRules:
    """The EOG set and the overridden token types, as llama.cpp derives them; ``types`` is not modified."""
    types = list(types)

    def find(texts) -> int | None:
        return next((ids[t] for t in texts if t in ids), None)

    def force_control(tid: int | None) -> None:
        if tid is not None:
            types[tid] = CONTROL

    eot_id = spec.eot_id if spec.eot_id is not None else find(EOT_TEXTS)
    eom_id = spec.eom_id if spec.eom_id is not None else find(EOM_TEXTS)
    if spec.eot_id is None:
        force_control(eot_id)
    if spec.eom_id is None:
        force_control(eom_id)
    fim = {k: find(v) for k, v in FIM_TEXTS.items()}
    for tid in fim.values():
        force_control(tid)

    eog = {fim[k] for k in ("pad", "rep", "sep") if fim[k] is not None}
    for text in EOG_TEXTS:
        tid = ids.get(text)
        if tid is not None:
            eog.add(tid)
            force_control(tid)
    for text in _ALWAYS_RENDERED:
        if text in ids:
            types[ids[text]] = USER_DEFINED
    eog |= {i for i in (spec.eos_id, eot_id, eom_id) if i is not None}

    present = {text for text in ("<|return|>", "<|call|>", "<|calls|>", "<|flush|>") if ids.get(text) in eog}
    end = ids.get("<|end|>")
    if end in eog and ({"<|return|>", "<|call|>"} <= present or {"<|calls|>", "<|flush|>"} <= present):
        eog.discard(end)
        types[end] = USER_DEFINED
    s = ids.get("</s>")
    if s in eog and any(ids.get(t) in eog for t in ("<|tool_response>", "<|plamo:eos|>")):
        eog.discard(s)
        types[s] = NORMAL

    rstrip: set[int] = set()
    name = (spec.model_name or "").lower()
    if "phi-3" in name or "phi3" in name:
        rstrip = set(np.flatnonzero(np.isin(np.asarray(types), (CONTROL, USER_DEFINED, UNKNOWN))).tolist())
        rstrip |= {ids[t] for t in ("</s>",) if t in ids}
        rstrip -= {ids[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in ids}
    return TokenRules(types, eot_id, eom_id, frozenset(eog), frozenset(rstrip))
