"""A Hugging Face tokenizer -> GGUF ``tokenizer.ggml.*`` keys, as llama.cpp's convert_hf_to_gguf.py writes them.

Two kinds:
- SentencePiece (``tokenizer.model``): ``tokenizer.ggml.model = "llama"``, pieces with
  their scores and types (normal, unknown, control, unused, byte), added tokens as
  user-defined or control with score -1000.
- byte-level BPE (``tokenizer.json``): ``"gpt2"``, the vocabulary by id ([PADn] for gaps),
  added tokens as control (special, or looking like ``<|...|>``) or user-defined, the
  merges, and the **pre-tokenizer**: llama.cpp cannot read the pre-tokenizer regex from
  the file, so it names it, found by hashing the token ids of a fixed probe text
  (``pre_tokenizers.json``, copied from llama.cpp's table). An unknown hash is an error
  naming the hash and ``--pre NAME``, never a guess.

Special token ids, ``add_bos_token``/``add_eos_token`` and the chat template come from
gguf-py's ``SpecialVocab`` (tokenizer_config.json, tokenizer.json, chat_template.jinja).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import sha256
from pathlib import Path

import gguf
from gguf import TokenType

from ..errors import InvalidArgumentError, ModelFormatError


@lru_cache(maxsize=1)
def _pre_table() -> dict:
    return json.loads((Path(__file__).with_name("pre_tokenizers.json")).read_text(encoding="utf-8"))


def known_pre_tokenizers() -> list[str]:
    return sorted(set(_pre_table()["hashes"].values()))


def probe_hash(tokenizer_json: Path) -> str:
    """sha256 of str(ids) for the probe text, encoded as transformers' tokenizer.encode does."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InvalidArgumentError("detecting a BPE pre-tokenizer needs the `tokenizers` package "
                                   "(pip install 'llamalab[convert]'), or pass --pre NAME") from None
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(_pre_table()["probe_text"]).ids
    return sha256(str(ids).encode()).hexdigest()


def detect_pre(tokenizer_json: Path) -> str:
    """The llama.cpp pre-tokenizer name for this tokenizer, or a clear error."""
    h = probe_hash(tokenizer_json)
    name = _pre_table()["hashes"].get(h)
    if name is None:
        raise InvalidArgumentError(
            f"{tokenizer_json}: unknown BPE pre-tokenizer (probe-text hash {h} is not in llama.cpp's table). "
            f"If you know which one it uses, pass --pre NAME (e.g. llama-bpe, qwen2, smollm, gpt-2; "
            f"`llamalab convert --list-pre` lists all {len(known_pre_tokenizers())}); a wrong name "
            "tokenizes some text differently from the original.")
    return name


@dataclass
class Vocab:
    model: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str
    tokens: list[str] | list[bytes]
    types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None
    load_merges: bool = False
    notes: list[str] = field(default_factory=list)

    def add_to(self, w: gguf.GGUFWriter, directory: Path) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        special = gguf.SpecialVocab(directory, load_merges=self.load_merges, n_vocab=len(self.tokens))
        if self.load_merges and not special.merges:
            raise ModelFormatError(f"{directory}: tokenizer.json has no BPE merges")
        special.add_to_gguf(w, quiet=True)


def _looks_special(text: str) -> bool:
    """llama.cpp's does_token_look_special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>")) or (text.startswith("<unused") and text.endswith(">")))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None


def bpe_vocab(directory: Path, vocab_size: int | None, pre: str | None) -> Vocab:
    """tokenizer.json (byte-level BPE) -> Vocab, as llama.cpp's get_vocab_base + _set_vocab_gpt2."""
    path = directory / "tokenizer.json"
    tj = _read_json(path)
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise ModelFormatError(f"{path}: tokenizer model is {model.get('type')!r}; expected BPE")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tj.get("added_tokens", [])}
    for text, t in added.items():
        vocab[text] = t["id"]
    n = vocab_size or (max(vocab.values()) + 1)
    if max(vocab.values()) >= n:
        raise ModelFormatError(f"{path}: token id {max(vocab.values())} is outside config.json's vocab_size {n}")
    by_id = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif text in added:
            if added[text].get("special") or _looks_special(text):
                types.append(TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")  # pre-normalize user-defined spaces
                types.append(TokenType.USER_DEFINED)
            tokens.append(text)
        else:
            tokens.append(text)
            types.append(TokenType.NORMAL)
    return Vocab(model="gpt2", pre=pre or detect_pre(path), tokens=tokens, types=types, load_merges=True)


def spm_vocab(directory: Path, vocab_size: int | None, phi3: bool = False) -> Vocab:
    """tokenizer.model (SentencePiece) -> Vocab, as llama.cpp's _create_vocab_sentencepiece
    (``phi3``: Phi3MiniModel.set_vocab's variant, which also reads tokenizer.json's added tokens)."""
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise InvalidArgumentError("reading tokenizer.model needs the `sentencepiece` package (pip install 'llamalab[convert]')") from None
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(directory / "tokenizer.model"))
    except (OSError, RuntimeError) as e:
        raise ModelFormatError(f"{directory / 'tokenizer.model'}: not a SentencePiece model ({e})") from None
    n = vocab_size or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [TokenType.UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        kind = TokenType.NORMAL
        if sp.IsUnknown(i):
            kind = TokenType.UNKNOWN
        elif sp.IsControl(i):
            kind = TokenType.CONTROL
        elif sp.IsUnused(i):
            kind = TokenType.UNUSED
        elif sp.IsByte(i):
            kind = TokenType.BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), kind
    for text, i in _read_json(directory / "added_tokens.json").items():
        if i < n:
            tokens[i], scores[i], types[i] = text.encode(), -1000.0, TokenType.USER_DEFINED
    decoder = _read_json(directory / "tokenizer_config.json").get("added_tokens_decoder", {})
    extra = [(int(i), d) for i, d in decoder.items()]
    if phi3:
        extra += [(int(d["id"]), d) for d in _read_json(directory / "tokenizer.json").get("added_tokens", [])]
    for i, d in extra:
        if i >= n:
            continue
        text = d["content"]
        if d.get("special") or (not phi3 and _looks_special(text)):
            types[i] = TokenType.CONTROL
        else:
            if not phi3:
                text = text.replace("\u2581", " ")
            types[i] = TokenType.USER_DEFINED
        tokens[i], scores[i] = text.encode(), -1000.0
    return Vocab(model="llama", pre="default", tokens=tokens, types=types, scores=scores)
