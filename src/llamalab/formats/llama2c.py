"""llama2.c checkpoints (legacy export, version 0) and tokenizer.bin -> LoadedModel. The only module that knows the format.

A checkpoint is seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
seq_len; vocab_size < 0 means an unshared classifier at the end) followed by float32
arrays in run.c's order (see ``synth.LLAMA2C_ORDER``). Weights are handed out under
GGUF tensor names as zero-copy F32 views of a read-only memory map.

RoPE: no Q/K permutation is needed. run.c rotates adjacent pairs (q[i], q[i+1]), i even,
within each head, by pos * 10000^(-(i % head_size) / head_size); llama.cpp's non-NeoX rope
(used for arch "llama") rotates the same adjacent pairs (x[2j], x[2j+1]) by
pos * base^(-2j / n_rot). llama2.c's export.py stores Meta's layout (it un-permutes
Hugging Face checkpoints), which is also the layout GGUF llama tensors use.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from ..runtime.config import ModelConfig
from ..errors import ModelFormatError, UnsupportedModelError
from .gguf import LoadedModel
from .pages import advise_huge_pages
from ..runtime.tensor import QTensor
from ..text.tokenizer.spec import BYTE, CONTROL, NORMAL, UNKNOWN, TokenizerSpec

HEADER = struct.Struct("<7i")
F32 = 4  # bytes per value
NEW_FORMAT_MAGIC = 0x616B3432  # "ak42": llama2.c export versions 1 and 2 (not supported)
_HEX = frozenset("0123456789ABCDEF")


def _layout(dim: int, hidden: int, n_layers: int, n_heads: int, n_kv_heads: int, vocab: int, seq_len: int,
            shared: bool) -> list[tuple[str, tuple[int, ...]]]:  # fmt: skip
    """(llama2.c array name, shape) in file order."""
    head = dim // n_heads
    kv_dim = n_kv_heads * head
    arrays = [
        ("token_embedding_table", (vocab, dim)),
        ("rms_att_weight", (n_layers, dim)),
        ("wq", (n_layers, dim, dim)),
        ("wk", (n_layers, kv_dim, dim)),
        ("wv", (n_layers, kv_dim, dim)),
        ("wo", (n_layers, dim, dim)),
        ("rms_ffn_weight", (n_layers, dim)),
        ("w1", (n_layers, hidden, dim)),
        ("w2", (n_layers, dim, hidden)),
        ("w3", (n_layers, hidden, dim)),
        ("rms_final_weight", (dim,)),
        ("freq_cis_real", (seq_len, head // 2)),
        ("freq_cis_imag", (seq_len, head // 2)),
    ]
    if not shared:
        arrays.append(("wcls", (vocab, dim)))
    return arrays


# llama2.c per-layer array -> GGUF tensor name suffix
_LAYER_NAMES = {
    "rms_att_weight": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
    "rms_ffn_weight": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up",
}  # fmt: skip
_GLOBAL_NAMES = {"token_embedding_table": "token_embd.weight", "rms_final_weight": "output_norm.weight",
                 "wcls": "output.weight"}  # fmt: skip


def read_llama2c_config(path: str | os.PathLike) -> tuple[ModelConfig, bool, int]:
    """Validate a checkpoint's header and size: (config, shared_classifier, expected file bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) >= 8 and struct.unpack_from("<I", head)[0] == NEW_FORMAT_MAGIC:
        version = struct.unpack_from("<i", head, 4)[0]
        raise UnsupportedModelError(
            f"{path}: llama2.c export version {version} (magic 'ak42') is not supported; "
            "use a legacy (version 0, float32) checkpoint or a GGUF file"
        )
    if len(head) < HEADER.size:
        raise ModelFormatError(f"{path}: truncated llama2.c header ({size} bytes, expected at least {HEADER.size})")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = HEADER.unpack(head)
    shared = vocab > 0
    vocab = abs(vocab)
    fields = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                  vocab_size=vocab, seq_len=seq_len)  # fmt: skip
    bad = [f"{k}={v}" for k, v in fields.items() if v <= 0]
    if bad:
        raise ModelFormatError(f"{path}: not a llama2.c checkpoint: header sizes must be positive, got {', '.join(bad)}")
    if dim % n_heads or n_heads % n_kv_heads or (dim // n_heads) % 2:
        raise ModelFormatError(
            f"{path}: bad llama2.c header: dim {dim} must be a multiple of n_heads {n_heads}, "
            f"n_heads a multiple of n_kv_heads {n_kv_heads}, and the head size even"
        )
    n_values = sum(int(np.prod(shape, dtype=object)) for _, shape in _layout(*fields.values(), shared))
    expected = HEADER.size + F32 * n_values
    if size != expected:
        raise ModelFormatError(
            f"{path}: llama2.c checkpoint should be {expected} bytes for its header "
            f"({', '.join(f'{k}={v}' for k, v in fields.items())}, shared_classifier={shared}), but it is {size} bytes"
        )
    config = ModelConfig(
        arch="llama",
        n_layers=n_layers,
        dim=dim,
        ffn_dim=hidden,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=vocab,
        context_length=seq_len,
        norm_eps=1e-5,  # run.c's rmsnorm
        rope_base=10000.0,  # run.c's RoPE
        tied_output=shared,
        name=path.stem,
    )
    return config, shared, expected


def _f32_tensor(name: str, raw: np.ndarray, shape: tuple[int, ...]) -> QTensor:
    """A QTensor over raw uint8 bytes of float32 values; 1-D tensors are one row, as gguf_loader has them."""
    rows = shape[0] if len(shape) == 2 else 1
    return QTensor(name, GGMLQuantizationType.F32, shape, raw.reshape(rows, raw.size // rows))  # (rows, row_bytes)


def load_llama2c(path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None) -> LoadedModel:
    """Open a llama2.c checkpoint: validated config, zero-copy F32 weights under GGUF names, optional tokenizer.

    tokenizer_path: a llama2.c tokenizer.bin; when None, ``tokenizer.bin`` next to the
    checkpoint is used if present, else the model has no tokenizer.
    """
    path = Path(path)
    config, shared, _ = read_llama2c_config(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)  # read-only; views keep the map alive
    advise_huge_pages(mm)

    weights: dict[str, QTensor] = {}
    offset = HEADER.size
    for name, shape in _layout(config.dim, config.ffn_dim, config.n_layers, config.n_heads, config.n_kv_heads,
                               config.vocab_size, config.context_length, shared):  # fmt: skip
        nbytes = F32 * int(np.prod(shape))
        raw = mm[offset : offset + nbytes]
        offset += nbytes
        if name in _LAYER_NAMES:
            per_layer = raw.reshape(config.n_layers, -1)  # (n_layers, layer_bytes)
            for i in range(config.n_layers):
                gguf_name = f"blk.{i}.{_LAYER_NAMES[name]}.weight"
                weights[gguf_name] = _f32_tensor(gguf_name, per_layer[i], shape[1:])
        elif name in _GLOBAL_NAMES:
            weights[_GLOBAL_NAMES[name]] = _f32_tensor(_GLOBAL_NAMES[name], raw, shape)
        # freq_cis_real / freq_cis_imag: RoPE tables, recomputed by the model

    if tokenizer_path is None and (path.parent / "tokenizer.bin").is_file() and path.name != "tokenizer.bin":
        tokenizer_path = path.parent / "tokenizer.bin"
    spec = None
    if tokenizer_path is not None:
        spec = load_llama2c_tokenizer(tokenizer_path)
        if len(spec.tokens) != config.vocab_size:
            raise ModelFormatError(
                f"{tokenizer_path}: tokenizer has {len(spec.tokens)} tokens but {path} expects {config.vocab_size}"
            )
    metadata = {
        "general.architecture": "llama",
        "general.name": config.name,
        "llama2c.version": 0,
        "llama2c.shared_classifier": shared,
        "llama2c.tokenizer": str(tokenizer_path) if tokenizer_path is not None else None,
    }
    return LoadedModel(config, weights, spec, metadata, str(path))


def load_llama2c_tokenizer(path: str | os.PathLike) -> TokenizerSpec:
    """Read llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length, bytes.

    llama2.c's export writes SentencePiece pieces with '▁' turned into ' ' and <s>, </s> as
    '\\n<s>\\n', '\\n</s>\\n'; both are undone here, so the spec matches the .model file's.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    data = path.read_bytes()
    if len(data) < 4 or struct.unpack_from("<i", data)[0] <= 0:
        raise ModelFormatError(f"{path}: not a llama2.c tokenizer (needs a positive int32 max_token_length first)")
    tokens: list[str] = []
    scores: list[float] = []
    pos = 4
    while pos < len(data):  # one entry per token; the count is not stored
        if pos + 8 > len(data):
            raise ModelFormatError(f"{path}: truncated entry for token {len(tokens)} at byte {pos}")
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        if n < 0 or pos + n > len(data):
            raise ModelFormatError(f"{path}: token {len(tokens)} claims {n} bytes at byte {pos}, file has {len(data)}")
        try:
            text = data[pos : pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError(f"{path}: token {len(tokens)} is not valid UTF-8") from None
        pos += n
        tokens.append(text)
        scores.append(score)
    if len(tokens) < 3:
        raise ModelFormatError(f"{path}: llama2.c tokenizer has {len(tokens)} tokens, expected <unk>, <s>, </s> and more")

    special = {0: "<unk>", 1: "<s>", 2: "</s>"}
    tokens = [special.get(i, t.replace(" ", "▁")) for i, t in enumerate(tokens)]
    types = np.full(len(tokens), NORMAL, dtype=np.int32)  # (vocab,)
    types[0], types[1], types[2] = UNKNOWN, CONTROL, CONTROL
    is_byte = [len(t) == 6 and t[:3] == "<0x" and t[5] == ">" and all(c in _HEX for c in t[3:5]) for t in tokens]
    types[np.flatnonzero(is_byte)] = BYTE
    return TokenizerSpec(
        kind="llama",
        tokens=tokens,
        scores=np.asarray(scores, dtype=np.float32),  # (vocab,)
        token_types=types,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        add_bos=True,
        add_space_prefix=True,
    )
