"""Reference block formats: bit-exact against gguf-py, quantizer round trips within stated bounds."""

from __future__ import annotations

import time

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as gq

from llamalab import quants
from llamalab.errors import InvalidArgumentError, UnsupportedModelError
from llamalab.quants.bits import (
    pack_fields,
    pack_scale_min_k4,
    pack_scales_q3k,
    unpack_fields,
    unpack_scale_min_k4,
    unpack_scales_q3k,
)

ALL = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
GGUF_QUANTIZES = [t for t in ALL if t not in K_QUANTS]  # gguf-py has quantizers for these


def ids(t):
    return t.name


def gguf_dequantize(data: np.ndarray, qtype: T) -> np.ndarray:
    with np.errstate(all="ignore"):
        return gq.dequantize(data, qtype).astype(np.float32, copy=False)


def assert_bit_exact(ours: np.ndarray, ref: np.ndarray, qtype: T) -> None:
    """Same bits everywhere, except that any NaN equals any NaN; on failure name the worst block."""
    assert ours.dtype == np.float32, ours.dtype
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    bs = GGML_QUANT_SIZES[qtype][0]
    a, b = ours.reshape(-1, bs), ref.reshape(-1, bs)  # (n_blocks, block_size)
    bad = (a.view(np.uint32) != b.view(np.uint32)) & ~(np.isnan(a) & np.isnan(b))
    if bad.any():
        with np.errstate(all="ignore"):
            diff = np.nan_to_num(np.abs(a.astype(np.float64) - b), nan=np.inf, posinf=np.inf)
        worst = int(np.where(bad, diff, -1).max(axis=1).argmax())
        pytest.fail(
            f"{qtype.name}: {int(bad.sum())} values differ in {int(bad.any(axis=1).sum())} of {len(a)} blocks; "
            f"worst block {worst}: ours {a[worst][bad[worst]][:4]} vs gguf {b[worst][bad[worst]][:4]}"
        )


def quantized(x: np.ndarray, qtype: T) -> np.ndarray:
    """Realistic blocks: gguf-py's quantizer where it has one, ours for the K-quants."""
    return gq.quantize(x, qtype).view(np.uint8).reshape(x.shape[0], -1) if qtype in GGUF_QUANTIZES else quants.quantize(x, qtype)


# ---- registry ------------------------------------------------------------------------------------


def test_supported_is_exactly_the_thirteen_formats():
    assert quants.SUPPORTED == frozenset(ALL)
    assert set(quants.FORMATS) == set(ALL)


@pytest.mark.parametrize("qtype", ALL, ids=ids)
def test_sizes_match_ggml(qtype):
    assert (quants.block_size(qtype), quants.type_size(qtype)) == GGML_QUANT_SIZES[qtype]
    assert quants.FORMATS[qtype].qtype is qtype


def test_unsupported_type_is_named():
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS"):
        quants.dequantize(np.zeros((1, 66), np.uint8), T.IQ2_XXS)
    with pytest.raises(UnsupportedModelError, match="Q8_1"):
        quants.block_size(T.Q8_1)
    with pytest.raises(UnsupportedModelError, match="999"):
        quants.type_size(999)


# ---- dequantize: bit-exact against gguf-py -----------------------------------------------------------


@pytest.mark.parametrize("qtype", ALL, ids=ids)
def test_dequantize_quantized_data(qtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 512)).astype(np.float32) * np.float32(0.05)  # odd number of rows
    x[1] *= 40  # a row with a different scale
    data = quantized(x, qtype)
    assert_bit_exact(quants.dequantize(data, qtype), gguf_dequantize(data, qtype), qtype)


@pytest.mark.parametrize("qtype", ALL, ids=ids)
def test_dequantize_zero_blocks(qtype):
    data = np.zeros((3, 2 * GGML_QUANT_SIZES[qtype][1]), np.uint8)
    out = quants.dequantize(data, qtype)
    assert_bit_exact(out, gguf_dequantize(data, qtype), qtype)
    assert out.shape == (3, 2 * GGML_QUANT_SIZES[qtype][0]) and not out.any()


@pytest.mark.parametrize("qtype", ALL, ids=ids)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dequantize_random_bytes(qtype, seed):
    """Every bit pattern, including NaN/Inf half scales."""
    bs, ts = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(7, ts * (768 // bs)), dtype=np.uint8)  # 7 rows of 768 values
    assert_bit_exact(quants.dequantize(data, qtype), gguf_dequantize(data, qtype), qtype)


@pytest.mark.parametrize("qtype", ALL, ids=ids)
def test_dequantize_keeps_leading_dims_and_accepts_strided_rows(qtype):
    bs, ts = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=(2, 6, 2 * ts), dtype=np.uint8)
    out = quants.dequantize(data, qtype)
    assert out.shape == (2, 6, 2 * bs)
    every_other = quants.dequantize(data[:, ::2], qtype)  # non-contiguous view
    np.testing.assert_array_equal(every_other, out[:, ::2])
    assert quants.dequantize(data[:0, 0], qtype).shape == (0, 2 * bs)


@pytest.mark.parametrize("qtype", ALL, ids=ids)
def test_dequantize_returns_a_new_array(qtype):
    data = quantized(np.ones((1, 256), np.float32), qtype)
    out = quants.dequantize(data, qtype)
    assert out.flags.writeable and out.flags.c_contiguous and not np.shares_memory(out, data)


def test_dequantize_rejects_bad_input():
    with pytest.raises(InvalidArgumentError, match="Q4_1.*35 bytes.*20-byte"):
        quants.dequantize(np.zeros((2, 35), np.uint8), T.Q4_1)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        quants.dequantize(np.zeros((2, 40), np.float32), T.Q4_1)


def test_dequantize_q8_0_embedding_matrix_is_fast():
    """49152 x 576 Q8_0 (SmolLM2's token_embd): well under a second."""
    row = quants.quantize(np.random.default_rng(0).standard_normal((1, 576)).astype(np.float32), T.Q8_0)
    data = np.tile(row, (49152, 1))  # (49152, 612)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        out = quants.dequantize(data, T.Q8_0)
        best = min(best, time.perf_counter() - t0)
    assert out.shape == (49152, 576)
    assert best < 1.0, f"took {best:.2f} s"


# ---- bit packing helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,group", [(1, 1), (1, 32), (2, 4), (2, 32), (4, 8), (4, 16), (4, 32), (4, 64)])
def test_pack_fields_inverts_unpack_fields(bits, group):
    rng = np.random.default_rng(bits * 100 + group)
    packed = rng.integers(0, 256, size=(5, group * 4), dtype=np.uint8)
    values = unpack_fields(packed, bits, group)
    assert values.shape == (5, group * 4 * 8 // bits) and values.max() < 2**bits
    np.testing.assert_array_equal(pack_fields(values, bits, group), packed)


def test_unpack_fields_value_order():
    # Q4_0 layout: value j in the low nibble of byte j, value 16 + j in its high nibble
    packed = (np.arange(16, dtype=np.uint8) | (np.arange(16, 32, dtype=np.uint8) << 4))[None] & 0xFF
    np.testing.assert_array_equal(unpack_fields(packed, 4, 16)[0], np.arange(32) & 15)
    # Q5_0 qh: bit i of a little-endian uint32 is value i
    qh = np.array([[1 << 3, 0, 0, 1 << 7]], np.uint8)
    assert np.flatnonzero(unpack_fields(qh, 1, 1)[0]).tolist() == [3, 31]


def test_scale_packing_round_trips():
    rng = np.random.default_rng(5)
    sc, m = rng.integers(0, 64, (2, 9, 8), dtype=np.uint8)
    got_sc, got_m = unpack_scale_min_k4(pack_scale_min_k4(sc, m))
    np.testing.assert_array_equal(got_sc, sc)
    np.testing.assert_array_equal(got_m, m)
    s16 = rng.integers(0, 64, (9, 16), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_scales_q3k(pack_scales_q3k(s16)), s16)
    raw = rng.integers(0, 256, (9, 12), dtype=np.uint8)  # and the other way round
    np.testing.assert_array_equal(pack_scale_min_k4(*unpack_scale_min_k4(raw)), raw)
    np.testing.assert_array_equal(pack_scales_q3k(unpack_scales_q3k(raw)), raw)


# ---- quantize -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", GGUF_QUANTIZES, ids=ids)
def test_quantize_matches_gguf(qtype):
    """Same bytes as gguf-py's quantizers (BF16 has its own faster copy of ggml's rounding)."""
    x = np.random.default_rng(6).standard_normal((3, 64)).astype(np.float32)
    if qtype == T.BF16:  # every rounding case: ties, NaNs (signalling, quiet, negative), infinities, subnormals
        bits = np.random.default_rng(7).integers(0, 2**32, size=(64, 64), dtype=np.uint64).astype(np.uint32)
        bits[0, :8] = [0x3F808000, 0x3F818000, 0x7F800001, 0xFF800001, 0x7FC00000, 0x7F800000, 0xFF800000, 0x00008000]
        x = bits.view(np.float32)
    ours = quants.quantize(x, qtype)
    assert ours.dtype == np.uint8 and ours.shape == (len(x), 64 // GGML_QUANT_SIZES[qtype][0] * GGML_QUANT_SIZES[qtype][1])
    np.testing.assert_array_equal(ours, gq.quantize(x, qtype).view(np.uint8).reshape(len(x), -1))


# Worst-case |dequantize(quantize(x)) - x| per block, as a fraction of the block's max |x|.
# Affine formats (x = d*q + m): half a step, step <= range / qmax. Symmetric formats: one step
# (the grid has one more negative level; the largest magnitude takes it, so the opposite extreme may
# clip). Half-precision scales add 2**-11 relative per use. K-quants (our fitting, kfit.py): scales are
# rounded up, so step <= (2A + A/L) / qmax * (1 + 1/L) for L sub-scale levels; symmetric step <= A/qneg * (1 + 1/L).
F16_EPS = 2.0**-11
BLOCK_TOL = {
    T.Q8_0: 0.5 / 127 + F16_EPS,  # half step + 127 * d * 2**-11
    T.Q4_0: (1 / 8) * (1 + 8 * F16_EPS),
    T.Q5_0: (1 / 16) * (1 + 16 * F16_EPS),
    T.Q4_1: 1 / 15 + 3 * F16_EPS,  # half of 2A/15, plus d and m rounding
    T.Q5_1: 1 / 31 + 3 * F16_EPS,
    T.Q2_K: 0.5 * (2 + 1 / 15) / 3 * (1 + 1 / 15),  # 0.367
    T.Q3_K: (1 / 4) * (1 + 1 / 31),  # 0.258
    T.Q4_K: 0.5 * (2 + 1 / 63) / 15 * (1 + 1 / 63),  # 0.0683
    T.Q5_K: 0.5 * (2 + 1 / 63) / 31 * (1 + 1 / 63),  # 0.0330
    T.Q6_K: (1 / 32) * (1 + 1 / 127),  # 0.0315
}
# gguf-py rounds d to the nearest half *after* choosing q, so a subnormal d (tiny blocks) is off by up
# to half an ulp (2**-25), times |q| <= QMAX. Our K-quant fitting rounds scales up first: no such term.
QMAX = {T.Q8_0: 127, T.Q4_0: 8, T.Q5_0: 16, T.Q4_1: 16, T.Q5_1: 32}
# Relative error per value of the float formats.
VALUE_RTOL = {T.F32: 0.0, T.F16: F16_EPS, T.BF16: 2.0**-8}
# RMS error / RMS(x) for standard normal data: observed values in comments, bounds with ~15% headroom.
GAUSS_RMS_TOL = {
    T.Q2_K: 0.41,  # 0.355
    T.Q3_K: 0.18,  # 0.157
    T.Q4_K: 0.092,  # 0.080
    T.Q5_K: 0.045,  # 0.039
    T.Q6_K: 0.022,  # 0.019
}


def adversarial_rows(block: int) -> np.ndarray:
    """Rows of several 256-value blocks that stress the scale fitting (float32 (8, 2 * 256))."""
    rng = np.random.default_rng(7)
    n = 2 * max(block, 256)
    g = rng.standard_normal(n).astype(np.float32)
    rows = [
        g,  # plain
        np.abs(g) + 3,  # all positive, far from zero
        -np.abs(g) - 3,  # all negative
        np.full(n, 0.7, np.float32),  # constant
        np.where(np.arange(n) == 5, 1000, g * 1e-3).astype(np.float32),  # one spike
        g * np.repeat(10.0 ** rng.integers(-4, 3, n // 16), 16).astype(np.float32),  # sub-blocks 1e-4 .. 1e2
        g * np.float32(0.02),  # weight-sized values (small f16 scales)
        np.zeros(n, np.float32),
    ]
    return np.stack(rows)


@pytest.mark.parametrize("qtype", list(BLOCK_TOL), ids=ids)
def test_round_trip_error_within_block_bound(qtype):
    bs = GGML_QUANT_SIZES[qtype][0]
    x = np.concatenate([adversarial_rows(bs), np.random.default_rng(8).standard_normal((3, 512)).astype(np.float32)])
    y = quants.dequantize(quants.quantize(x, qtype), qtype)
    err = np.abs(y - x).reshape(-1, bs)  # (n_blocks, block_size)
    a = np.abs(x).reshape(-1, bs).max(axis=1)  # (n_blocks,)
    bound = BLOCK_TOL[qtype] * a * (1 + 2.0**-8) + QMAX.get(qtype, 0) * 2.0**-25 + 1e-7  # 1e-7: float rounding
    ratio = err.max(axis=1) / bound
    worst = int(ratio.argmax())
    assert ratio[worst] <= 1, f"{qtype.name}: block {worst} error {err[worst].max():.3g} > bound {bound[worst]:.3g}"
    np.testing.assert_array_equal(y[-4], 0)  # all-zero row stays exactly zero


@pytest.mark.parametrize("qtype", list(VALUE_RTOL), ids=ids)
def test_round_trip_float_formats(qtype):
    x = np.concatenate([adversarial_rows(1)[:-1].ravel(), [0.0, -0.0, 1e-3, 65000.0]]).astype(np.float32)[None]
    y = quants.dequantize(quants.quantize(x, qtype), qtype)
    np.testing.assert_allclose(y, x, rtol=VALUE_RTOL[qtype], atol=1e-7)


@pytest.mark.parametrize("qtype", K_QUANTS, ids=ids)
def test_k_quant_gaussian_rms_error(qtype):
    x = np.random.default_rng(9).standard_normal((64, 1024)).astype(np.float32)
    y = quants.dequantize(quants.quantize(x, qtype), qtype)
    rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2))
    assert rel < GAUSS_RMS_TOL[qtype], f"{qtype.name}: relative RMS error {rel:.4f}"


@pytest.mark.parametrize("qtype", K_QUANTS, ids=ids)
def test_k_quant_is_deterministic_and_chunk_independent(qtype, monkeypatch):
    x = np.random.default_rng(10).standard_normal((3, 768)).astype(np.float32)
    whole = quants.quantize(x, qtype)
    monkeypatch.setattr(quants, "_CHUNK_VALUES", 256)  # one block per slice
    np.testing.assert_array_equal(quants.quantize(x, qtype), whole)


def test_quantize_rejects_bad_input():
    with pytest.raises(InvalidArgumentError, match="Q4_K.*multiple of 256"):
        quants.quantize(np.zeros((2, 100), np.float32), T.Q4_K)
    with pytest.raises(InvalidArgumentError, match="Q6_K.*NaN"):
        quants.quantize(np.full((1, 256), np.nan, np.float32), T.Q6_K)
    with pytest.raises(InvalidArgumentError, match="Q5_K.*this large"):
        quants.quantize(np.full((1, 256), 1e30, np.float32), T.Q5_K)
