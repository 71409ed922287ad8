"""The fast decode step: one compiled call runs every layer for one new token of each of B
sequences (B = 1 for plain generation, B > 1 for the server's continuous batching).

Calling NumPy op by op costs ~10 ms of interpreter overhead per token on a 30-layer
model — more than the whole matrix work. So the single-token path (the one that sets
generation speed) is ``layer.layer_forward`` written once more, for Numba, over flat tables:

- weights: (address, rows, row bytes) of the file's own byte views (never copied), their
  ggml type codes, and per layer the indices of q, k, v, o, gate, up, down;
- vectors: every norm gain and bias in one float32 array, with per-layer offsets (-1: absent);
- params: the config's switches and scalars; RoPE: cos/sin tables (bases, n_ctx, n_rot/2);
- caches: (address of k, address of v, n_ctx, f16) per sequence: the KVCache arrays (float32,
  or float16 read as their int16 bit patterns), written in place, then committed by the cache
  itself; scratch buffers allocated once for B = 1.

B = 1 runs each group of products sharing an input (q/k/v, gate/up) in one parallel job
(``matvec3_rows``); B > 1 reads each weight row once for all B vectors (``matmul_rows``).
Attention is a job of the same pool (``attend_rows``): kv heads x chunks of positions, each
key and value row read once for all the query heads that share it.
"""

from __future__ import annotations

import os
import weakref

import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from .. import kernels
from ..errors import InvalidArgumentError
from ..kernels import parallel, pool
from ..kernels.attention import ATTEND_CHUNK, attend_chunks
from ..kernels.ops import geglu_row, rms_norm_row, rope_row, rope_row_neox, store_kv, swiglu_row
from ..kernels.rows import row_dequantize
from .kv_cache import KVCache

# per layer, the order of weights in the table and of vectors in the offsets
LAYER_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
LAYER_VECTORS = ("attn_norm", "ffn_norm", "q_norm", "k_norm", "post_attn_norm", "post_ffn_norm", "bq", "bk", "bv")
ATTN_NORM, FFN_NORM, Q_NORM, K_NORM, POST_ATTN, POST_FFN, BQ, BK, BV = range(9)
# iparams: heads, kv heads, head size, NEOX rope, GeGLU; fparams: eps, query rescale, softcap, embedding scale
P_HEADS, P_KV, P_HD, P_NEOX, P_GELU = range(5)
F_EPS, F_QSCALE, F_SOFTCAP, F_EMBED = range(4)


@njit(cache=True)
def _w(wtab, i):
    """Weight i as the kernels take it: read-only uint8 (rows, row_bytes) over the model's bytes.
    wtab rows: (address, rows, row bytes); a table of addresses, where a typed List of the
    arrays cost 0.7 s per process to build (Numba compiles its list code every time)."""
    return pool.view_weights(wtab[i, 0], wtab[i, 1], wtab[i, 2])


@njit(cache=True)
def _cache(addr, n_layers, n_kv, n_ctx, hd):
    """A float32 (L, KVH, n_ctx, hd) view of a KVCache's k or v array at addr."""
    return pool.view_f32(addr, n_layers * n_kv * n_ctx * hd, 0).reshape((n_layers, n_kv, n_ctx, hd))


@njit(cache=True)
def _cache16(addr, n_layers, n_kv, n_ctx, hd):
    """The same for an f16 cache: its bit patterns as int16 (L, KVH, n_ctx, hd)."""
    return pool.view_i16(addr, n_layers * n_kv * n_ctx * hd, 0).reshape((n_layers, n_kv, n_ctx, hd))


@njit(cache=True, error_model="numpy")
def _store_attend(kc, vc, pos, lo, k, v, q, out, attn):
    """Write one token's keys and values k, v (KVH*hd,) at pos of one layer's cache kc, vc
    (KVH, n_ctx, hd), then attend its queries q (H*hd,) over positions lo .. pos into out."""
    KVH, hd = kc.shape[0], kc.shape[2]
    for h in range(KVH):
        store_kv(kc[h, pos], k[h * hd : (h + 1) * hd])
        store_kv(vc[h, pos], v[h * hd : (h + 1) * hd])
    po, pml, sc = attn
    parallel.attend_rows(q, kc, vc, lo, pos + 1, out, po, pml, sc)


@njit(cache=True, fastmath=True, error_model="numpy")
def _norm_heads(v, n_heads, hd, w, eps):
    for h in range(n_heads):
        seg = v[h * hd : (h + 1) * hd]
        rms_norm_row(seg, w, eps, seg)


@njit(cache=True, error_model="numpy")
def _products(qt0, w0, out0, qt1, w1, out1, qt2, w2, out2, x):
    """out_i (B, rows_i) = x (B, cols) @ w_i.T for up to three weights sharing x (0 rows: unused)."""
    if x.shape[0] == 1:
        parallel.matvec3_rows(qt0, w0, out0[0], qt1, w1, out1[0], qt2, w2, out2[0], x[0])
        return
    parallel.matmul_rows(qt0, w0, x, out0)
    if w1.shape[0]:
        parallel.matmul_rows(qt1, w1, x, out1)
    if w2.shape[0]:
        parallel.matmul_rows(qt2, w2, x, out2)


@njit(cache=True, error_model="numpy")
def _step(tokens, positions, weights, vectors, params, rope, caches, scratch):
    """Forward tokens[b] at positions[b] of cache b, for every b; writes the caches and logits.

    weights = (wtab, qts, layer_idx (L, 7), embd_i, out_i, none_i); vectors = (vecs, offsets (L, 9),
    out_norm offset); params = (iparams, fparams, layer_rope (L,), layer_window (L,));
    rope = (cos, sin) (bases, n_ctx, n_rot/2); caches = (B, 4) int64 (k addr, v addr, n_ctx, f16 0/1);
    scratch = (x, xn, q, k, v, att, hb, hb2, po, pml, sc, logits), each (B, width) but the attention
    scratch po, pml, sc (flat, see parallel.attend_rows), shared by the B sequences.
    """
    wtab, qts, lidx, embd_i, out_i, none_i = weights
    vecs, voff, out_norm_off = vectors
    iparams, fparams, lrope, lwin = params
    cos, sin = rope
    x, xn, q, k, v, att, hb, hb2, po, pml, sc, logits = scratch
    H, KVH, hd, neox, gelu = iparams[P_HEADS], iparams[P_KV], iparams[P_HD], iparams[P_NEOX], iparams[P_GELU]
    eps, qscale, softcap = fparams[F_EPS], fparams[F_QSCALE], fparams[F_SOFTCAP]
    B, L, dim = tokens.size, lidx.shape[0], x.shape[1]
    empty_w, empty_o = _w(wtab, none_i), xn[:, :0]
    for b in range(B):
        row_dequantize(qts[embd_i], _w(wtab, embd_i)[tokens[b]], x[b])
        x[b] *= fparams[F_EMBED]
    for l in range(L):
        iq, ik, iv, io, ig, iu, idn = lidx[l]
        o = voff[l]
        for b in range(B):
            rms_norm_row(x[b], vecs[o[ATTN_NORM] : o[ATTN_NORM] + dim], eps, xn[b])
        _products(qts[iq], _w(wtab, iq), q, qts[ik], _w(wtab, ik), k, qts[iv], _w(wtab, iv), v, xn)
        for b in range(B):
            pos = positions[b]
            if o[BQ] >= 0:
                q[b] += vecs[o[BQ] : o[BQ] + q.shape[1]]
                k[b] += vecs[o[BK] : o[BK] + k.shape[1]]
                v[b] += vecs[o[BV] : o[BV] + v.shape[1]]
            if o[Q_NORM] >= 0:
                _norm_heads(q[b], H, hd, vecs[o[Q_NORM] : o[Q_NORM] + hd], eps)
                _norm_heads(k[b], KVH, hd, vecs[o[K_NORM] : o[K_NORM] + hd], eps)
            c, s = cos[lrope[l], pos], sin[lrope[l], pos]
            if neox:
                rope_row_neox(q[b], H, hd, c, s)
                rope_row_neox(k[b], KVH, hd, c, s)
            else:
                rope_row(q[b], H, hd, c, s)
                rope_row(k[b], KVH, hd, c, s)
            if qscale != 1.0:
                q[b] *= qscale
            n_ctx = caches[b, 2]
            lo = max(0, pos + 1 - lwin[l]) if lwin[l] > 0 else 0
            if caches[b, 3]:
                kc, vc = _cache16(caches[b, 0], L, KVH, n_ctx, hd), _cache16(caches[b, 1], L, KVH, n_ctx, hd)
                _store_attend(kc[l], vc[l], pos, lo, k[b], v[b], q[b], att[b], (po, pml, sc))
            else:
                kc32, vc32 = _cache(caches[b, 0], L, KVH, n_ctx, hd), _cache(caches[b, 1], L, KVH, n_ctx, hd)
                _store_attend(kc32[l], vc32[l], pos, lo, k[b], v[b], q[b], att[b], (po, pml, sc))
        _products(qts[io], _w(wtab, io), xn, qts[io], empty_w, empty_o, qts[io], empty_w, empty_o, att)
        for b in range(B):
            if o[POST_ATTN] >= 0:
                rms_norm_row(xn[b], vecs[o[POST_ATTN] : o[POST_ATTN] + dim], eps, xn[b])
            x[b] += xn[b]
            rms_norm_row(x[b], vecs[o[FFN_NORM] : o[FFN_NORM] + dim], eps, xn[b])
        _products(qts[ig], _w(wtab, ig), hb, qts[iu], _w(wtab, iu), hb2, qts[ig], empty_w, empty_o, xn)
        for b in range(B):
            if gelu:
                geglu_row(hb[b], hb2[b])
            else:
                swiglu_row(hb[b], hb2[b])
        _products(qts[idn], _w(wtab, idn), xn, qts[idn], empty_w, empty_o, qts[idn], empty_w, empty_o, hb)
        for b in range(B):
            if o[POST_FFN] >= 0:
                rms_norm_row(xn[b], vecs[o[POST_FFN] : o[POST_FFN] + dim], eps, xn[b])
            x[b] += xn[b]
    for b in range(B):
        rms_norm_row(x[b], vecs[out_norm_off : out_norm_off + dim], eps, xn[b])
    _products(qts[out_i], _w(wtab, out_i), logits, qts[out_i], empty_w, empty_o, qts[out_i], empty_w, empty_o, xn)
    if softcap > 0:
        for b in range(B):
            for i in range(logits.shape[1]):
                logits[b, i] = np.tanh(logits[b, i] / softcap) * softcap


def compiled_before() -> bool:
    """True when Numba's cache holds a decode step (an earlier run compiled the kernels)."""
    try:
        return _step._cache._cache_file._index_path is not None and os.path.exists(_step._cache._cache_file._index_path)
    except AttributeError:  # another Numba's internals: assume the cache is there
        return True


class FastDecoder:
    """The flat tables and the B = 1 scratch buffers of `_step`; one per model."""

    def __init__(self, model):
        cfg = self.cfg = model.config
        qtensors, vec_parts, offsets = [], [], []
        n_vec = 0

        def add_vec(a):
            nonlocal n_vec
            if a is None:
                return -1
            vec_parts.append(np.ascontiguousarray(a, dtype=np.float32).reshape(-1))
            n_vec += vec_parts[-1].size
            return n_vec - vec_parts[-1].size

        for b in model.blocks:
            qtensors += [lin.qtensor for lin in (b.wq, b.wk, b.wv, b.wo, b.w_gate, b.w_up, b.w_down)]
            offsets.append([add_vec(getattr(b, n)) for n in LAYER_VECTORS])
        out_norm_off = add_vec(model.output_norm)
        qtensors += [model.output.qtensor, kernels.prepare(model.token_embd)]
        views = [t.data for t in qtensors] + [np.zeros((0, 1), np.uint8)]  # C-contiguous: kernels.prepare checked
        self.views = views  # zero-copy (rows, row_bytes) byte views, kept alive for wtab's addresses
        wtab = np.array([(a.ctypes.data, *a.shape) for a in views], dtype=np.int64)  # (n, 3)
        types = [t.qtype for t in qtensors] + [GGMLQuantizationType.F32]
        qts = np.array([int(t) for t in types], dtype=np.int64)
        L = cfg.n_layers
        n = len(views)
        self.weights = (wtab, qts, np.arange(L * 7, dtype=np.int64).reshape(L, 7), n - 2, n - 3, n - 1)
        self.vectors = (np.concatenate(vec_parts), np.array(offsets, dtype=np.int64), out_norm_off)
        iparams = np.array([cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope_neox, cfg.activation == "gelu_tanh"],
                           dtype=np.int64)
        fparams = np.array([cfg.norm_eps, cfg.query_scale * cfg.head_dim**0.5, cfg.final_softcap, cfg.embed_scale],
                           dtype=np.float32)
        lrope = np.array([model.rope_bases.index(model.layer_rope_base(i)) for i in range(L)], dtype=np.int64)
        lwin = np.array([cfg.window(i) for i in range(L)], dtype=np.int64)
        self.params = (iparams, fparams, lrope, lwin)
        self.model = model
        self.cos = self.sin = np.zeros((len(model.rope_bases), 0, cfg.n_rot // 2), np.float32)
        self.attn = self._attention_scratch(1)
        self.scratch1 = self._scratch(1)
        self._token1, self._pos1 = np.zeros(1, np.int64), np.zeros(1, np.int64)  # step_one's inputs
        self._table_of, self._table1 = (lambda: None), np.zeros((1, 4), np.int64)

    def _scratch(self, B: int) -> list[np.ndarray]:
        c = self.cfg
        f32 = lambda n: np.zeros((B, n), np.float32)  # noqa: E731
        return [f32(c.dim), f32(c.dim), f32(c.q_dim), f32(c.kv_dim), f32(c.kv_dim), f32(c.q_dim),
                f32(c.ffn_dim), f32(c.ffn_dim)]

    def _attention_scratch(self, n_ctx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """po, pml, sc of parallel.attend_rows for up to n_ctx positions (flat float32)."""
        c = self.cfg
        items = c.n_kv_heads * attend_chunks(0, n_ctx)
        G = c.n_heads // c.n_kv_heads
        return (np.zeros(items * G * c.head_dim, np.float32), np.zeros(items * G * 2, np.float32),
                np.zeros(items * ATTEND_CHUNK, np.float32))

    def _ensure(self, n_ctx: int) -> None:
        """Grow the RoPE tables and attention scratch to cover n_ctx positions."""
        if self.cos.shape[1] < n_ctx:
            tables = self.model.rope(np.arange(n_ctx))
            self.cos = np.stack([tables[b][0] for b in self.model.rope_bases])  # (bases, n_ctx, n_rot/2)
            self.sin = np.stack([tables[b][1] for b in self.model.rope_bases])
        if self.attn[2].size < self.cfg.n_kv_heads * attend_chunks(0, n_ctx) * ATTEND_CHUNK:
            self.attn = self._attention_scratch(n_ctx)

    def step(self, tokens: np.ndarray, caches: list[KVCache]) -> np.ndarray:
        """Logits (B, vocab) for tokens[b] at position caches[b].pos each; commits them."""
        cfg = self.cfg
        tokens = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1)
        if len(tokens) == 1:
            return self.step_one(int(tokens[0]), caches[0])
        if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
            raise InvalidArgumentError(f"token ids must be in [0, {cfg.vocab_size})")
        for c in caches:
            c.reserve(1)
        self._ensure(max(c.n_ctx for c in caches))
        logits = np.empty((len(tokens), cfg.vocab_size), np.float32)
        positions = np.array([c.pos for c in caches], dtype=np.int64)
        tabs = np.array([_table_row(c) for c in caches], dtype=np.int64)
        kernels._sync()  # this Python thread's Numba thread count (the server's worker is another thread)
        _step(tokens, positions, self.weights, self.vectors, self.params, (self.cos, self.sin), tabs,
              (*self._scratch(len(tokens)), *self.attn, logits))
        for c, t in zip(caches, tokens):
            c.commit([t])
        return logits

    def step_one(self, token: int, cache: KVCache) -> np.ndarray:
        """Logits (1, vocab) for one token at cache.pos; commits it. The generator's path, with
        the per-token bookkeeping in plain ints and arrays made once: right after a step has
        streamed the weights through the caches, each NumPy call here (the id checks, the
        position and cache tables) runs cold. On stories15M (Intel AMX host) this wrapper's
        own time went from 44-46 to 17-25 us a token at 2 threads (the step: 1.3 ms), from 62-71
        to 27-29 at 1."""
        if not 0 <= token < self.cfg.vocab_size:
            raise InvalidArgumentError(f"token ids must be in [0, {self.cfg.vocab_size})")
        cache.reserve(1)
        if cache.n_ctx > self.cos.shape[1]:  # the RoPE tables cover as many positions as the attention scratch
            self._ensure(cache.n_ctx)
        self._token1[0], self._pos1[0] = token, cache.pos
        logits = np.empty((1, self.cfg.vocab_size), np.float32)
        kernels._sync()
        _step(self._token1, self._pos1, self.weights, self.vectors, self.params, (self.cos, self.sin),
              self._table(cache), (*self.scratch1, *self.attn, logits))
        cache.commit((token,))
        return logits

    def _table(self, cache: KVCache) -> np.ndarray:
        """(1, 4) int64: the addresses of cache's k and v, its n_ctx, whether f16; the last one
        made is kept (a weak reference: the decoder must not keep a cache's memory alive)."""
        if self._table_of() is not cache:
            self._table1 = np.array([_table_row(cache)], dtype=np.int64)
            self._table_of = weakref.ref(cache)
        return self._table1


def _table_row(cache: KVCache) -> tuple[int, int, int, int]:
    """A cache as `_step` takes it: (address of k, address of v, n_ctx, 1 if f16)."""
    return cache.k.ctypes.data, cache.v.ctypes.data, cache.n_ctx, int(cache.k.dtype == np.float16)
