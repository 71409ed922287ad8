"""Reference block formats: ggml bytes <-> float32, one small class per format.

``dequantize`` is bit-exact with ``gguf.quants.dequantize`` (and so with ggml's
reference ``dequantize_row_*``); it is the oracle the Numba kernels are tested against.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from ..errors import InvalidArgumentError, UnsupportedModelError
from . import floats, kquants, legacy  # noqa: F401  (register the formats)
from .base import FORMATS, BlockFormat

SUPPORTED: frozenset[GGMLQuantizationType] = frozenset(FORMATS)

_CHUNK_VALUES = 1 << 22  # quantize in slices of about this many values to bound temporary memory


def format_of(qtype: GGMLQuantizationType | int) -> type[BlockFormat]:
    """The format class for a ggml type; UnsupportedModelError for types llamalab cannot read."""
    try:
        qtype = GGMLQuantizationType(qtype)
    except ValueError:
        raise UnsupportedModelError(f"unknown ggml tensor type {qtype!r}") from None
    fmt = FORMATS.get(qtype)
    if fmt is None:
        names = ", ".join(sorted(t.name for t in SUPPORTED))
        raise UnsupportedModelError(f"tensor type {qtype.name} is not supported (supported: {names})")
    return fmt


def block_size(qtype: GGMLQuantizationType) -> int:
    """Values per block of a ggml type (1 for float formats, 32, or 256 for K-quants)."""
    return format_of(qtype).block_size


def type_size(qtype: GGMLQuantizationType) -> int:
    """Bytes per block of a ggml type."""
    return format_of(qtype).type_size


def dequantize(data: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """uint8 (..., row_bytes) -> a new float32 array (..., cols), cols = row_bytes / type_size * block_size."""
    fmt = format_of(qtype)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim == 0:
        raise InvalidArgumentError(f"dequantize: data must be a uint8 array (..., row_bytes), got {data.dtype} {data.shape}")
    row_bytes = data.shape[-1]
    if row_bytes % fmt.type_size:
        raise InvalidArgumentError(
            f"dequantize: {fmt.qtype.name} rows of {row_bytes} bytes are not whole {fmt.type_size}-byte blocks"
        )
    cols = row_bytes // fmt.type_size * fmt.block_size
    blocks = np.ascontiguousarray(data).reshape(-1, fmt.type_size)  # (n_blocks, type_size)
    with np.errstate(over="ignore", invalid="ignore"):  # random bytes may hold inf/nan scales
        values = fmt.dequantize_blocks(blocks)  # (n_blocks, block_size)
    return values.reshape(*data.shape[:-1], cols)


def quantize(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """float32 (..., cols) -> uint8 (..., row_bytes); cols must be a multiple of the block size.

    The 32-value formats use gguf-py's quantizers (ggml's reference rounding); F16 and
    BF16 round to nearest even as ggml does; the K-quants use the simple scale fitting
    in ``kfit.py`` (not llama.cpp's, but within the error bounds stated in its tests).
    """
    fmt = format_of(qtype)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % fmt.block_size:
        raise InvalidArgumentError(
            f"quantize: {fmt.qtype.name} needs rows whose length is a multiple of {fmt.block_size}, got shape {x.shape}"
        )
    if fmt.block_size > 1 and not np.isfinite(x).all():
        raise InvalidArgumentError(f"quantize: {fmt.qtype.name} input holds NaN or infinity")
    row_bytes = x.shape[-1] // fmt.block_size * fmt.type_size
    blocks = np.ascontiguousarray(x).reshape(-1, fmt.block_size)  # (n_blocks, block_size)
    out = np.empty((len(blocks), fmt.type_size), np.uint8)  # (n_blocks, type_size)
    step = max(1, _CHUNK_VALUES // fmt.block_size)
    for start in range(0, len(blocks), step):  # slices of many blocks, not a per-block loop
        out[start : start + step] = fmt.quantize_blocks(blocks[start : start + step])
    return out.reshape(*x.shape[:-1], row_bytes)


__all__ = ["FORMATS", "SUPPORTED", "BlockFormat", "block_size", "dequantize", "format_of", "quantize", "type_size"]
