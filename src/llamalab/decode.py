"""The fast decode step: one compiled call runs every layer for one new token.

Calling NumPy op by op costs ~10 ms of interpreter overhead per token on a 30-layer
model — more than the whole matrix work. So the single-token path (the one that sets
generation speed) is a Numba function over flat arrays:

- weights: a typed list of the file's own byte views (never copied), described by a
  table of (qtype code, rows, cols) per weight; the format kernels live in `kernels`;
- norms: float32 (n_layers, 2, dim) gains; RoPE: float32 cos/sin tables (n_ctx, n_rot/2);
- state: the KVCache arrays, written in place; scratch buffers allocated once.

Prefill (many tokens at once) stays in `model.py`, where BLAS-sized products amortize
the per-op overhead.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.typed import List

from . import decode_kernels as kernels
from .config import ModelConfig
from .kv_cache import KVCache

# per layer, the order of weights in the table
WQ, WK, WV, WO, WGATE, WUP, WDOWN = range(7)
LAYER_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@njit(cache=True, fastmath=True)
def _rms_norm(x, w, eps, out):
    ss = np.float32(0.0)
    for i in range(x.size):
        ss += x[i] * x[i]
    inv = np.float32(1.0) / np.sqrt(ss / x.size + eps)
    for i in range(x.size):
        out[i] = x[i] * inv * w[i]


@njit(cache=True, fastmath=True)
def _rope(v, n_heads, head_dim, cos, sin):
    """Rotate adjacent pairs of every head of v (n_heads*head_dim,) by one position's angles."""
    half = cos.size
    for h in range(n_heads):
        base = h * head_dim
        for i in range(half):
            a = v[base + 2 * i]
            b = v[base + 2 * i + 1]
            v[base + 2 * i] = a * cos[i] - b * sin[i]
            v[base + 2 * i + 1] = a * sin[i] + b * cos[i]


@njit(cache=True, fastmath=True, parallel=True)
def _attend(q, kc, vc, n_pos, n_heads, out, scores):
    """One query per head over n_pos cached positions.

    q: (H*hd,); kc, vc: (KVH, n_ctx, hd) of one layer; out: (H*hd,); scores: (H, n_ctx) scratch.
    """
    n_kv, _, hd = kc.shape
    group = n_heads // n_kv
    scale = np.float32(1.0 / math.sqrt(hd))
    for h in prange(n_heads):
        kv = h // group
        qh = q[h * hd : (h + 1) * hd]
        sc = scores[h]
        m = np.float32(-np.inf)
        for s in range(n_pos):
            k = kc[kv, s]
            d = np.float32(0.0)
            for i in range(hd):
                d += qh[i] * k[i]
            d *= scale
            sc[s] = d
            m = max(m, d)
        total = np.float32(0.0)
        for s in range(n_pos):
            e = np.exp(sc[s] - m)
            sc[s] = e
            total += e
        o = out[h * hd : (h + 1) * hd]
        o[:] = 0.0
        for s in range(n_pos):
            p = sc[s] / total
            v = vc[kv, s]
            for i in range(hd):
                o[i] += p * v[i]


@njit(cache=True, fastmath=True)
def _swiglu(gate, up):
    for i in range(gate.size):
        g = gate[i]
        gate[i] = g / (np.float32(1.0) + np.exp(-g)) * up[i]


@njit(cache=True)
def _step(token, pos, weights, table, layer_idx, norms, out_norm, embd_i, out_i, kc, vc, cos, sin, eps,
          n_heads, x, xn, q, k, v, att, hb, hb2, scores, logits):
    """Forward one token at position `pos`; writes the cache and `logits` (vocab,)."""
    n_layers = layer_idx.shape[0]
    hd = kc.shape[3]
    n_kv = kc.shape[1]
    kernels.embed_row(table[embd_i, 0], weights[embd_i], token, table[embd_i, 2], x)
    c, s = cos[pos], sin[pos]
    for l in range(n_layers):
        ids = layer_idx[l]
        _rms_norm(x, norms[l, 0], eps, xn)
        kernels.matvec_code(table[ids[0], 0], weights[ids[0]], xn, q)
        kernels.matvec_code(table[ids[1], 0], weights[ids[1]], xn, k)
        kernels.matvec_code(table[ids[2], 0], weights[ids[2]], xn, v)
        _rope(q, n_heads, hd, c, s)
        _rope(k, n_kv, hd, c, s)
        for h in range(n_kv):
            kc[l, h, pos] = k[h * hd : (h + 1) * hd]
            vc[l, h, pos] = v[h * hd : (h + 1) * hd]
        _attend(q, kc[l], vc[l], pos + 1, n_heads, att, scores)
        kernels.matvec_code(table[ids[3], 0], weights[ids[3]], att, xn)
        x += xn
        _rms_norm(x, norms[l, 1], eps, xn)
        kernels.matvec_code(table[ids[4], 0], weights[ids[4]], xn, hb)
        kernels.matvec_code(table[ids[5], 0], weights[ids[5]], xn, hb2)
        _swiglu(hb, hb2)
        kernels.matvec_code(table[ids[6], 0], weights[ids[6]], hb, xn)
        x += xn
    _rms_norm(x, out_norm, eps, xn)
    kernels.matvec_code(table[out_i, 0], weights[out_i], xn, logits)


class FastDecoder:
    """Holds the flat tables and scratch buffers for `_step`; one per model."""

    def __init__(self, cfg: ModelConfig, linears: dict, token_embd, norms: np.ndarray, out_norm: np.ndarray):
        """linears: {"blk.{i}.{name}" or "output": QTensor already prepared for the kernels}."""
        self.cfg = cfg
        names = [f"blk.{i}.{n}" for i in range(cfg.n_layers) for n in LAYER_WEIGHTS] + ["output", "token_embd"]
        tensors = [linears[n] for n in names[:-1]] + [token_embd]
        self.weights = List([t.data.reshape(-1) for t in tensors])  # zero-copy byte views
        self.table = np.array([(kernels.code(t.qtype), t.rows, t.cols) for t in tensors], dtype=np.int64)
        self.layer_idx = np.arange(cfg.n_layers * 7, dtype=np.int64).reshape(cfg.n_layers, 7)
        self.out_i, self.embd_i = len(tensors) - 2, len(tensors) - 1
        self.norms = np.ascontiguousarray(norms, dtype=np.float32)  # (L, 2, dim)
        self.out_norm = np.ascontiguousarray(out_norm, dtype=np.float32)
        f32 = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        self.x, self.xn, self.q, self.att = f32(cfg.dim), f32(cfg.dim), f32(cfg.dim), f32(cfg.dim)
        self.k, self.v = f32(cfg.kv_dim), f32(cfg.kv_dim)
        self.hb, self.hb2 = f32(cfg.ffn_dim), f32(cfg.ffn_dim)
        self.scores = f32(cfg.n_heads, 1)
        self.cos = self.sin = np.zeros((0, cfg.n_rot // 2), np.float32)

    def _ensure(self, n_ctx: int) -> None:
        """Grow the RoPE tables and attention scratch to cover n_ctx positions."""
        if self.cos.shape[0] < n_ctx:
            from .model import rope_tables

            self.cos, self.sin = rope_tables(np.arange(n_ctx), self.cfg.n_rot, self.cfg.rope_base)
        if self.scores.shape[1] < n_ctx:
            self.scores = np.zeros((self.cfg.n_heads, n_ctx), np.float32)

    def step(self, token: int, cache: KVCache) -> np.ndarray:
        """Logits (vocab,) for `token` at position cache.pos; appends it to the cache."""
        cfg = self.cfg
        cache.reserve(1)
        self._ensure(cache.n_ctx)
        logits = np.empty(cfg.vocab_size, np.float32)
        _step(token, cache.pos, self.weights, self.table, self.layer_idx, self.norms, self.out_norm,
              self.embd_i, self.out_i, cache.k, cache.v, self.cos, self.sin, np.float32(cfg.norm_eps),
              cfg.n_heads, self.x, self.xn, self.q, self.k, self.v, self.att, self.hb, self.hb2,
              self.scores, logits)
        cache.pos += 1
        cache.tokens.append(int(token))
        return logits
