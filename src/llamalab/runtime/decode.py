"""The fast decode step: one compiled call runs every layer for one new token.

Calling NumPy op by op costs ~10 ms of interpreter overhead per token on a 30-layer
model — more than the whole matrix work. So the single-token path (the one that sets
generation speed) is a Numba function over flat arrays:

- weights: a table of (address, rows, row bytes) of the file's own byte views (never
  copied), with their ggml type codes beside it; the format kernels live in `kernels`;
- norms: float32 (n_layers, 2, dim) gains; RoPE: float32 cos/sin tables (n_ctx, n_rot/2);
- state: the KVCache arrays, written in place; scratch buffers allocated once.

Prefill (many tokens at once) stays in `model.py`, where BLAS-sized products amortize
the per-op overhead.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange
from numba.typed import List

from ..kernels import parallel, pool
from ..kernels.ops import attend_query, rms_norm_row, rope_row, swiglu_row
from ..kernels.rows import row_dequantize
from gguf import GGMLQuantizationType

from .. import kernels
from .config import ModelConfig
from ..errors import InvalidArgumentError
from .kv_cache import KVCache

# per layer, the order of weights in the table
WQ, WK, WV, WO, WGATE, WUP, WDOWN = range(7)
LAYER_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@njit(cache=True, fastmath=True, error_model="numpy")
def _attend_head(h, q, kc, vc, n_pos, group, out, sc):
    """Head h's query over n_pos cached positions into its slice of out."""
    hd = kc.shape[2]
    attend_query(q[h * hd : (h + 1) * hd], kc[h // group], vc[h // group], n_pos, out[h * hd : (h + 1) * hd], sc)


@njit(cache=True, fastmath=True, parallel=True, error_model="numpy")
def _attend_parallel(q, kc, vc, n_pos, n_heads, out, scores):
    group = n_heads // kc.shape[0]
    for h in prange(n_heads):
        _attend_head(h, q, kc, vc, n_pos, group, out, scores[h])


PARALLEL_ATTENTION_FROM = 1024  # cached positions; below, a thread launch costs more than it saves


@njit(cache=True, fastmath=True, error_model="numpy")
def _attend(q, kc, vc, n_pos, n_heads, out, scores):
    """One query per head over n_pos cached positions.

    q: (H*hd,); kc, vc: (KVH, n_ctx, hd) of one layer; out: (H*hd,); scores: (H, n_ctx) scratch.
    Heads run in parallel only for long contexts.
    """
    if n_pos >= PARALLEL_ATTENTION_FROM:
        _attend_parallel(q, kc, vc, n_pos, n_heads, out, scores)
        return
    group = n_heads // kc.shape[0]
    for h in range(n_heads):
        _attend_head(h, q, kc, vc, n_pos, group, out, scores[h])


@njit(cache=True)
def _w(wtab, i):
    """Weight i as the kernels take it: read-only uint8 (rows, row_bytes) over the model's bytes.
    wtab rows: (address, rows, row bytes); a table of addresses, where a typed List of the
    arrays cost 0.7 s per process to build (Numba compiles its list code every time)."""
    return pool.view_weights(wtab[i, 0], wtab[i, 1], wtab[i, 2])


@njit(cache=True, error_model="numpy")
def _step(token, pos, wtab, qts, layer_idx, norms, out_norm, embd_i, out_i, none_i, kc, vc, cos, sin, eps,
          n_heads, x, xn, q, k, v, att, hb, hb2, empty, scores, logits):
    """Forward one token at position `pos`; writes the cache and `logits` (vocab,)."""
    hd = kc.shape[3]
    n_kv = kc.shape[1]
    row_dequantize(qts[embd_i], _w(wtab, embd_i)[token], x)
    c, s = cos[pos], sin[pos]
    for l in range(layer_idx.shape[0]):
        iq, ik, iv, io, ig, iu, idn = layer_idx[l]
        rms_norm_row(x, norms[l, 0], eps, xn)
        parallel.matvec3_rows(qts[iq], _w(wtab, iq), q, qts[ik], _w(wtab, ik), k, qts[iv], _w(wtab, iv), v, xn)
        rope_row(q, n_heads, hd, c, s)
        rope_row(k, n_kv, hd, c, s)
        for h in range(n_kv):
            kc[l, h, pos] = k[h * hd : (h + 1) * hd]
            vc[l, h, pos] = v[h * hd : (h + 1) * hd]
        _attend(q, kc[l], vc[l], pos + 1, n_heads, att, scores)
        parallel.matvec_rows(qts[io], _w(wtab, io), att, xn)
        x += xn
        rms_norm_row(x, norms[l, 1], eps, xn)
        parallel.matvec3_rows(qts[ig], _w(wtab, ig), hb, qts[iu], _w(wtab, iu), hb2, qts[none_i], _w(wtab, none_i),
                              empty, xn)
        swiglu_row(hb, hb2)
        parallel.matvec_rows(qts[idn], _w(wtab, idn), hb, xn)
        x += xn
    rms_norm_row(x, out_norm, eps, xn)
    parallel.matvec_rows(qts[out_i], _w(wtab, out_i), xn, logits)


@njit(cache=True, error_model="numpy")
def _step_batch(tokens, positions, wtab, qts, layer_idx, norms, out_norm, embd_i, out_i, kcs, vcs, cos, sin,
                eps, n_heads, x, xn, q, k, v, att, hb, hb2, scores, logits):
    """_step for B sequences at once: token b at positions[b] of its own cache kcs[b], vcs[b].

    Each weight row is read once for all B vectors (kernels' matmul_rows); attention runs per
    sequence. x, xn, q, att: (B, dim); k, v: (B, kv_dim); hb, hb2: (B, ffn); logits: (B, vocab).
    """
    B = tokens.size
    hd = kcs[0].shape[3]
    n_kv = kcs[0].shape[1]
    for b in range(B):
        row_dequantize(qts[embd_i], _w(wtab, embd_i)[tokens[b]], x[b])
    for l in range(layer_idx.shape[0]):
        iq, ik, iv, io, ig, iu, idn = layer_idx[l]
        for b in range(B):
            rms_norm_row(x[b], norms[l, 0], eps, xn[b])
        parallel.matmul_rows(qts[iq], _w(wtab, iq), xn, q)
        parallel.matmul_rows(qts[ik], _w(wtab, ik), xn, k)
        parallel.matmul_rows(qts[iv], _w(wtab, iv), xn, v)
        for b in range(B):
            pos = positions[b]
            rope_row(q[b], n_heads, hd, cos[pos], sin[pos])
            rope_row(k[b], n_kv, hd, cos[pos], sin[pos])
            kc, vc = kcs[b], vcs[b]
            for h in range(n_kv):
                kc[l, h, pos] = k[b, h * hd : (h + 1) * hd]
                vc[l, h, pos] = v[b, h * hd : (h + 1) * hd]
            _attend(q[b], kc[l], vc[l], pos + 1, n_heads, att[b], scores)
        parallel.matmul_rows(qts[io], _w(wtab, io), att, xn)
        x += xn
        for b in range(B):
            rms_norm_row(x[b], norms[l, 1], eps, xn[b])
        parallel.matmul_rows(qts[ig], _w(wtab, ig), xn, hb)
        parallel.matmul_rows(qts[iu], _w(wtab, iu), xn, hb2)
        for b in range(B):
            swiglu_row(hb[b], hb2[b])
        parallel.matmul_rows(qts[idn], _w(wtab, idn), hb, xn)
        x += xn
    for b in range(B):
        rms_norm_row(x[b], out_norm, eps, xn[b])
    parallel.matmul_rows(qts[out_i], _w(wtab, out_i), xn, logits)


def compiled_before() -> bool:
    """True when Numba's cache holds a decode step (an earlier run compiled the kernels)."""
    try:
        return _step._cache._cache_file._index_path is not None and os.path.exists(_step._cache._cache_file._index_path)
    except AttributeError:  # another Numba's internals: assume the cache is there
        return True


class FastDecoder:
    """Holds the flat tables and scratch buffers for `_step`; one per model."""

    def __init__(self, cfg: ModelConfig, linears: dict, token_embd, norms: np.ndarray, out_norm: np.ndarray):
        """linears: {"blk.{i}.{name}" or "output": QTensor already prepared for the kernels}."""
        self.cfg = cfg
        names = [f"blk.{i}.{n}" for i in range(cfg.n_layers) for n in LAYER_WEIGHTS] + ["output", "token_embd"]
        views = [linears[n].data for n in names[:-1]] + [token_embd.data]  # C-contiguous: kernels.prepare checked
        views.append(np.zeros((0, 1), np.uint8))  # the unused third slot of the gate/up call
        self.views = views  # zero-copy (rows, row_bytes) byte views, kept alive for wtab's addresses
        self.wtab = np.array([(v.ctypes.data, *v.shape) for v in views], dtype=np.int64)  # (n, 3)
        types = [linears[n].qtype for n in names[:-1]] + [token_embd.qtype, GGMLQuantizationType.F32]
        self.qts = np.array([int(t) for t in types], dtype=np.int64)
        self.layer_idx = np.arange(cfg.n_layers * 7, dtype=np.int64).reshape(cfg.n_layers, 7)
        self.out_i, self.embd_i, self.none_i = len(views) - 3, len(views) - 2, len(views) - 1
        self.norms = np.ascontiguousarray(norms, dtype=np.float32)  # (L, 2, dim)
        self.out_norm = np.ascontiguousarray(out_norm, dtype=np.float32)
        f32 = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        self.x, self.xn, self.q, self.att = f32(cfg.dim), f32(cfg.dim), f32(cfg.dim), f32(cfg.dim)
        self.k, self.v = f32(cfg.kv_dim), f32(cfg.kv_dim)
        self.hb, self.hb2, self.empty = f32(cfg.ffn_dim), f32(cfg.ffn_dim), f32(0)
        self.scores = f32(cfg.n_heads, 1)
        self.cos = self.sin = np.zeros((0, cfg.n_rot // 2), np.float32)

    def _ensure(self, n_ctx: int) -> None:
        """Grow the RoPE tables and attention scratch to cover n_ctx positions."""
        if self.cos.shape[0] < n_ctx:
            from .model import rope_tables

            self.cos, self.sin = rope_tables(np.arange(n_ctx), self.cfg.n_rot, self.cfg.rope_base)
        if self.scores.shape[1] < n_ctx:
            self.scores = np.zeros((self.cfg.n_heads, n_ctx), np.float32)

    def _sync_threads(self) -> None:
        if numba.get_num_threads() != kernels.get_threads():  # per calling thread (the server's worker)
            numba.set_num_threads(kernels.get_threads())

    def step_batch(self, tokens: np.ndarray, caches: list[KVCache]) -> np.ndarray:
        """Logits (B, vocab) for tokens[b] at position caches[b].pos each; appends them."""
        cfg = self.cfg
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
            raise InvalidArgumentError(f"token ids must be in [0, {cfg.vocab_size})")
        for c in caches:
            c.reserve(1)
        self._ensure(max(c.n_ctx for c in caches))
        B = len(tokens)
        f32 = lambda n: np.empty((B, n), np.float32)  # noqa: E731
        x, xn, q, att = f32(cfg.dim), f32(cfg.dim), f32(cfg.dim), f32(cfg.dim)
        k, v, hb, hb2, logits = f32(cfg.kv_dim), f32(cfg.kv_dim), f32(cfg.ffn_dim), f32(cfg.ffn_dim), f32(cfg.vocab_size)
        positions = np.array([c.pos for c in caches], dtype=np.int64)
        self._sync_threads()
        _step_batch(tokens, positions, self.wtab, self.qts, self.layer_idx, self.norms, self.out_norm,
                    self.embd_i, self.out_i, List([c.k for c in caches]), List([c.v for c in caches]),
                    self.cos, self.sin, np.float32(cfg.norm_eps), cfg.n_heads, x, xn, q, k, v, att, hb, hb2,
                    self.scores, logits)
        for c, t in zip(caches, tokens):
            c.pos += 1
            c.tokens.append(int(t))
        return logits

    def step(self, token: int, cache: KVCache) -> np.ndarray:
        """Logits (vocab,) for `token` at position cache.pos; appends it to the cache."""
        cfg = self.cfg
        cache.reserve(1)
        self._ensure(cache.n_ctx)
        logits = np.empty(cfg.vocab_size, np.float32)
        if not 0 <= token < cfg.vocab_size:
            raise InvalidArgumentError(f"token id {token} is outside the vocabulary [0, {cfg.vocab_size})")
        self._sync_threads()
        _step(token, cache.pos, self.wtab, self.qts, self.layer_idx, self.norms, self.out_norm,
              self.embd_i, self.out_i, self.none_i, cache.k, cache.v, self.cos, self.sin, np.float32(cfg.norm_eps),
              cfg.n_heads, self.x, self.xn, self.q, self.k, self.v, self.att, self.hb, self.hb2, self.empty,
              self.scores, logits)
        cache.pos += 1
        cache.tokens.append(int(token))
        return logits
