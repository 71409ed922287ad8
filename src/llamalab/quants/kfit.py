"""Reference scale fitting for the K-quant quantizers: simple, vectorized, not llama.cpp's search.

Every super-block of 256 values is cut into sub-blocks that share a quantized scale
(and, for the affine formats, a quantized min). Scales are rounded *up* at every
step (f16 super-scales, integer sub-scales), so each sub-block's range always fits
its integer grid and the only error left is rounding to the grid: at most half a
step for the affine formats, one step for the symmetric ones (their grid has one
more negative level than positive, and the larger-magnitude value takes it).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError


def f16_ceil(x: np.ndarray) -> np.ndarray:
    """The smallest float16 >= x, elementwise, for finite x >= 0 (inf if x > 65504)."""
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    below = h.astype(np.float32) < x
    return np.where(below, np.nextafter(h, np.float16(np.inf)), h)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, 0 where b == 0 (an all-zero sub-block)."""
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape), np.float32), where=b != 0)


def _super_scale(need: np.ndarray, levels: int, qtype_name: str) -> np.ndarray:
    """need float32 (n, n_sub) >= 0 -> f16 (n,) super-scale with levels * scale >= max(need)."""
    scale = f16_ceil(need.max(axis=1) / np.float32(levels) * np.float32(1 + 2**-20))
    if not np.isfinite(scale).all():
        raise InvalidArgumentError(f"quantize: {qtype_name} cannot hold values this large (its f16 scales overflow)")
    return scale


def fit_affine(x: np.ndarray, qmax: int, levels: int, qtype_name: str):
    """Fit x ~ (d * sc) * q - (dmin * m), q in 0..qmax, sc and m in 0..levels.

    x: float32 (n, n_sub, sub). Returns d, dmin float16 (n,); sc, m uint8 (n, n_sub);
    q uint8 (n, n_sub, sub).
    """
    lo = np.minimum(x.min(axis=2), 0)  # (n, n_sub); mins are subtracted, so never positive
    hi = x.max(axis=2)  # (n, n_sub)

    dmin = _super_scale(-lo, levels, qtype_name)  # (n,)
    dmin32 = dmin.astype(np.float32)[:, None]  # (n, 1)
    m = np.minimum(np.ceil(_safe_div(-lo, dmin32)), levels)  # (n, n_sub)
    ml = dmin32 * m  # the offset the dequantizer subtracts, >= -lo

    need = np.maximum(hi + ml, 0) / np.float32(qmax)  # step that reaches hi from -ml
    d = _super_scale(need, levels, qtype_name)  # (n,)
    d32 = d.astype(np.float32)[:, None]  # (n, 1)
    sc = np.minimum(np.ceil(_safe_div(need, d32)), levels)  # (n, n_sub)
    dl = d32 * sc  # (n, n_sub)

    q = np.rint(_safe_div(x + ml[..., None], dl[..., None]))  # (n, n_sub, sub)
    q = np.clip(q, 0, qmax).astype(np.uint8)
    return d, dmin, sc.astype(np.uint8), m.astype(np.uint8), q


def fit_symmetric(x: np.ndarray, qneg: int, qpos: int, levels: int, qtype_name: str):
    """Fit x ~ (d * sc) * q, q in -qneg..qpos, sc in -levels..levels.

    The largest-magnitude value of each sub-block maps to -qneg (its sign goes into sc).
    x: float32 (n, n_sub, sub). Returns d float16 (n,); sc int8 (n, n_sub); q int8 (n, n_sub, sub).
    """
    extreme = np.take_along_axis(x, np.abs(x).argmax(axis=2)[..., None], axis=2)[..., 0]  # (n, n_sub)
    step = -extreme / np.float32(qneg)  # signed step, |step| * qneg = max |x|

    d = _super_scale(np.abs(step), levels, qtype_name)  # (n,)
    d32 = d.astype(np.float32)[:, None]  # (n, 1)
    sc = np.sign(step) * np.minimum(np.ceil(_safe_div(np.abs(step), d32)), levels)  # (n, n_sub)
    dl = d32 * sc  # (n, n_sub), |dl| >= |step|

    q = np.rint(_safe_div(x, dl[..., None]))  # (n, n_sub, sub)
    q = np.clip(q, -qneg, qpos).astype(np.int8)
    return d, sc.astype(np.int8), q
