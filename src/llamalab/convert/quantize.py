"""``quantize_file``: rewrite a GGUF with every tensor in the type a llama.cpp mix picks for it.

Streams tensor by tensor: the input is memory-mapped, each tensor is dequantized to
float32 in slices of rows, encoded (``quants.encode``, bit-exact with llama-quantize) into
its output buffer and written, so memory stays near one output tensor plus one slice.
The file is written next to the target under a temporary name and renamed at the end,
so a failed or interrupted run never leaves a half-written OUT.gguf.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from .. import quants
from ..errors import InvalidArgumentError, ModelFormatError
from ..quants.encode import encode
from .mixes import MixPlanner, ModelShape, parse_file_type
from .publish import staged

_SLICE_VALUES = 1 << 22  # dequantize + encode this many values at a time
_SKIP_KEYS = {"general.architecture", "general.file_type", "general.quantization_version"}
_FLOATS = (T.F32, T.F16, T.BF16)


@dataclass
class QuantizeResult:
    path: Path
    file_type: str
    types: dict[str, str]  # tensor name -> ggml type name written
    in_bytes: int
    out_bytes: int
    seconds: float


def _open(path: Path) -> GGUFReader:
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file")
    try:
        return GGUFReader(path)
    except Exception as e:  # gguf-py raises ValueError/struct.error/... on a non-GGUF or truncated file
        raise ModelFormatError(f"{path}: not a readable GGUF file ({e})") from None


def _field_value(field):
    vtype = field.types[0]
    if vtype == GGUFValueType.ARRAY:
        return field.contents(), vtype, field.types[-1]
    return field.contents(), vtype, None


def _model_shape(reader: GGUFReader) -> ModelShape:
    def get(key, default=0):
        f = reader.fields.get(key)
        if f is None:
            return default
        v = f.contents()
        return v[0] if isinstance(v, list) else v  # per-layer arrays (e.g. head_count_kv): the first layer's, as n_gqa() does

    arch = get("general.architecture", "llama")
    n_heads = int(get(f"{arch}.attention.head_count", 0))
    return ModelShape(arch=arch, n_layers=int(get(f"{arch}.block_count", 0)), n_heads=n_heads,
                      n_kv_heads=int(get(f"{arch}.attention.head_count_kv", n_heads)),
                      n_experts=int(get(f"{arch}.expert_count", 0)))


def _shape(t) -> tuple[int, ...]:
    """numpy order (..., rows, cols) from ggml's ne (cols first)."""
    return tuple(int(n) for n in reversed(t.shape.tolist()))


def _convert(t, src_type: T, dst: T, shape: tuple[int, ...], advance, threads: int | None) -> np.ndarray:
    """One tensor -> uint8 (rows, row_bytes) in ``dst``, in slices of rows."""
    raw = np.asarray(t.data).view(np.uint8)
    cols = shape[-1]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    src_row = raw.size // rows
    raw = raw.reshape(rows, src_row)
    out_fmt = quants.format_of(dst)
    out = np.empty((rows, cols // out_fmt.block_size * out_fmt.type_size), np.uint8)
    step = max(1, _SLICE_VALUES // cols)
    for r in range(0, rows, step):
        x = quants.dequantize(raw[r : r + step], src_type)  # (step, cols) float32
        out[r : r + step] = encode(x, dst, threads)
        advance(min(step, rows - r) * cols)
    return out


def quantize_file(src: str | os.PathLike, dst: str | os.PathLike, file_type: str, *, pure: bool = False,
                  output_type: str | None = None, token_embedding_type: str | None = None,
                  threads: int | None = None, progress: bool = True) -> QuantizeResult:
    """Write ``dst``: ``src`` with its tensors quantized to ``file_type`` (a llama.cpp mix or type name).

    ``pure``: every quantizable tensor in the default type (llama-quantize --pure).
    ``output_type`` / ``token_embedding_type``: override those two tensors' type."""
    src, dst = Path(src), Path(dst)
    name, ftype, _ = parse_file_type(file_type)
    overrides = [None if v is None else _tensor_type(v) for v in (output_type, token_embedding_type)]
    reader = _open(src)

    tensors = list(reader.tensors)
    planner = MixPlanner(name, _model_shape(reader), [t.name for t in tensors], pure=pure,
                         output_type=overrides[0], token_embedding_type=overrides[1])
    plan = []
    requantized = set()
    for t in tensors:
        cur = T(t.tensor_type)
        shape = _shape(t)
        new = planner.choose(t.name, shape, cur)
        if new != cur:
            quants.format_of(cur)  # UnsupportedModelError for a type llamalab cannot read
            if cur not in _FLOATS:
                requantized.add(cur.name)
        plan.append((t, cur, new, shape))
    if requantized:
        print(f"warning: {src.name} holds quantized tensors ({', '.join(sorted(requantized))}); they are dequantized "
              "and quantized again, which loses more quality than quantizing from F16/F32", file=sys.stderr)

    arch = str(reader.fields["general.architecture"].contents()) if "general.architecture" in reader.fields else "llama"
    start = time.perf_counter()
    with staged(dst) as tmp:
        writer = GGUFWriter(tmp, arch=arch)
        for key, field in reader.fields.items():
            if key in _SKIP_KEYS or key.startswith("GGUF."):
                continue
            val, vtype, sub = _field_value(field)
            writer.add_key_value(key, val, vtype, sub_type=sub)
        writer.add_quantization_version(2)
        writer.add_file_type(int(ftype))
        for t, cur, new, shape in plan:
            fmt = quants.format_of(new) if new != cur else None
            if fmt is None:
                nbytes = int(t.n_bytes)
                writer.add_tensor_info(t.name, _byte_shape(shape, cur), np.dtype(np.uint8), nbytes, raw_dtype=cur)
            else:
                row_bytes = shape[-1] // fmt.block_size * fmt.type_size
                rows = int(np.prod(shape[:-1]))
                writer.add_tensor_info(t.name, (*shape[:-1], row_bytes), np.dtype(np.uint8), rows * row_bytes, raw_dtype=new)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(int(np.prod(s)) for _, _, _, s in plan)
        with _progress(progress, total, f"quantize {src.name} -> {name}") as advance:
            for t, cur, new, shape in plan:
                if new == cur:
                    writer.write_tensor_data(np.asarray(t.data).view(np.uint8).reshape(-1))
                    advance(int(np.prod(shape)))
                else:
                    writer.write_tensor_data(_convert(t, cur, new, shape, advance, threads).reshape(-1))
        writer.close()
    return QuantizeResult(path=dst, file_type=name, types={t.name: new.name for t, _, new, _ in plan},
                          in_bytes=src.stat().st_size, out_bytes=dst.stat().st_size,
                          seconds=time.perf_counter() - start)


def _byte_shape(shape: tuple[int, ...], qtype: T) -> tuple[int, ...]:
    fmt = quants.format_of(qtype)
    return (*shape[:-1], shape[-1] // fmt.block_size * fmt.type_size)


def _tensor_type(name: str) -> T:
    try:
        t = T[name.strip().upper()]
    except KeyError:
        t = None
    from ..quants.encode import ENCODABLE

    if t not in ENCODABLE:
        raise InvalidArgumentError(f"unknown tensor type {name!r} (expected one of: {', '.join(sorted(x.name for x in ENCODABLE))})")
    return t


class _progress:
    """A rich progress bar over values written (or nothing), as a context manager yielding advance(n)."""

    def __init__(self, enabled: bool, total: int, what: str):
        self.enabled, self.total, self.what = enabled, total, what

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                            TimeElapsedColumn(), TimeRemainingColumn(), transient=False, console=Console(stderr=True))
        self.bar.__enter__()
        task = self.bar.add_task(self.what, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
