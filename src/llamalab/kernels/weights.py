"""Weights as the kernels take them: validated once, then looked up by identity.

``plan_of(w)`` checks a ``QTensor`` (type, shape, byte layout, contiguity) and keeps a
read-only view of its bytes, so that every kernel sees one array type (one compiled
specialization) and never a buffer shorter than its shape says. ``prepare`` also
converts types that have no kernel.
"""

from __future__ import annotations

import sys
import weakref

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from ..runtime.tensor import QTensor
from . import floats
from .rows import KERNEL_TYPES


def supports(qtype) -> bool:
    """True if the kernels run this ggml type directly (others go through ``prepare``)."""
    try:
        return GGMLQuantizationType(qtype) in KERNEL_TYPES
    except ValueError:
        return False


class WeightPlan:
    """A validated weight: type code, read-only data view, shape."""

    __slots__ = ("ref", "qt", "data", "rows", "cols", "name")

    def __init__(self, w: QTensor):
        name = getattr(w, "name", "?")
        try:
            qtype = GGMLQuantizationType(w.qtype)
        except ValueError:
            raise UnsupportedModelError(f"tensor '{name}': unknown ggml type {w.qtype!r}") from None
        if qtype not in KERNEL_TYPES:
            raise UnsupportedModelError(
                f"tensor '{name}': type {qtype.name} has no compiled kernel; call kernels.prepare(w) first"
            )
        if len(w.shape) != 2 or min(w.shape) < 1:
            raise ModelFormatError(f"tensor '{name}': expected a 2-D shape (rows, cols), got {tuple(w.shape)}")
        rows, cols = (int(s) for s in w.shape)
        block, size = GGML_QUANT_SIZES[qtype]
        if cols % block:
            raise ModelFormatError(f"tensor '{name}': {qtype.name} needs cols divisible by {block}, got {cols}")
        data = w.data
        want = (rows, cols // block * size)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != want:
            got = f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
            raise ModelFormatError(f"tensor '{name}': data must be uint8 {want} for {qtype.name} {w.shape}, got {got}")
        if not data.flags.c_contiguous:
            raise ModelFormatError(f"tensor '{name}': data must be C-contiguous")
        view = data.view()
        view.flags.writeable = False  # one compiled specialization: read-only uint8 (rows, row_bytes)
        self.ref = weakref.ref(w)
        self.qt, self.data, self.rows, self.cols, self.name = int(qtype), view, rows, cols, name
        if qtype == GGMLQuantizationType.F32:
            floats.calibrate_f32()  # once per process: how this machine streams F32 rows
        elif qtype in (GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            floats.calibrate_f16()  # and F16/BF16 rows


_plans: dict[int, WeightPlan] = {}


def plan_of(w) -> WeightPlan:
    """The validated form of weight w (cached while w lives)."""
    p = _plans.get(id(w))
    if p is not None and p.ref() is w:
        return p
    if not isinstance(w, QTensor):
        raise InvalidArgumentError(f"expected a QTensor weight, got {type(w).__name__}")
    p = WeightPlan(w)
    key = id(w)
    _plans[key] = p
    weakref.finalize(w, _plans.pop, key, None)
    return p


def prepare(w: QTensor) -> QTensor:
    """Validate w for the kernels; a type without a kernel is converted once (to Q8_0, or
    F32 when cols is not a multiple of 32), with a one-line notice on stderr."""
    if supports(w.qtype):
        plan_of(w)
        return w
    from gguf.quants import dequantize as gguf_dequantize

    name = getattr(w, "name", "?")
    try:
        qtype = GGMLQuantizationType(w.qtype)
        values = gguf_dequantize(np.asarray(w.data), qtype).reshape(w.shape)  # (rows, cols) float32
    except (ValueError, NotImplementedError) as err:
        raise UnsupportedModelError(f"tensor '{name}': type {w.qtype!r} cannot be read ({err})") from None
    target = GGMLQuantizationType.Q8_0 if w.shape[-1] % 32 == 0 else GGMLQuantizationType.F32
    from ..quants import quantize

    data = quantize(values.astype(np.float32), target)
    print(f"llamalab: tensor '{name}' converted {qtype.name} -> {target.name} (no compiled kernel for {qtype.name})",
          file=sys.stderr)
    out = QTensor(name, target, tuple(w.shape), data)
    plan_of(out)
    return out
