"""Bit-exact ports of ggml's reference K-quant quantizers (quantize_row_q{2..6}_K_ref).

A super-block of 256 values is cut into 16 or 8 sub-blocks; each sub-block's scale (and
min) comes from a small search (``make_qkx2_quants``, ``make_q3_quants``,
``make_qx_quants``), then the scales are themselves quantized to 4, 6 or 8 bits and the
values requantized against the rounded scales. The searches run in float32 in C's
operation order so that the bytes equal llama-quantize's.

Each ``encode_*`` takes float32 (n_blocks, 256) and fills uint8 (n_blocks, type_size).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .ggml_scalar import f32, fp16_bits_to_fp32, fp32_to_fp16_bits, nearest_int, put_f16

_JIT = dict(cache=True, nogil=True, error_model="numpy")
_EPS = f32(1e-15)  # GROUP_MAX_EPS


@njit(inline="always")
def _clamp(v, lo, hi):
    return max(lo, min(hi, v))


@njit(inline="always")
def make_qkx2_quants(x, w, L, Laux, nmax, rmin, rdelta, nstep, use_mad):
    """Affine fit x ~ scale * L - the_min, L in 0..nmax, by a grid of nstep+1 scales.

    x, w float32 (n,); L, Laux uint8 scratch (n,). Returns (scale, the_min)."""
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if mn > 0:
        mn = f32(0.0)
    if mx == mn:
        for i in range(n):
            L[i] = 0
        return f32(0.0), -mn
    iscale = f32(nmax) / (mx - mn)
    scale = f32(1.0) / iscale
    best_error = f32(0.0)
    for i in range(n):
        L[i] = _clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax)
        diff = scale * f32(L[i]) + mn - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += w[i] * diff
    if nstep < 1:
        return scale, -mn
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * f32(step) + f32(nmax)) / (mx - mn)
        sum_l = f32(0.0)
        sum_l2 = f32(0.0)
        sum_xl = f32(0.0)
        for i in range(n):
            q = _clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax)
            Laux[i] = q
            lf = f32(q)
            sum_l += w[i] * lf
            sum_l2 += w[i] * lf * lf
            sum_xl += w[i] * lf * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = f32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = f32(0.0)
            for i in range(n):
                diff = this_scale * f32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += w[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


@njit(inline="always")
def _signed_max(x):
    mx = f32(0.0)
    amax = f32(0.0)
    for i in range(x.shape[0]):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    return mx, amax


@njit(inline="always")
def make_q3_quants(x, L, nmax):
    """Symmetric fit with coordinate-descent refinement (do_rmse=true); L int8 (n,) in 0..2*nmax-1."""
    n = x.shape[0]
    mx, amax = _signed_max(x)
    if amax < _EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(-nmax) / mx
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        q = _clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
        L[i] = q
        w = x[i] * x[i]
        sumlx += w * x[i] * f32(q)
        suml2 += w * f32(q) * f32(q)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            li = f32(L[i])
            slx = sumlx - w * x[i] * li
            if slx > 0:
                sl2 = suml2 - w * li * li
                new_l = _clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1)
                if new_l != L[i]:
                    slx += w * x[i] * f32(new_l)
                    sl2 += w * f32(new_l) * f32(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > 0 else f32(0.0)


@njit(inline="always")
def make_qx_quants_rmse1(x, L, nmax):
    """Symmetric fit, weights x*x (rmse_type=1, no imatrix), a grid of 18 scales; L int8 in 0..2*nmax-1."""
    n = x.shape[0]
    mx, amax = _signed_max(x)
    if amax < _EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(-nmax) / mx
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        q = _clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
        L[i] = q + nmax
        w = x[i] * x[i]
        sumlx += w * x[i] * f32(q)
        suml2 += w * f32(q) * f32(q)
    scale = sumlx / suml2 if suml2 != 0 else f32(0.0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(step)) / mx
        sumlx = f32(0.0)
        suml2 = f32(0.0)
        for i in range(n):
            q = _clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
            w = x[i] * x[i]
            sumlx += w * x[i] * f32(q)
            suml2 += w * f32(q) * f32(q)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = nmax + _clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(inline="always")
def _pack_2bit(L, out, b, offset):
    """qs[j/4 + l] = L[j+l] | L[j+l+32] << 2 | L[j+l+64] << 4 | L[j+l+96] << 6, j in (0, 128)."""
    for j in range(0, 256, 128):
        for l in range(32):
            out[b, offset + j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6)) & 0xFF


@njit(**_JIT)
def encode_q2_k(x, out):
    # block_q2_K { u8 scales[16] (low nibble scale, high nibble min); u8 qs[64]; half d; half dmin; }
    for b in range(x.shape[0]):
        L = np.zeros(256, np.uint8)
        Laux = np.zeros(16, np.uint8)
        w = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        mins = np.empty(16, np.float32)
        max_scale = f32(0.0)
        max_min = f32(0.0)
        for j in range(16):
            xs = x[b, 16 * j : 16 * j + 16]
            for l in range(16):
                w[l] = abs(xs[l])
            s, m = make_qkx2_quants(xs, w, L[16 * j : 16 * j + 16], Laux, 3, f32(-0.5), f32(0.1), 15, True)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        sc = np.zeros(16, np.int64)
        if max_scale > 0:
            iscale = f32(15.0) / max_scale
            for j in range(16):
                sc[j] = nearest_int(iscale * scales[j]) & 0xFF
            d = put_f16(out, b, 80, max_scale / f32(15.0))
        else:
            d = put_f16(out, b, 80, f32(0.0))
        if max_min > 0:
            iscale = f32(15.0) / max_min
            for j in range(16):
                sc[j] = (sc[j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            dmin = put_f16(out, b, 82, max_min / f32(15.0))
        else:
            dmin = put_f16(out, b, 82, f32(0.0))
        for j in range(16):
            out[b, j] = sc[j]
            dl = d * f32(sc[j] & 0xF)
            if dl == 0:
                continue
            dm = dmin * f32(sc[j] >> 4)
            for ii in range(16):
                L[16 * j + ii] = _clamp(nearest_int((x[b, 16 * j + ii] + dm) / dl), 0, 3)
        _pack_2bit(L, out, b, 16)


@njit(**_JIT)
def encode_q3_k(x, out):
    # block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12] (16 six-bit, +32); half d; }
    for b in range(x.shape[0]):
        L = np.zeros(256, np.int8)
        scales = np.empty(16, np.float32)
        amax = f32(0.0)
        max_scale = f32(0.0)
        for j in range(16):
            s = make_q3_quants(x[b, 16 * j : 16 * j + 16], L[16 * j : 16 * j + 16], 4)
            scales[j] = s
            if abs(s) > amax:
                amax = abs(s)
                max_scale = s
        ps = np.zeros(12, np.int64)
        if max_scale != 0:
            iscale = f32(-32.0) / max_scale
            for j in range(16):
                q = nearest_int(iscale * scales[j])
                q = (q & 0xFF) - 256 if (q & 0xFF) > 127 else (q & 0xFF)  # C's int8_t
                q = _clamp(q, -32, 31) + 32
                if j < 8:
                    ps[j] = q & 0xF
                else:
                    ps[j - 8] |= (q & 0xF) << 4
                q >>= 4
                ps[j % 4 + 8] |= q << (2 * (j // 4))
            d = put_f16(out, b, 108, f32(1.0) / iscale)
        else:
            d = put_f16(out, b, 108, f32(0.0))
        for k in range(12):
            ps[k] &= 0xFF
            out[b, 96 + k] = ps[k]
        for j in range(16):
            s = ps[j] & 0xF if j < 8 else ps[j - 8] >> 4
            s = (s | (((ps[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
            dl = d * f32(s)
            if dl == 0:
                continue
            for ii in range(16):
                L[16 * j + ii] = _clamp(nearest_int(x[b, 16 * j + ii] / dl), -4, 3) + 4
        for k in range(32):
            out[b, k] = 0
        m = 0
        hm = 1
        for j in range(256):
            if L[j] > 3:
                out[b, m] |= hm
                L[j] -= 4
            m += 1
            if m == 32:
                m = 0
                hm <<= 1
        _pack_2bit(L, out, b, 32)


@njit(inline="always")
def _k4_fit(x, b, out, L, nmax, rmin, rdelta, nstep):
    """Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scales and mins packed as get_scale_min_k4 reads them.

    Fills d, dmin, scales[12] at out[b, 0:16] and L (256,) with the final codes."""
    Laux = np.zeros(32, np.uint8)
    w = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    mins = np.empty(8, np.float32)
    max_scale = f32(0.0)
    max_min = f32(0.0)
    for j in range(8):
        xs = x[b, 32 * j : 32 * j + 32]
        sum_x2 = f32(0.0)
        for l in range(32):
            sum_x2 += xs[l] * xs[l]
        av_x = f32(np.sqrt(sum_x2 / f32(32.0)))
        for l in range(32):
            w[l] = av_x + abs(xs[l])
        s, m = make_qkx2_quants(xs, w, L[32 * j : 32 * j + 32], Laux, nmax, rmin, rdelta, nstep, False)
        scales[j] = s
        mins[j] = m
        if s > max_scale:
            max_scale = s
        if m > max_min:
            max_min = m
    inv_scale = f32(63.0) / max_scale if max_scale > 0 else f32(0.0)
    inv_min = f32(63.0) / max_min if max_min > 0 else f32(0.0)
    ls = np.empty(8, np.int64)
    lm = np.empty(8, np.int64)
    for j in range(8):
        ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
    for j in range(4):  # the 12-byte layout of bits.pack_scale_min_k4
        out[b, 4 + j] = ls[j] | ((ls[4 + j] >> 4) << 6)
        out[b, 8 + j] = lm[j] | ((lm[4 + j] >> 4) << 6)
        out[b, 12 + j] = (ls[4 + j] & 0xF) | ((lm[4 + j] & 0xF) << 4)
    d = put_f16(out, b, 0, max_scale / f32(63.0))
    dmin = put_f16(out, b, 2, max_min / f32(63.0))
    for j in range(8):
        dl = d * f32(ls[j])
        if dl == 0:
            continue
        dm = dmin * f32(lm[j])
        for ii in range(32):
            L[32 * j + ii] = _clamp(nearest_int((x[b, 32 * j + ii] + dm) / dl), 0, nmax)


@njit(**_JIT)
def encode_q4_k(x, out):
    # block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; }  q(64c + l) low, q(64c + 32 + l) high nibble
    for b in range(x.shape[0]):
        L = np.zeros(256, np.uint8)
        _k4_fit(x, b, out, L, 15, f32(-1.0), f32(0.1), 20)
        for c in range(4):
            for l in range(32):
                out[b, 16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + l + 32] << 4)


@njit(**_JIT)
def encode_q5_k(x, out):
    # block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }
    for b in range(x.shape[0]):
        L = np.zeros(256, np.uint8)
        _k4_fit(x, b, out, L, 31, f32(-0.5), f32(0.1), 15)
        for k in range(32):
            out[b, 16 + k] = 0
        m1 = 1
        m2 = 2
        for c in range(4):
            for j in range(32):
                l1 = np.int64(L[64 * c + j])
                if l1 > 15:
                    l1 -= 16
                    out[b, 16 + j] |= m1
                l2 = np.int64(L[64 * c + j + 32])
                if l2 > 15:
                    l2 -= 16
                    out[b, 16 + j] |= m2
                out[b, 48 + 32 * c + j] = l1 | (l2 << 4)
            m1 <<= 2
            m2 <<= 2


@njit(**_JIT)
def encode_q6_k(x, out):
    # block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; }
    for b in range(x.shape[0]):
        L = np.zeros(256, np.int8)
        scales = np.empty(16, np.float32)
        max_scale = f32(0.0)
        max_abs = f32(0.0)
        for ib in range(16):
            s = make_qx_quants_rmse1(x[b, 16 * ib : 16 * ib + 16], L[16 * ib : 16 * ib + 16], 32)
            scales[ib] = s
            if abs(s) > max_abs:
                max_abs = abs(s)
                max_scale = s
        if max_abs < _EPS:
            for k in range(210):
                out[b, k] = 0
            continue
        iscale = f32(-128.0) / max_scale
        d = put_f16(out, b, 208, f32(1.0) / iscale)
        sc = np.empty(16, np.int64)
        for ib in range(16):
            q = min(127, nearest_int(iscale * scales[ib]))
            sc[ib] = (q & 0xFF) - 256 if (q & 0xFF) > 127 else (q & 0xFF)  # int8_t
            out[b, 192 + ib] = q & 0xFF
        for j in range(16):
            dl = d * f32(sc[j])
            if dl == 0:
                continue
            for ii in range(16):
                L[16 * j + ii] = _clamp(nearest_int(x[b, 16 * j + ii] / dl), -32, 31) + 32
        for h in range(2):  # two halves of 128 values
            for l in range(32):
                q1 = L[128 * h + l] & 0xF
                q2 = L[128 * h + l + 32] & 0xF
                q3 = L[128 * h + l + 64] & 0xF
                q4 = L[128 * h + l + 96] & 0xF
                out[b, 64 * h + l] = q1 | (q3 << 4)
                out[b, 64 * h + l + 32] = q2 | (q4 << 4)
                out[b, 128 + 32 * h + l] = ((L[128 * h + l] >> 4) | ((L[128 * h + l + 32] >> 4) << 2)
                                            | ((L[128 * h + l + 64] >> 4) << 4) | ((L[128 * h + l + 96] >> 4) << 6))
