"""Rotary position embeddings: the angle tables every layer reads, and the two pair layouts.

One table per distinct RoPE of a model (Gemma 3's local layers rotate with another base than
its global ones). The tables hold cos and sin of ``pos * freq_i`` with llama.cpp's scalings:
per-pair divisors (Llama 3.1+ ``rope_freqs``, Phi-3 LongRoPE factors), linear position scaling,
and YaRN's blend of interpolated and extrapolated angles with its magnitude factor.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig

YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0  # llama.cpp's defaults


def _yarn_ramp(cfg: ModelConfig, base: float) -> np.ndarray:
    """Per pair, how much of the extrapolated (unscaled) angle YaRN keeps: 1 for fast-turning
    pairs, 0 for slow ones, linear between (ggml_rope_yarn_corr_dims)."""
    n = cfg.n_rot
    n_orig = cfg.rope_orig_context or cfg.context_length

    def corr(beta: float) -> float:
        return n * math.log(n_orig / (beta * 2 * math.pi)) / (2 * math.log(base))

    low = max(0.0, math.floor(corr(YARN_BETA_FAST)))
    high = min(n - 1.0, math.ceil(corr(YARN_BETA_SLOW)))
    y = (np.arange(n // 2) - low) / max(0.001, high - low)
    return 1.0 - np.clip(y, 0.0, 1.0)


def rope_tables(positions: np.ndarray, cfg: ModelConfig, base: float | None = None,
                factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (T, n_rot/2) float32 for positions (T,); factors (n_rot/2,) divide the frequencies."""
    base = cfg.rope_base if base is None else base
    n = cfg.n_rot
    freq = base ** (-np.arange(0, n, 2, dtype=np.float64) / n)  # (n/2,)
    if factors is not None:
        freq = freq / factors.astype(np.float64)
    pos = positions.astype(np.float64)[:, None]  # (T, 1)
    mscale = cfg.rope_attn_factor
    if cfg.rope_scaling == "yarn":
        mix = _yarn_ramp(cfg, base)  # (n/2,)
        angles = pos * freq * (cfg.rope_scale * (1 - mix) + mix)
        mscale *= 1.0 + 0.1 * math.log(1.0 / cfg.rope_scale)
    else:
        angles = pos * (freq * cfg.rope_scale)  # (T, n/2)
    return (np.cos(angles) * mscale).astype(np.float32), (np.sin(angles) * mscale).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool = False) -> None:
    """Rotate pairs of the first n_rot dims of every head in place.

    x: (T, heads, head_dim); cos, sin: (T, n_rot/2). Pairs are adjacent (x[2i], x[2i+1]) — the
    layout GGUF stores for llama — or, with neox, halves (x[i], x[i + n_rot/2]).
    """
    half = cos.shape[1]
    c, s = cos[:, None, :], sin[:, None, :]  # (T, 1, n_rot/2): broadcast over heads
    if neox:
        x0, x1 = x[..., :half].copy(), x[..., half : 2 * half]
        x[..., :half] = x0 * c - x1 * s
        x[..., half : 2 * half] = x0 * s + x1 * c
        return
    x0 = x[..., 0 : 2 * half : 2].copy()
    x1 = x[..., 1 : 2 * half : 2]
    x[..., 0 : 2 * half : 2] = x0 * c - x1 * s
    x[..., 1 : 2 * half : 2] = x0 * s + x1 * c
