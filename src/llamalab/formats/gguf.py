"""GGUF files → (ModelConfig, weights, TokenizerSpec). The only module that knows GGUF keys.

Parsing goes through the ``gguf`` package's reader (memory-mapped, zero-copy tensor views),
subclassed so that every count, length and offset the file declares is checked against the
file's size before it is used; everything it returns is validated here again before the
model or any kernel sees it. Rules follow llama.cpp's ``gguf.cpp``: at most 4 dimensions,
no nested arrays, no duplicate keys or tensor names, row lengths in whole blocks.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.gguf_reader import ReaderField

from ..runtime.config import ModelConfig
from ..errors import LlamalabError, ModelFormatError, UnsupportedModelError
from ..runtime.tensor import QTensor
from ..text.tokenizer.spec import TokenizerSpec
from .pages import advise_huge_pages

GGUF_MAGIC = b"GGUF"
HEADER_BYTES = 24  # magic u32, version u32, tensor_count u64, kv_count u64
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-char key, value type, smallest value
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset
MAX_DIMS = 4  # GGML_MAX_DIMS

# the fewest bytes one array entry of each type occupies (a string: its u64 length)
_SCALARS = GGUFReader.gguf_scalar_to_np
_MIN_ENTRY_BYTES = {t: np.dtype(d).itemsize for t, d in _SCALARS.items()} | {GGUFValueType.STRING: 8}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """What every loader returns: the model never sees the file format."""

    config: ModelConfig | None  # None only from load_gguf(runnable=False) on a file llamalab cannot run
    weights: dict[str, QTensor]  # GGUF tensor names: "token_embd.weight", "blk.0.attn_q.weight", ...
    tokenizer: TokenizerSpec | None
    metadata: dict = field(default_factory=dict)
    path: str = ""


def _utf8(raw: np.ndarray, what: str, offset: int) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"{what} at byte {offset} is not valid UTF-8") from None


@dataclass
class _Strings:
    strings: list[str]
    nbytes: int  # of the whole array value: entry type, length and the strings


class _StringArrayField:
    """A metadata array of strings, decoded once while reading, in ``ReaderField``'s shape
    (offset, name, parts, data, types, contents()). The stock field keeps two numpy views per
    entry: for SmolLM2's 49k tokens and 49k merges that took ~1 s to build and ~30 MB."""

    def __init__(self, offset: int, name: str, parts: list, types: list, strings: list[str]):
        self.offset, self.name, self.parts, self.data, self.types = offset, name, parts, [], types
        self.strings = strings

    def contents(self, index_or_slice: int | slice = slice(None)):
        return self.strings[index_or_slice]


class _Reader(GGUFReader):
    """GGUFReader that never trusts a size in the file.

    The stock reader loops over whatever array length or dimension count the file claims;
    here each is checked against the bytes that remain, so a forged header ends in a
    ModelFormatError (no path: ``_open`` adds it) instead of a long loop or a huge allocation.
    Views are plain ndarrays over the mmap: numpy.memmap's per-slice bookkeeping made the
    stock reader spend ~4 s on a 50k-token vocabulary.
    """

    def _raw(self) -> np.ndarray:
        """The mapped file as a plain uint8 ndarray (made once)."""
        raw = self.__dict__.get("_raw_view")
        if raw is None:
            raw = self.__dict__["_raw_view"] = self.data.view(np.ndarray)
        return raw

    def _get(self, offset, dtype, count=1, override_order=None):
        raw = self._raw()
        dt = np.dtype(dtype)
        count = int(count)
        if offset + dt.itemsize * count > len(raw):
            raise ModelFormatError(f"unexpected end of file at byte {offset} (wanted {count} x {dt.name})")
        arr = raw[offset : offset + dt.itemsize * count].view(dt)
        return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    def _left(self, offset: int) -> int:
        return max(len(self.data) - offset, 0)

    def _get_str(self, offset):
        slen = self._get(offset, np.uint64)
        n = int(slen[0])
        if n > self._left(offset + 8):
            raise ModelFormatError(f"string at byte {offset} claims {n} bytes but only {self._left(offset + 8)} remain")
        return slen, self._get(offset + 8, np.uint8, n)

    def _build_fields(self, offs, count):
        for i in range(count):
            start = offs
            try:
                klen, kdata = self._get_str(offs)
            except ModelFormatError as e:
                raise ModelFormatError(f"metadata entry {i} of {count}: {e}") from None
            key = _utf8(kdata, "metadata key", start)
            offs += 8 + len(kdata)
            try:
                vtype = self._get(offs, np.uint32)
                size, parts, idxs, types = self._get_field_parts(offs + 4, vtype[0])
            except ModelFormatError as e:
                raise ModelFormatError(f"metadata key {key!r}: {e}") from None
            if key in self.fields:
                raise ModelFormatError(f"metadata key {key!r} appears twice")
            field_parts = [klen, kdata, vtype, *parts]
            if isinstance(idxs, _Strings):  # an array of strings, already decoded
                self.fields[key] = _StringArrayField(start, key, field_parts, types, idxs.strings)
            else:
                self.fields[key] = ReaderField(start, key, field_parts, [k + 3 for k in idxs], types)
            offs += 4 + size
        return offs

    def _get_field_parts(self, orig_offs, raw_type):
        """(bytes used, parts, indexes of the data parts, value types) of one value."""
        gtype = self._value_type(raw_type, orig_offs)
        if gtype == GGUFValueType.STRING:
            slen, sdata = self._get_str(orig_offs)
            return 8 + len(sdata), [slen, sdata], [1], [gtype]
        if gtype in _SCALARS:
            val = self._get(orig_offs, _SCALARS[gtype])
            return val.nbytes, [val], [0], [gtype]
        # an array: entry type u32, length u64, then the entries
        itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        sub = self._value_type(itype[0], orig_offs)
        if sub == GGUFValueType.ARRAY:
            raise ModelFormatError(f"nested array at byte {orig_offs} (GGUF arrays hold scalars or strings)")
        n, offs = int(alen[0]), orig_offs + 12
        if n * _MIN_ENTRY_BYTES[sub] > self._left(offs):
            raise ModelFormatError(
                f"array at byte {orig_offs} claims {n} {sub.name} entries, more than the {self._left(offs)} bytes left can hold"
            )
        parts, types = [itype, alen], [GGUFValueType.ARRAY, sub]
        if sub in _SCALARS:  # one view of all the entries, not one per entry
            vals = self._get(offs, _SCALARS[sub], n)
            return 12 + vals.nbytes, [*parts, vals], [2], types
        strings = self._strings(offs, n)
        return strings.nbytes, [*parts, self._get(offs, np.uint8, strings.nbytes - 12)], strings, types

    def _strings(self, offs: int, n: int) -> _Strings:
        """The n strings (u64 length, then UTF-8 bytes) from byte offs, each length checked."""
        raw, start, strings = self._raw(), offs, []
        buf, end = memoryview(raw), len(raw)
        swapped = ">" if sys.byteorder == "little" else "<"
        unpack = struct.Struct("=Q" if self.byte_order == "I" else f"{swapped}Q").unpack_from
        for i in range(n):
            if offs + 8 > end:
                raise ModelFormatError(f"unexpected end of file at byte {offs} (string {i} of {n})")
            (length,) = unpack(buf, offs)
            if length > end - offs - 8:
                raise ModelFormatError(f"string at byte {offs} claims {length} bytes but only {end - offs - 8} remain")
            try:
                strings.append(str(buf[offs + 8 : offs + 8 + length], "utf-8"))
            except UnicodeDecodeError:
                raise ModelFormatError(f"string {i} at byte {offs} is not valid UTF-8") from None
            offs += 8 + length
        return _Strings(strings, 12 + offs - start)

    @staticmethod
    def _value_type(raw, offset: int) -> GGUFValueType:
        try:
            return GGUFValueType(int(raw))
        except ValueError:
            raise ModelFormatError(f"unknown value type {int(raw)} at byte {offset}") from None

    def _build_tensor_info(self, offs, count):
        fields = []
        for i in range(count):
            try:
                f = self._get_tensor_info_field(offs)
            except ModelFormatError as e:
                raise ModelFormatError(f"tensor info {i} of {count}: {e}") from None
            offs += sum(int(part.nbytes) for part in f.parts)
            fields.append(f)
        return offs, fields

    def _get_tensor_info_field(self, orig_offs):
        name_len, name_data = self._get_str(orig_offs)
        name = _utf8(name_data, "tensor name", orig_offs)
        offs = orig_offs + 8 + len(name_data)
        n_dims = self._get(offs, np.uint32)
        if not 1 <= n_dims[0] <= MAX_DIMS:
            raise ModelFormatError(f"tensor {name!r} has {n_dims[0]} dimensions (expected 1 to {MAX_DIMS})")
        dims = self._get(offs + 4, np.uint64, n_dims[0])
        offs += 4 + dims.nbytes
        raw_dtype = self._get(offs, np.uint32)
        offset_tensor = self._get(offs + 4, np.uint64)
        parts = [name_len, name_data, n_dims, dims, raw_dtype, offset_tensor]
        return ReaderField(orig_offs, name, parts, [1, 3, 4, 5])

    def _build_tensors(self, start_offs, fields):
        """Check type, shape and data range of every tensor before the stock code makes views."""
        names = set()
        for f in fields:
            name, dims, raw_type, rel = f.name, [int(d) for d in f.parts[3]], int(f.parts[4][0]), int(f.parts[5][0])
            if name in names:
                raise ModelFormatError(f"tensor {name!r} appears twice")
            names.add(name)
            try:
                qtype = GGMLQuantizationType(raw_type)
            except ValueError:
                raise UnsupportedModelError(f"tensor {name!r} has unknown ggml type {raw_type}") from None
            block, type_size = GGML_QUANT_SIZES[qtype]
            if dims[0] % block:
                raise ModelFormatError(
                    f"tensor {name!r} row length {dims[0]} is not a multiple of {qtype.name}'s block size {block}"
                )
            nbytes = math.prod(dims) // block * type_size
            start = start_offs + rel
            if rel % self.alignment:
                raise ModelFormatError(f"tensor {name!r} data offset {rel} is not a multiple of the alignment {self.alignment}")
            if start + nbytes > len(self.data):
                raise ModelFormatError(
                    f"tensor {name!r} ({qtype.name}, dims {dims}) needs bytes {start}..{start + nbytes} "
                    f"but the file has {len(self.data)}"
                )
        super()._build_tensors(start_offs, fields)


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
        hint = " (a big-endian file?)" if struct.unpack(">I", head[4:8])[0] in (2, 3) else ""
        raise ModelFormatError(f"{path}: GGUF version {version} is not supported (expected 2 or 3){hint}")
    if n_kv > size // MIN_KV_BYTES:
        raise ModelFormatError(f"{path}: header claims {n_kv} metadata entries, more than a {size}-byte file can hold")
    if n_tensors > size // MIN_TENSOR_INFO_BYTES:
        raise ModelFormatError(f"{path}: header claims {n_tensors} tensors, more than a {size}-byte file can hold")


def _open(path: Path) -> _Reader:
    try:
        _check_header(path)
        return _Reader(path, "r")
    except LlamalabError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, KeyError, IndexError, OverflowError, TypeError, struct.error, MemoryError) as e:
        raise ModelFormatError(f"{path}: malformed GGUF ({type(e).__name__}: {e})") from None


def read_metadata(reader: GGUFReader) -> dict:
    """All key/value pairs as Python values; long arrays (vocabulary) included."""
    meta = {}
    for key, f in reader.fields.items():
        try:
            meta[key] = f.contents()
        except UnicodeDecodeError:
            raise ModelFormatError(f"metadata key {key!r} holds a string that is not valid UTF-8") from None
        except (ValueError, IndexError, TypeError) as e:
            raise ModelFormatError(f"metadata key {key!r} is malformed ({e})") from None
    return meta


def _is(value, kind: type) -> bool:
    """int: an integer (not bool); float: any real number; otherwise isinstance."""
    if kind in (int, float):
        number = (int,) if kind is int else (int, float)
        return isinstance(value, number) and not isinstance(value, bool)
    return isinstance(value, kind)


def _require(meta: dict, key: str, kind: type, path: Path):
    if key not in meta:
        raise ModelFormatError(f"{path}: missing metadata key {key!r}")
    return _optional(meta, key, kind, None, path)


def _optional(meta: dict, key: str, kind: type, default, path: Path):
    if key not in meta:
        return default
    value = meta[key]
    if not _is(value, kind):
        raise ModelFormatError(f"{path}: metadata {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return kind(value)


# keys every architecture reads: `{arch}.` suffix -> (config field, type, required)
COMMON_KEYS = {
    "block_count": ("n_layers", int, True),
    "embedding_length": ("dim", int, True),
    "feed_forward_length": ("ffn_dim", int, True),
    "attention.head_count": ("n_heads", int, True),
    "attention.head_count_kv": ("n_kv_heads", int, False),
    "context_length": ("context_length", int, True),
    "vocab_size": ("vocab_size", int, False),
    "attention.layer_norm_rms_epsilon": ("norm_eps", float, False),
    "rope.freq_base": ("rope_base", float, False),
    "rope.dimension_count": ("rope_dim", int, False),
    "attention.key_length": ("head_size", int, False),
    "attention.scale": ("attn_scale", float, False),
    "rope.scaling.factor": ("rope_scale", float, False),
    "rope.scaling.original_context_length": ("rope_orig_context", int, False),
    "rope.scaling.attn_factor": ("rope_attn_factor", float, False),
}
# BPE pre-tokenizers for which llama.cpp adds a BOS when the file does not say (llama-vocab.cpp)
BOS_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "tekken",
            "chameleon")
ROPE_SCALINGS = ("none", "linear", "yarn")  # llama3's scaling comes as the rope_freqs tensor
# keys whose non-default value would change the computation in ways no layer here implements
REFUSED_KEYS = {"expert_count": 0, "attn_logit_softcapping": 0.0, "attention.causal": True,
                "rope.dimension_sections": None, "embedding_scale": None, "residual_scale": None,
                "logit_scale": None, "attention.value_length": "head_size"}


def config_from_metadata(meta: dict, path: Path, vocab_size: int) -> ModelConfig:
    """Build and sanity-check a ModelConfig from `{arch}.*` keys, as the architecture's spec says."""
    from ..arch import ARCHS, spec_for

    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFormatError(f"{path}: missing metadata key 'general.architecture'")
    spec = spec_for(arch)
    if spec is None:
        raise UnsupportedModelError(
            f"{path}: architecture {arch!r} is not supported (supported: {', '.join(ARCHS)}, mistral)"
        )
    fields: dict = {"arch": spec.name, "rope_neox": spec.rope_neox, "vocab_size": vocab_size, **spec.defaults}
    keys = {k: (f, kind, req) for k, (f, kind, req) in COMMON_KEYS.items()}
    for k, f in spec.keys.items():
        keys[k] = (f, type(ModelConfig.__dataclass_fields__[f].default), False)
    for key, (f, kind, required) in keys.items():
        full = f"{arch}.{key}"
        value = _require(meta, full, kind, path) if required else _optional(meta, full, kind, None, path)
        if value is not None:
            fields[f] = value
    fields.setdefault("n_kv_heads", fields["n_heads"])
    _check_refused(meta, arch, fields, path)
    scaling = meta.get(f"{arch}.rope.scaling.type", "none" if "rope_scale" not in fields else "linear")
    if scaling not in ROPE_SCALINGS:
        raise UnsupportedModelError(
            f"{path}: rope scaling type {scaling!r} ({arch}.rope.scaling.type) is not supported "
            f"(supported: {', '.join(ROPE_SCALINGS)})"
        )
    fields["rope_scaling"] = scaling
    factor = fields.pop("rope_scale", 1.0) or 1.0
    fields["rope_scale"] = 1.0 / factor if scaling in ("linear", "yarn") else 1.0
    if spec.embed_scale_sqrt_dim:
        fields["embed_scale"] = float(fields["dim"]) ** 0.5
    name = meta.get("general.name")
    cfg = ModelConfig(name=name if isinstance(name, str) else path.stem, **fields)
    _check_config(cfg, path)
    return cfg


def _check_refused(meta: dict, arch: str, fields: dict, path: Path) -> None:
    for key, ok in REFUSED_KEYS.items():
        full = f"{arch}.{key}"
        if full not in meta:
            continue
        value = meta[full]
        if ok == "head_size":  # value heads narrower or wider than key heads
            ok = fields.get("head_size") or fields["dim"] // max(fields["n_heads"], 1)
        if ok is None or value != ok:
            raise UnsupportedModelError(f"{path}: metadata {full!r} = {value!r} is not supported by llamalab's layer")


def _check_config(cfg: ModelConfig, path: Path) -> None:
    checks = [  # in order: each may rely on the ones before (no division by a zero head count)
        (lambda: cfg.n_layers > 0, "block_count must be positive"),
        (lambda: cfg.dim > 0 and cfg.ffn_dim > 0, "embedding_length and feed_forward_length must be positive"),
        (lambda: cfg.n_heads > 0 and (cfg.head_size > 0 or cfg.dim % cfg.n_heads == 0),
         "embedding_length must be a multiple of head_count (or attention.key_length given)"),
        (lambda: cfg.n_kv_heads > 0 and cfg.n_heads % cfg.n_kv_heads == 0,
         "head_count must be a multiple of head_count_kv"),
        (lambda: cfg.head_dim % 2 == 0 and 0 <= cfg.rope_dim <= cfg.head_dim and cfg.rope_dim % 2 == 0,
         "the head size must be even, rope.dimension_count even and at most the head size"),
        (lambda: cfg.vocab_size > 0 and cfg.context_length > 0, "vocab_size and context_length must be positive"),
        (lambda: 0 < cfg.norm_eps < math.inf and 0 < cfg.rope_base < math.inf and 0 < cfg.rope_base_local < math.inf,
         "layer_norm_rms_epsilon and rope.freq_base must be positive and finite"),
        (lambda: 0 < cfg.rope_scale < math.inf and 0 < cfg.rope_attn_factor < math.inf, "rope.scaling.factor must be positive"),
        (lambda: cfg.sliding_window >= 0 and cfg.swa_pattern >= 0, "sliding_window and its pattern must be >= 0"),
        (lambda: cfg.attn_scale >= 0 and cfg.final_softcap >= 0, "attention.scale and softcapping must be >= 0"),
    ]
    for ok, what in checks:
        if not ok():
            raise ModelFormatError(f"{path}: bad hyper-parameters: {what}")


def _tensor(t, path: Path) -> QTensor:
    """A QTensor (rows, row_bytes) over the reader's view; the reader has checked type, dims and range."""
    qtype = GGMLQuantizationType(int(t.tensor_type))
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGUF lists ne0 (the row length) first
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows, row_bytes = math.prod(shape[:-1]), shape[-1] // block * type_size
    data = t.data.view(np.uint8).reshape(-1)
    if data.nbytes != rows * row_bytes:
        raise ModelFormatError(
            f"{path}: tensor {t.name!r} data runs past the end of the file ({data.nbytes} of {rows * row_bytes} bytes present)"
        )
    return QTensor(t.name, qtype, shape, data.reshape(rows, row_bytes))  # (rows, row_bytes)


def _dims(cfg: ModelConfig, shape: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(cfg.n_rot // 2 if d == "rope_pairs" else getattr(cfg, d) for d in shape)


def _apply_splits(spec, cfg: ModelConfig, w: dict[str, QTensor], path: Path) -> dict[str, QTensor]:
    """Cut fused weights (Phi-3's attn_qkv, gate+up ffn_up) into zero-copy row views."""
    for i in range(cfg.n_layers if spec.splits else 0):
        p = f"blk.{i}."
        if not any(p + s.source in w for s in spec.splits):
            break  # no (more) fused layers: check_weights names what is missing
        for split in spec.splits:
            src = w.get(p + split.source)
            rows = [getattr(cfg, r) for _, r in split.parts]
            if src is None or src.rows != sum(rows) or len(src.shape) != 2:
                continue  # not fused in this file: the parts are checked as ordinary tensors
            start = 0
            for (name, _), n in zip(split.parts, rows):
                w[p + name] = QTensor(p + name, src.qtype, (n, src.cols), src.data[start : start + n])
                start += n
            if split.source not in (name for name, _ in split.parts):
                del w[p + split.source]
    return w


def check_weights(cfg: ModelConfig, w: dict[str, QTensor], path: Path) -> ModelConfig:
    """Every tensor the architecture needs is present, of the right shape and a format llamalab
    runs; optional ones switch features on (biases, untied output); a tensor nothing reads is an
    error. Returns the config with those features set."""
    from ..arch import spec_for
    from ..quants import SUPPORTED

    spec = spec_for(cfg.arch)
    cfg = dataclasses.replace(cfg, tied_output="output.weight" not in w,
                              qkv_bias=cfg.qkv_bias or "blk.0.attn_q.bias" in w)
    expected = itertools.chain(((t, t.name) for t in spec.global_tensors),
                               ((t, f"blk.{i}.{t.name}") for i in range(cfg.n_layers) for t in spec.layer_tensors))
    known = set()
    for t, name in expected:  # stops at the first missing one: block_count cannot run away
        known.add(name)
        if name not in w:
            if t.required:
                raise ModelFormatError(f"{path}: missing tensor {name!r}")
            continue
        shape = _dims(cfg, t.shape)
        if w[name].shape != shape:
            raise ModelFormatError(f"{path}: tensor {name!r} has shape {w[name].shape}, expected {shape}")
        if w[name].qtype not in SUPPORTED:
            raise UnsupportedModelError(f"{path}: tensor {name!r} has type {w[name].qtype.name}, which llamalab cannot run")
    if cfg.qkv_bias:
        for i in range(cfg.n_layers):
            for b in ("attn_q.bias", "attn_k.bias", "attn_v.bias"):
                if f"blk.{i}.{b}" not in w:
                    raise ModelFormatError(f"{path}: missing tensor 'blk.{i}.{b}' (other layers have q/k/v biases)")
    unread = [n for n in w if n not in known]
    if unread:
        more = f" (and {len(unread) - 1} more)" if len(unread) > 1 else ""
        raise UnsupportedModelError(
            f"{path}: tensor {unread[0]!r}{more} is not read by llamalab's {cfg.arch} layer; refusing to run without it"
        )
    return cfg


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
    if not all(isinstance(t, str) for t in tokens):
        raise ModelFormatError(f"{path}: 'tokenizer.ggml.tokens' should be an array of strings")
    n = len(tokens)

    def array(key, dtype):
        v = meta.get(key)
        if v is None:
            return None
        arr = np.asarray(v) if isinstance(v, list) else np.asarray([v])
        integral = np.dtype(dtype).kind == "i"
        ok = arr.dtype.kind in ("biu" if integral else "biuf")
        if ok and integral and arr.size:
            ok = np.iinfo(dtype).min <= arr.min() and arr.max() <= np.iinfo(dtype).max
        if not ok:
            raise ModelFormatError(f"{path}: {key!r} should be an array of {np.dtype(dtype).name} numbers")
        if arr.shape != (n,):
            raise ModelFormatError(f"{path}: {key!r} has {arr.size} entries, expected {n} (one per token)")
        with np.errstate(over="ignore"):  # a float64 score beyond float32's range becomes inf
            return arr.astype(dtype)

    def token_id(key):
        v = meta.get(key)
        if v is None:
            return None
        if not _is(v, int) or not 0 <= v < n:
            raise ModelFormatError(f"{path}: {key!r} = {v!r} is not a token id in [0, {n})")
        return v

    def text(key):
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            raise ModelFormatError(f"{path}: metadata {key!r} should be a string, got {type(v).__name__}")
        return v

    def flag(key, default):
        v = meta.get(key, default)
        if not isinstance(v, (bool, int)):
            raise ModelFormatError(f"{path}: metadata {key!r} should be a bool, got {type(v).__name__}")
        return bool(v)

    merges = meta.get("tokenizer.ggml.merges") or []
    if not isinstance(merges, list) or not all(isinstance(m, str) for m in merges):
        raise ModelFormatError(f"{path}: 'tokenizer.ggml.merges' should be an array of strings")
    return TokenizerSpec(
        kind=kind,
        tokens=tokens,
        scores=array("tokenizer.ggml.scores", np.float32),
        token_types=array("tokenizer.ggml.token_type", np.int32),
        merges=merges,
        pre=text("tokenizer.ggml.pre"),
        bos_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_id=token_id("tokenizer.ggml.eos_token_id"),
        eot_id=token_id("tokenizer.ggml.eot_token_id"),
        eom_id=token_id("tokenizer.ggml.eom_token_id"),
        unk_id=token_id("tokenizer.ggml.unknown_token_id"),
        pad_id=token_id("tokenizer.ggml.padding_token_id"),
        add_bos=flag("tokenizer.ggml.add_bos_token", kind == "llama" or text("tokenizer.ggml.pre") in BOS_PRES),
        add_eos=flag("tokenizer.ggml.add_eos_token", False),
        add_space_prefix=flag("tokenizer.ggml.add_space_prefix", kind == "llama"),
        chat_template=text("tokenizer.chat_template"),
        model_name=text("general.name"),
    )


def load_gguf(path: str | os.PathLike, runnable: bool = True) -> LoadedModel:
    """Open a GGUF model: validated config, zero-copy weights, tokenizer spec.

    With runnable=False, a file whose architecture or weights llamalab cannot run still opens
    (config None, the reason in metadata["llamalab.unsupported"]): ``inspect`` and ``tokenize``
    describe any parseable file."""
    from ..arch import spec_for

    path = Path(path)
    reader = _open(path)
    advise_huge_pages(reader._raw())  # before the weights are first read: their pages map 2 MiB at a time
    try:
        meta = read_metadata(reader)
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None
    spec = tokenizer_from_metadata(meta, path)
    weights = {t.name: _tensor(t, path) for t in reader.tensors}
    try:
        cfg = config_from_metadata(meta, path, len(spec.tokens) if spec else 0)
        weights = _apply_splits(spec_for(cfg.arch), cfg, weights, path)
        cfg = check_weights(cfg, weights, path)
    except UnsupportedModelError as e:
        if runnable:
            raise
        meta["llamalab.unsupported"] = str(e).removeprefix(f"{path}: ")
        return LoadedModel(None, weights, spec, meta, str(path))
    if spec is not None and len(spec.tokens) != cfg.vocab_size:
        raise ModelFormatError(f"{path}: vocabulary has {len(spec.tokens)} tokens but the model expects {cfg.vocab_size}")
    template = spec_for(cfg.arch).chat_template
    if spec is not None and spec.chat_template is None and template is not None:
        spec = dataclasses.replace(spec, chat_template=template)
    return LoadedModel(cfg, weights, spec, meta, str(path))
