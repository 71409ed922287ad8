"""Reading a SentencePiece ``tokenizer.model`` into a TokenizerSpec (no protobuf dependency).

The file is a protobuf ``ModelProto``; only these fields are read:

    ModelProto       1: pieces (repeated SentencePiece)  2: trainer_spec  3: normalizer_spec
    SentencePiece    1: piece (str)  2: score (float32)  3: type (enum, default NORMAL=1)
    TrainerSpec      3: model_type (1 UNIGRAM, 2 BPE)  40: unk_id  41: bos_id  42: eos_id  43: pad_id
    NormalizerSpec   3: add_dummy_prefix (bool, default true)

Piece types use the same numbers as llama.cpp (NORMAL 1 ... BYTE 6).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError
from .spec import NORMAL, TokenizerSpec


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise IndexError("truncated field")
        yield field, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v  # int32 -1 is written as a 10-byte varint


def spec_from_sentencepiece(path: str | Path) -> TokenizerSpec:
    """TokenizerSpec (kind 'llama') of a SentencePiece BPE model file such as Llama 2's tokenizer.model."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such SentencePiece model file")
    buf = path.read_bytes()
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    trainer = {3: 1, 40: 0, 41: 1, 42: 2, 43: -1}  # proto defaults
    add_dummy_prefix = True
    try:
        for field, wire, value in _fields(buf):
            if field == 1 and wire == 2:
                piece, score, ptype = "", 0.0, NORMAL
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif f == 2 and w == 5:
                        score = struct.unpack("<f", v)[0]
                    elif f == 3 and w == 0:
                        ptype = v
                tokens.append(piece)
                scores.append(score)
                types.append(ptype)
            elif field == 2 and wire == 2:
                trainer.update({f: _signed(v) for f, w, v in _fields(value) if f in trainer and w == 0})
            elif field == 3 and wire == 2:
                add_dummy_prefix = next((bool(v) for f, w, v in _fields(value) if f == 3 and w == 0), True)
    except (IndexError, ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: not a valid SentencePiece model ({e})") from None
    if not tokens:
        raise ModelFormatError(f"{path}: not a valid SentencePiece model (no pieces)")
    if trainer[3] != 2:
        raise UnsupportedModelError(f"{path}: SentencePiece model_type {trainer[3]} is not supported; expected 2 (BPE)")

    def opt_id(v: int) -> int | None:
        return v if 0 <= v < len(tokens) else None

    return TokenizerSpec(
        kind="llama",
        tokens=tokens,
        scores=np.asarray(scores, dtype=np.float32),  # (vocab,)
        token_types=np.asarray(types, dtype=np.int32),  # (vocab,)
        unk_id=opt_id(trainer[40]),
        bos_id=opt_id(trainer[41]),
        eos_id=opt_id(trainer[42]),
        pad_id=opt_id(trainer[43]),
        add_bos=opt_id(trainer[41]) is not None,
        add_space_prefix=add_dummy_prefix,
    )
