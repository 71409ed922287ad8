"""The activation side of the integer dot products: x (f32) -> 8-bit blocks of 32.

As in llama.cpp, x is quantized once per product and every weight block is then
dotted with it in integers: x[i] ~= xd[i // 32] * xq[i], xq int8 in [-127, 127].
The per-block numbers live in one flat float32 array ``xm`` of length 4 * nb
(nb = cols // 32), in three sections so that kernels can load 8 or 16 at once:

    xm[0:nb]        xd     scale of block b (max|x| / 127)
    xm[nb:2nb]      xsum   exact float sum of block b    (the ``+ m`` terms)
    xm[2nb:4nb]     xsq16  sum of xq over each 16 values (the ``- offset`` terms)

Rounding error: at most xd/2 per value, i.e. 0.4% of the block's largest |x|.
"""

from __future__ import annotations

import numpy as np
from numba import njit

QBLOCK = 32
META_PER_BLOCK = 4

FASTMATH = {"contract", "arcp", "nsz"}


@njit(cache=True, fastmath=FASTMATH)
def quantize_q8(x, xq, xm):
    """x: f32 (cols,), cols % 32 == 0 -> xq: int8 (cols,), xm: f32 (4 * cols // 32,)."""
    nb = x.shape[0] // QBLOCK
    for b in range(nb):
        o = b * QBLOCK
        amax = np.float32(0.0)
        total = np.float32(0.0)
        for j in range(QBLOCK):
            v = x[o + j]
            amax = max(amax, abs(v))
            total += v
        d = amax / np.float32(127.0)
        inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        for j in range(16):
            q = np.rint(x[o + j] * inv)
            xq[o + j] = np.int8(q)
            s0 += q
        for j in range(16, 32):
            q = np.rint(x[o + j] * inv)
            xq[o + j] = np.int8(q)
            s1 += q
        xm[b] = d
        xm[nb + b] = total
        xm[2 * nb + 2 * b] = s0
        xm[2 * nb + 2 * b + 1] = s1
