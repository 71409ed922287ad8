"""Per-machine kernel choices, measured at run time and read by compiled code.

Some choices cannot be made from the CPU's flags: whether the float row kernels should
prefetch their weights in software depends on how good the hardware prefetchers are
(floats.py measures it). Compiled code cannot read Python state, and Numba freezes global
arrays into the machine code as constants, so the choices live in one int64 array bound
to an external symbol (as pool.py's shared state is): cached machine code reads the
current values in every process.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

F32_SOFT_PREFETCH = 0  # 1: the F32 row kernel prefetches its weights in software (the default)
KQUANT_INT8 = 1  # 1: the K-quants' row dots take the 8-bit activation (products.set_matvec_backend)
F16_PREFETCH = 2  # F16/BF16 rows shorter than floats.LONG_COLS: floats.PF_L1 (the default), PF_L2 or PF_NONE
HALF_X = 3  # 1: F16/BF16 rows take x rounded to f16, scaled (activation.halve_x; products.set_matvec_backend)
F16_X32 = 4  # 1: ... unless floats.calibrate_f16 measured x in float32 faster on this machine: then they take x
_N = 8
_SYMBOL = "llamalab_tuning"
_I64 = ir.IntType(64)
_values = np.zeros(_N, np.int64)  # lives as long as the process
_values[F32_SOFT_PREFETCH] = 1
_values[F16_PREFETCH] = 1  # floats.PF_L1
ll.add_symbol(_SYMBOL, _values.ctypes.data)


@intrinsic
def flag(typingctx, i):
    """The current value of choice i (a plain load: the values change only between calls)."""

    def codegen(context, builder, sig, args):
        mod = builder.module
        g = mod.globals.get(_SYMBOL)
        if g is None:
            g = ir.GlobalVariable(mod, ir.ArrayType(_I64, _N), _SYMBOL)
            g.linkage = "external"
        return builder.load(builder.gep(g, [ir.Constant(_I64, 0), args[0]]))

    return types.int64(i), codegen


def get(i: int) -> int:
    return int(_values[i])


def set(i: int, value: int) -> None:  # noqa: A001 - the module is used as tuning.set
    _values[i] = value
