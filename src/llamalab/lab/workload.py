"""What each timed run feeds a model: prompt token ids and the tokens decoded after them.

Prompts are cut from ``prompts/essay.txt`` (original prose shipped with the package,
about 5,000 tokens for a Llama-family tokenizer), tokenized once per model, outside any
timing. Generation does not sample: the decode steps are fed the tokens that follow the
prompt in the same text (teacher forcing), so every runtime does exactly the same work
and sampling is excluded, as llama-bench does. A model without a tokenizer gets
seeded random token ids instead; throughput depends only on shapes, not on the ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np

ESSAY = "essay.txt"


def essay_text() -> str:
    """The shipped prompt text."""
    return resources.files("llamalab.lab").joinpath("prompts", ESSAY).read_text(encoding="utf-8")


@dataclass
class TokenSource:
    """A long stream of valid token ids for one model, and a way back to text."""

    ids: list[int]
    bos: int | None  # put first in every prompt when the model's tokenizer adds it
    kind: str  # "text" (the essay, tokenized) or "random" (no tokenizer)
    decode: object = field(default=None, repr=False)  # ids -> str, or None
    notes: list[str] = field(default_factory=list)

    def take(self, n_prompt: int, n_gen: int) -> tuple[list[int], list[int]]:
        """(prompt ids, ids to feed while decoding): n_prompt + n_gen consecutive ids.

        The prompt starts with BOS when the tokenizer adds one; the stream is cycled
        when the text is shorter than asked (and a note says so).
        """
        head = [self.bos] if self.bos is not None and n_prompt > 0 else []
        need = n_prompt + n_gen - len(head)
        body = self.ids
        if need > len(body):
            reps = -(-need // len(body))
            body = body * reps
            note = f"the prompt text gives {len(self.ids)} tokens; it was repeated to reach {need}"
            if note not in self.notes:
                self.notes.append(note)
        seq = head + body[:need]
        return seq[:n_prompt], seq[n_prompt:]

    def text(self, ids: list[int]) -> str:
        """The text of some ids (for external runtimes that take a prompt string)."""
        if self.decode is not None:
            return self.decode(ids)
        return " ".join(essay_text().split()[: max(len(ids), 1)])


def token_source(loaded_tokenizer, vocab_size: int, seed: int = 0) -> TokenSource:
    """Tokenize the essay with a model's tokenizer spec (None: seeded random ids)."""
    if loaded_tokenizer is None:
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, vocab_size, size=8192).tolist()
        return TokenSource(ids, None, "random", notes=["the model has no tokenizer: prompts are seeded random token ids"])
    from ..text.tokenizer import Tokenizer

    tok = Tokenizer.from_spec(loaded_tokenizer)
    ids = tok.encode(essay_text(), add_bos=False)
    bos = tok.bos_id if loaded_tokenizer.add_bos else None
    return TokenSource(ids, bos, "text", decode=tok.decode)
