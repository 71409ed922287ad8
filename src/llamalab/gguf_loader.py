"""GGUF files → (ModelConfig, weights, TokenizerSpec). The only module that knows GGUF keys.

Parsing goes through the ``gguf`` package's reader (memory-mapped, zero-copy tensor views);
everything it returns is validated here before the model or any kernel sees it.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

from .config import ModelConfig
from .errors import ModelFormatError, UnsupportedModelError
from .tensor import QTensor
from .tokenizer.spec import TokenizerSpec

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHS = ("llama",)
HEADER_BYTES = 24  # magic u32, version u32, tensor_count u64, kv_count u64
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-char key, value type, smallest value
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """What every loader returns: the model never sees the file format."""

    config: ModelConfig
    weights: dict[str, QTensor]  # GGUF tensor names: "token_embd.weight", "blk.0.attn_q.weight", ...
    tokenizer: TokenizerSpec | None
    metadata: dict = field(default_factory=dict)
    path: str = ""


class _Reader(GGUFReader):
    """GGUFReader whose views are plain ndarrays over the mmap.

    numpy.memmap's per-slice bookkeeping makes the stock reader spend ~4 s on a
    50k-token vocabulary; slicing a plain view of the same buffer is ~4x faster
    and still copies nothing.
    """

    def _get(self, offset, dtype, count=1, override_order=None):
        raw = self.__dict__.get("_raw")
        if raw is None:
            raw = self.__dict__["_raw"] = self.data.view(np.ndarray)
        dt = np.dtype(dtype)
        count = int(count)
        arr = raw[offset : offset + dt.itemsize * count].view(dt)[:count]
        if len(arr) != count:
            raise ModelFormatError(f"unexpected end of file at byte {offset}")
        return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))


def _check_header(path: Path) -> None:
    """Reject what is not a GGUF file before the reader trusts any count in it."""
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, expected a .gguf file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise ModelFormatError(f"{path}: not a GGUF file (magic {head[:4]!r}, expected b'GGUF')")
    if len(head) < HEADER_BYTES:
        raise ModelFormatError(f"{path}: truncated GGUF header ({size} bytes)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:])
    if version not in (2, 3):
        raise ModelFormatError(f"{path}: GGUF version {version} is not supported (expected 2 or 3)")
    if n_kv > size // MIN_KV_BYTES:
        raise ModelFormatError(f"{path}: header claims {n_kv} metadata entries, more than a {size}-byte file can hold")
    if n_tensors > size // MIN_TENSOR_INFO_BYTES:
        raise ModelFormatError(f"{path}: header claims {n_tensors} tensors, more than a {size}-byte file can hold")


def _open(path: Path) -> _Reader:
    _check_header(path)
    try:
        return _Reader(path, "r")
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None
    except (ValueError, KeyError, IndexError, OverflowError, TypeError, struct.error, MemoryError) as e:
        raise ModelFormatError(f"{path}: malformed GGUF ({type(e).__name__}: {e})") from None


def read_metadata(reader: GGUFReader) -> dict:
    """All key/value pairs as Python values; long arrays (vocabulary) included."""
    meta = {}
    for key, f in reader.fields.items():
        try:
            meta[key] = f.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"metadata key {key!r} is malformed ({e})") from None
    return meta


def _require(meta: dict, key: str, kind: type, path: Path):
    if key not in meta:
        raise ModelFormatError(f"{path}: missing metadata key {key!r}")
    value = meta[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind in (int, float) else isinstance(value, kind)
    if not ok:
        raise ModelFormatError(f"{path}: metadata {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return kind(value)


def config_from_metadata(meta: dict, path: Path, vocab_size: int) -> ModelConfig:
    """Build and sanity-check a ModelConfig from `{arch}.*` keys."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFormatError(f"{path}: missing metadata key 'general.architecture'")
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedModelError(
            f"{path}: architecture {arch!r} is not supported yet (supported: {', '.join(SUPPORTED_ARCHS)})"
        )
    get = lambda key, kind: _require(meta, f"{arch}.{key}", kind, path)  # noqa: E731
    n_heads = get("attention.head_count", int)
    cfg = ModelConfig(
        arch=arch,
        n_layers=get("block_count", int),
        dim=get("embedding_length", int),
        ffn_dim=get("feed_forward_length", int),
        n_heads=n_heads,
        n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", n_heads)),
        vocab_size=int(meta.get(f"{arch}.vocab_size", vocab_size)),
        context_length=get("context_length", int),
        norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_dim=int(meta.get(f"{arch}.rope.dimension_count", 0)),
        name=str(meta.get("general.name", path.stem)),
    )
    checks = [
        (cfg.n_layers > 0, "block_count must be positive"),
        (cfg.dim > 0 and cfg.ffn_dim > 0, "embedding_length and feed_forward_length must be positive"),
        (cfg.n_heads > 0 and cfg.dim % cfg.n_heads == 0, "embedding_length must be a multiple of head_count"),
        (cfg.n_kv_heads > 0 and cfg.n_heads % cfg.n_kv_heads == 0, "head_count must be a multiple of head_count_kv"),
        (cfg.head_dim % 2 == 0 and 0 <= cfg.rope_dim <= cfg.head_dim and cfg.rope_dim % 2 == 0,
         "rope.dimension_count must be even and at most the head size"),
        (cfg.vocab_size > 0 and cfg.context_length > 0, "vocab_size and context_length must be positive"),
        (cfg.norm_eps > 0 and cfg.rope_base > 0, "layer_norm_rms_epsilon and rope.freq_base must be positive"),
    ]
    for ok, what in checks:
        if not ok:
            raise ModelFormatError(f"{path}: bad hyper-parameters: {what}")
    return cfg


def _tensor(t, path: Path) -> QTensor:
    try:
        qtype = GGMLQuantizationType(int(t.tensor_type))
    except ValueError:
        raise UnsupportedModelError(f"{path}: tensor {t.name!r} has unknown block type {int(t.tensor_type)}") from None
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists ne0 (the row length) first
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    cols = shape[-1]
    if cols % block:
        raise ModelFormatError(f"{path}: tensor {t.name!r} row length {cols} is not a multiple of {qtype.name}'s block {block}")
    expect = rows * (cols // block) * type_size
    data = t.data.view(np.uint8).reshape(-1)
    if data.nbytes != expect:
        raise ModelFormatError(
            f"{path}: tensor {t.name!r} data runs past the end of the file ({data.nbytes} of {expect} bytes present)"
        )
    return QTensor(t.name, qtype, shape, data.reshape(rows, expect // rows))  # (rows, row_bytes)


def _check_shapes(cfg: ModelConfig, w: dict[str, QTensor], path: Path) -> None:
    want = {"token_embd.weight": (cfg.vocab_size, cfg.dim), "output_norm.weight": (cfg.dim,)}
    if not cfg.tied_output:
        want["output.weight"] = (cfg.vocab_size, cfg.dim)
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        want |= {
            b + "attn_norm.weight": (cfg.dim,),
            b + "attn_q.weight": (cfg.dim, cfg.dim),
            b + "attn_k.weight": (cfg.kv_dim, cfg.dim),
            b + "attn_v.weight": (cfg.kv_dim, cfg.dim),
            b + "attn_output.weight": (cfg.dim, cfg.dim),
            b + "ffn_norm.weight": (cfg.dim,),
            b + "ffn_gate.weight": (cfg.ffn_dim, cfg.dim),
            b + "ffn_up.weight": (cfg.ffn_dim, cfg.dim),
            b + "ffn_down.weight": (cfg.dim, cfg.ffn_dim),
        }
    for name, shape in want.items():
        if name not in w:
            raise ModelFormatError(f"{path}: missing tensor {name!r}")
        if w[name].shape != shape:
            raise ModelFormatError(f"{path}: tensor {name!r} has shape {w[name].shape}, expected {shape}")


def tokenizer_from_metadata(meta: dict, path: Path) -> TokenizerSpec | None:
    """The vocabulary and its rules from `tokenizer.ggml.*` keys (None when the file has none)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        return None
    if kind not in ("llama", "gpt2"):
        raise UnsupportedModelError(f"{path}: tokenizer {kind!r} is not supported (supported: llama, gpt2)")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelFormatError(f"{path}: missing metadata key 'tokenizer.ggml.tokens'")
    n = len(tokens)

    def array(key, dtype):
        v = meta.get(key)
        if v is None:
            return None
        arr = np.asarray(v, dtype=dtype)
        if arr.shape != (n,):
            raise ModelFormatError(f"{path}: {key!r} has {arr.size} entries, expected {n} (one per token)")
        return arr

    def token_id(key):
        v = meta.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or not 0 <= v < n:
            raise ModelFormatError(f"{path}: {key!r} = {v!r} is not a token id in [0, {n})")
        return v

    eot = token_id("tokenizer.ggml.eot_token_id")
    return TokenizerSpec(
        kind=kind,
        tokens=tokens,
        scores=array("tokenizer.ggml.scores", np.float32),
        token_types=array("tokenizer.ggml.token_type", np.int32),
        merges=list(meta.get("tokenizer.ggml.merges") or []),
        pre=meta.get("tokenizer.ggml.pre"),
        bos_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_id=token_id("tokenizer.ggml.eos_token_id"),
        eot_id=eot,
        unk_id=token_id("tokenizer.ggml.unknown_token_id"),
        pad_id=token_id("tokenizer.ggml.padding_token_id"),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", kind == "llama")),
        chat_template=meta.get("tokenizer.chat_template"),
    )


def load_gguf(path: str | os.PathLike) -> LoadedModel:
    """Open a GGUF model: validated config, zero-copy weights, tokenizer spec."""
    path = Path(path)
    reader = _open(path)
    meta = read_metadata(reader)
    spec = tokenizer_from_metadata(meta, path)
    weights = {t.name: _tensor(t, path) for t in reader.tensors}
    cfg = config_from_metadata(meta, path, len(spec.tokens) if spec else 0)
    if "output.weight" not in weights:
        cfg = dataclasses.replace(cfg, tied_output=True)
    _check_shapes(cfg, weights, path)
    if spec is not None and len(spec.tokens) != cfg.vocab_size:
        raise ModelFormatError(f"{path}: vocabulary has {len(spec.tokens)} tokens but the model expects {cfg.vocab_size}")
    return LoadedModel(cfg, weights, spec, meta, str(path))
