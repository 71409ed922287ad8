"""The transformer layer, defined once: h = x + attn(norm(x)); out = h + ffn(norm(h)).

Every architecture runs this one definition; what differs is data in the config (biases,
q/k norms, post-norms, RoPE layout, activation, sliding window). It serves prefill (N tokens
of one sequence) and batched decode (one token of each of N sequences) alike: the products
run over all N rows, and ``attend`` — given by the caller — writes the keys and values into
the right cache and attends each row over its own history.

The ops come from ``LayerOps``: the NumPy reference functions here, or their compiled forms
(``kernels.ops``). The compiled single-token step (``decode.py``) is this same layer written
for Numba; tests hold the two to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import ModelConfig
from .linear import fused
from .rope import apply_rope
from .tensor import QTensor


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x: (T, n) -> (T, n), scaled to unit root-mean-square, times the learned gain (n,)."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return x * (1.0 / np.sqrt(ms + eps)) * w


def glu(gate: np.ndarray, up: np.ndarray, activation: str) -> np.ndarray:
    """The gated FFN's hidden: act(gate) * up, with SiLU (SwiGLU) or tanh-GELU (GeGLU)."""
    if activation == "gelu_tanh":
        c = np.float32(np.sqrt(2.0 / np.pi))
        return 0.5 * gate * (1.0 + np.tanh(c * (gate + np.float32(0.044715) * gate**3))) * up
    return gate / (1.0 + np.exp(-gate)) * up


def attention(q: np.ndarray, kc: np.ndarray, vc: np.ndarray, start: int, window: int = 0) -> np.ndarray:
    """Causal grouped-query attention of T new queries over S = start + T cached positions.

    q: (T, H, hd), already scaled by query_scale * sqrt(hd); kc, vc: (KVH, >= S, hd) float32 or
    float16, positions < S written -> (T, H * hd). Query head h reads kv head h // (H // KVH).
    With a window, query t (position p = start + t) sees only positions p - window + 1 .. p.
    """
    T, H, hd = q.shape
    S = start + T
    k, v = kc[:, :S].astype(np.float32, copy=False), vc[:, :S].astype(np.float32, copy=False)  # (KVH, S, hd)
    KVH = k.shape[0]
    G = H // KVH
    qg = q.reshape(T, KVH, G, hd).transpose(1, 2, 0, 3).reshape(KVH, G * T, hd)  # (KVH, G*T, hd)
    scores = np.matmul(qg, k.transpose(0, 2, 1)) * np.float32(1.0 / np.sqrt(hd))  # (KVH, G*T, S)
    scores = scores.reshape(KVH, G, T, S)
    pos = start + np.arange(T)[:, None]  # (T, 1) each query's position
    mask = np.arange(S)[None, :] > pos  # (T, S): the future
    if window:
        mask |= np.arange(S)[None, :] <= pos - window  # out of the window
    if mask.any():
        scores[:, :, mask] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.matmul(p.reshape(KVH, G * T, S), v)  # (KVH, G*T, hd)
    return out.reshape(KVH, G, T, hd).transpose(2, 0, 1, 3).reshape(T, H * hd)  # (T, H*hd)


@dataclass(frozen=True)
class LayerOps:
    """The non-matmul ops of a layer, for N rows at once (shapes as in the NumPy functions above)."""

    rms_norm: Callable  # (x (N, n), w (n,), eps) -> (N, n)
    rope: Callable  # (x (N, heads, hd), cos, sin (N, n_rot/2), neox) -> None, in place
    attention: Callable  # (q (T, H, hd), kc, vc (KVH, n_ctx, hd) float32/16, start, window) -> (T, H*hd)
    glu: Callable  # (gate, up (N, ffn), activation) -> act(gate) * up (may reuse gate)


REFERENCE_OPS = LayerOps(rms_norm, apply_rope, attention, glu)


def fast_ops() -> LayerOps:
    """The compiled forms (kernels.ops): one parallel pass each, no BLAS."""
    from ..kernels import ops

    def norm(x, w, eps):
        out = np.empty_like(x)
        ops.rms_norm(np.ascontiguousarray(x), w, np.float32(eps), out)
        return out

    def rotate(x, cos, sin, neox):
        (ops.rope_neox if neox else ops.rope)(x, cos, sin)

    def attend(q, kc, vc, start, window):
        out = np.empty((q.shape[0], q.shape[1] * q.shape[2]), np.float32)  # (T, H*hd)
        kc, vc = np.ascontiguousarray(kc), np.ascontiguousarray(vc)
        if kc.dtype == np.float16:  # the kernels read f16 as its bit patterns
            kc, vc = kc.view(np.int16), vc.view(np.int16)
        if window and start + q.shape[0] > window:
            ops.windowed_attention(q, kc, vc, start, window, out)
        else:
            ops.causal_attention(q, kc, vc, start, out)
        return out

    def gated(gate, up, activation):
        (ops.geglu if activation == "gelu_tanh" else ops.swiglu)(gate, up)
        return gate

    return LayerOps(norm, rotate, attend, gated)


class LayerWeights:
    """One layer's weights: products as layers (``linear``), gains and biases as float32."""

    def __init__(self, w: dict[str, QTensor], i: int, make_linear):
        p = f"blk.{i}."
        vec = lambda n: w[p + n].dequantize().reshape(-1) if p + n in w else None  # noqa: E731
        self.index = i
        self.attn_norm, self.ffn_norm = vec("attn_norm.weight"), vec("ffn_norm.weight")  # (dim,)
        self.q_norm, self.k_norm = vec("attn_q_norm.weight"), vec("attn_k_norm.weight")  # (hd,) or None
        self.post_attn_norm, self.post_ffn_norm = vec("post_attention_norm.weight"), vec("post_ffw_norm.weight")
        self.bq, self.bk, self.bv = vec("attn_q.bias"), vec("attn_k.bias"), vec("attn_v.bias")
        self.wq, self.wk, self.wv, self.wo = (make_linear(w[p + n]) for n in
                                              ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"))
        self.w_gate, self.w_up, self.w_down = (make_linear(w[p + n]) for n in
                                               ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"))


def layer_forward(cfg: ModelConfig, lw: LayerWeights, ops: LayerOps, x: np.ndarray, cos: np.ndarray,
                  sin: np.ndarray, attend: Callable) -> np.ndarray:
    """x (N, dim) -> (N, dim). cos, sin (N, n_rot/2): each row's angles for this layer's RoPE;
    attend(layer, q (N, H, hd), k, v (N, KVH, hd)) -> (N, H*hd) stores k, v and attends."""
    N, H, KVH, hd, eps = len(x), cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.norm_eps
    h = ops.rms_norm(x, lw.attn_norm, eps)
    q, k, v = fused((lw.wq, lw.wk, lw.wv), h)  # (N, q_dim), (N, kv_dim), (N, kv_dim)
    if lw.bq is not None:
        q, k, v = q + lw.bq, k + lw.bk, v + lw.bv
    q, k, v = q.reshape(N, H, hd), k.reshape(N, KVH, hd), v.reshape(N, KVH, hd)
    if lw.q_norm is not None:  # per head, before RoPE
        q = ops.rms_norm(q.reshape(N * H, hd), lw.q_norm, eps).reshape(N, H, hd)
        k = ops.rms_norm(k.reshape(N * KVH, hd), lw.k_norm, eps).reshape(N, KVH, hd)
    ops.rope(q, cos, sin, cfg.rope_neox)
    ops.rope(k, cos, sin, cfg.rope_neox)
    rescale = cfg.query_scale * np.sqrt(hd)  # the attention ops divide by sqrt(hd) themselves
    if abs(rescale - 1.0) > 1e-7:
        q *= np.float32(rescale)
    o = lw.wo(attend(lw.index, q, k, v))  # (N, dim)
    if lw.post_attn_norm is not None:
        o = ops.rms_norm(o, lw.post_attn_norm, eps)
    x = x + o
    h = ops.rms_norm(x, lw.ffn_norm, eps)
    gate, up = fused((lw.w_gate, lw.w_up), h)  # (N, ffn_dim) each
    o = lw.w_down(ops.glu(gate, up, cfg.activation))
    if lw.post_ffn_norm is not None:
        o = ops.rms_norm(o, lw.post_ffn_norm, eps)
    return x + o
