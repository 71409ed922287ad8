"""Memory-mapped reading of Hugging Face ``.safetensors`` checkpoints (one file or sharded).

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each
name to ``{dtype, shape, data_offsets}``, then the raw little-endian data. The
``safetensors`` package cannot hand BF16 tensors to NumPy (NumPy has no bfloat16), and
most checkpoints are BF16, so this reads the header itself and returns zero-copy
``np.memmap`` views, widening BF16 to float32 only when a tensor is asked for.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip
_MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class TensorRef:
    file: Path
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


class Checkpoint:
    """All tensors of a checkpoint directory by name; ``get(name)`` -> float32 or float16 array."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({self.directory / f for f in weight_map.values()})
        else:
            files = sorted(self.directory.glob("*.safetensors"))
        if not files:
            raise ModelFormatError(f"{self.directory}: no .safetensors files (expected model.safetensors or a sharded index)")
        self.tensors: dict[str, TensorRef] = {}
        self._maps: dict[Path, np.memmap] = {}
        for f in files:
            if not f.is_file():
                raise ModelFormatError(f"{f}: listed in model.safetensors.index.json but missing")
            self.tensors.update(_read_header(f))

    def _map(self, f: Path) -> np.memmap:
        if f not in self._maps:
            self._maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
        return self._maps[f]

    def raw(self, name: str) -> np.ndarray:
        """The stored array, zero-copy (BF16 as uint16 bits)."""
        t = self.tensors[name]
        buf = self._map(t.file)[t.start : t.start + t.nbytes]
        return buf.view(_DTYPES[t.dtype]).reshape(t.shape)

    def get(self, name: str) -> np.ndarray:
        """float16 stays float16 (a view); BF16 and others become float32."""
        t = self.tensors[name]
        a = self.raw(name)
        if t.dtype == "BF16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        if t.dtype in ("F16", "F32"):
            return a
        return a.astype(np.float32)


def _read_header(path: Path) -> dict[str, TensorRef]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFormatError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise ModelFormatError(f"{path}: not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{path}: safetensors header is not JSON ({e})") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise ModelFormatError(f"{path}: tensor {name} has dtype {dtype!r} (supported: {', '.join(_DTYPES)})")
        a, b = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        if b - a != int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize or 8 + n + b > size:
            raise ModelFormatError(f"{path}: tensor {name} data offsets {a}..{b} do not fit its shape or the file")
        out[name] = TensorRef(file=path, dtype=dtype, shape=shape, start=8 + n + a, nbytes=b - a)
    return out
