"""The Llama decoder: RMSNorm, RoPE, grouped-query attention over a KV cache, SwiGLU.

Weights come in as QTensors from a loader and are wrapped in a Linear layer chosen by
the backend ("fast": compiled quantized kernels, "reference": plain NumPy); the other
layer ops come from the same choice (``LayerOps``: the NumPy functions below, or their
compiled forms in ``kernels.ops``). The cache is state passed into ``forward``; the
model itself holds only weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import ModelConfig
from ..errors import InvalidArgumentError
from ..formats.gguf import LoadedModel
from .kv_cache import KVCache
from .linear import BACKENDS, fused
from .tensor import QTensor

PREFILL_CHUNK = 512  # prompt tokens per batched pass: bounds the attention scores' memory


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x: (T, dim) -> (T, dim), scaled to unit root-mean-square, times the learned gain."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return x * (1.0 / np.sqrt(ms + eps)) * w


def rope_tables(positions: np.ndarray, n_rot: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of each position's angles: (T, n_rot/2) each, float32."""
    inv_freq = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)  # (n_rot/2,)
    angles = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, n_rot/2)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """Rotate adjacent pairs (x[2i], x[2i+1]) in place, the layout GGUF stores for llama.

    x: (T, heads, head_dim); cos, sin: (T, n_rot/2).
    """
    n_rot = cos.shape[1] * 2
    c, s = cos[:, None, :], sin[:, None, :]  # (T, 1, n_rot/2): broadcast over heads
    x0 = x[..., 0:n_rot:2].copy()
    x1 = x[..., 1:n_rot:2]
    x[..., 0:n_rot:2] = x0 * c - x1 * s
    x[..., 1:n_rot:2] = x0 * s + x1 * c


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    return silu(gate) * up


def attention(q: np.ndarray, kc: np.ndarray, vc: np.ndarray, start: int) -> np.ndarray:
    """Causal grouped-query attention of T new queries over S = start + T cached positions.

    q: (T, H, hd); kc, vc: (KVH, >= S, hd), positions < S written -> (T, H * hd).
    Query head h reads kv head h // (H // KVH).
    """
    T, H, hd = q.shape
    S = start + T
    k, v = kc[:, :S], vc[:, :S]  # (KVH, S, hd) views
    KVH = k.shape[0]
    G = H // KVH
    qg = q.reshape(T, KVH, G, hd).transpose(1, 2, 0, 3).reshape(KVH, G * T, hd)  # (KVH, G*T, hd)
    scores = np.matmul(qg, k.transpose(0, 2, 1)) * np.float32(1.0 / np.sqrt(hd))  # (KVH, G*T, S)
    scores = scores.reshape(KVH, G, T, S)
    if T > 1:  # query t (absolute start + t) sees positions <= start + t
        mask = np.arange(S)[None, :] > (start + np.arange(T))[:, None]  # (T, S)
        scores[:, :, mask] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.matmul(p.reshape(KVH, G * T, S), v)  # (KVH, G*T, hd)
    return out.reshape(KVH, G, T, hd).transpose(2, 0, 1, 3).reshape(T, H * hd)  # (T, H*hd)


@dataclass(frozen=True)
class LayerOps:
    """The non-matmul ops of a layer, for T tokens at once (shapes as in the NumPy functions above)."""

    rms_norm: Callable  # (x (T, dim), w (dim,), eps) -> (T, dim)
    rope: Callable  # (x (T, heads, hd), cos, sin) -> None, in place
    attention: Callable  # (q (T, H, hd), kc, vc (KVH, n_ctx, hd) float32, start) -> (T, H*hd)
    swiglu: Callable  # (gate, up (T, ffn)) -> silu(gate) * up (may reuse gate)


REFERENCE_OPS = LayerOps(rms_norm, apply_rope, attention, swiglu)


def fast_ops() -> LayerOps:
    """The compiled forms (kernels.ops): one parallel pass each, no BLAS."""
    from ..kernels import ops

    def norm(x, w, eps):
        out = np.empty_like(x)
        ops.rms_norm(x, w, np.float32(eps), out)
        return out

    def attend(q, kc, vc, start):
        out = np.empty((q.shape[0], q.shape[1] * q.shape[2]), np.float32)  # (T, H*hd)
        ops.causal_attention(q, np.ascontiguousarray(kc), np.ascontiguousarray(vc), start, out)
        return out

    def glu(gate, up):
        ops.swiglu(gate, up)
        return gate

    return LayerOps(norm, ops.rope, attend, glu)


class Block:
    """One transformer layer: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, w: dict[str, QTensor], i: int, make_linear):
        p = f"blk.{i}."
        self.attn_norm = w[p + "attn_norm.weight"].dequantize().reshape(-1)
        self.ffn_norm = w[p + "ffn_norm.weight"].dequantize().reshape(-1)
        self.wq, self.wk, self.wv, self.wo = (make_linear(w[p + n]) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"))
        self.w_gate, self.w_up, self.w_down = (make_linear(w[p + n]) for n in ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"))
        self.index = i


class Llama:
    def __init__(self, loaded: LoadedModel, backend: str = "fast"):
        if backend not in BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        cfg: ModelConfig = loaded.config
        make_linear = BACKENDS[backend]
        w = loaded.weights
        self.config = cfg
        self.backend = backend
        self.token_embd = w["token_embd.weight"]
        self.blocks = [Block(w, i, make_linear) for i in range(cfg.n_layers)]
        self.output_norm = w["output_norm.weight"].dequantize().reshape(-1)
        self.output = make_linear(w["token_embd.weight"] if cfg.tied_output else w["output.weight"])
        self.ops = fast_ops() if backend == "fast" else REFERENCE_OPS
        self.decoder = self._make_decoder() if backend == "fast" else None

    def _make_decoder(self):
        from .decode import LAYER_WEIGHTS, FastDecoder

        linears = {"output": self.output.qtensor}
        for b in self.blocks:
            for name, lin in zip(LAYER_WEIGHTS, (b.wq, b.wk, b.wv, b.wo, b.w_gate, b.w_up, b.w_down)):
                linears[f"blk.{b.index}.{name}"] = lin.qtensor
        norms = np.stack([np.stack([b.attn_norm, b.ffn_norm]) for b in self.blocks])  # (L, 2, dim)
        from ..kernels import prepare

        return FastDecoder(self.config, linears, prepare(self.token_embd), norms, self.output_norm)

    def warm_up(self, batch_kv_dtype=None) -> None:
        """Load (the first time on a machine: compile) every kernel a generation runs, on scratch
        caches: a prompt above the small-batch limit, a short prompt and a decode step, plus a
        batched decode step over caches of batch_kv_dtype when given (the server's). Then hand
        LLVM's code back to the OS: nothing reads it until Numba compiles again."""
        if self.backend != "fast":
            return
        from ..kernels import release_compiler_pages, small_batch_limit

        n = small_batch_limit() + 1
        cache = self.new_cache(n + 3)
        for tokens in ([0] * n, [0, 0], [0]):
            self.forward(tokens, cache)
        if batch_kv_dtype is not None:
            caches = [self.new_cache(4, batch_kv_dtype) for _ in range(2)]
            for c in caches:
                self.forward(np.array([0, 1]), c)
            self.decode_batch(np.array([2, 3]), caches)
        release_compiler_pages()  # ~70 MiB of libllvmlite.so less resident

    def new_cache(self, n_ctx: int | None = None, dtype=np.float32) -> KVCache:
        return KVCache(self.config, n_ctx or self.config.context_length, dtype)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """tokens: (T,) -> (T, dim) float32."""
        return self.token_embd.rows_f32(tokens)

    def forward(self, tokens, cache: KVCache, all_logits: bool = False, hidden: bool = False) -> np.ndarray:
        """Run tokens at positions cache.pos.. and append them to the cache.

        Returns logits (T, vocab) when all_logits, else (1, vocab) for the last token; with
        hidden, the final-normed hidden states (T, dim) instead of logits (embeddings).
        Long inputs are processed in chunks of PREFILL_CHUNK tokens.
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            raise InvalidArgumentError("forward needs at least one token")
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise InvalidArgumentError(f"token ids must be in [0, {self.config.vocab_size})")
        cache.reserve(len(tokens))
        if len(tokens) == 1 and not hidden and self.decoder is not None and cache.k.dtype == np.float32:
            return self.decoder.step(int(tokens[0]), cache)[None, :]  # (1, vocab)
        outs = []
        for s in range(0, len(tokens), PREFILL_CHUNK):
            chunk = tokens[s : s + PREFILL_CHUNK]
            last = s + PREFILL_CHUNK >= len(tokens)
            h = self._forward_chunk(chunk, cache)
            if hidden:
                outs.append(self.ops.rms_norm(h, self.output_norm, self.config.norm_eps))
            elif all_logits:
                outs.append(self._logits(h))
            elif last:
                outs.append(self._logits(h[-1:]))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _forward_chunk(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        cfg, ops = self.config, self.ops
        T, start = len(tokens), cache.pos
        cos, sin = rope_tables(np.arange(start, start + T), cfg.n_rot, cfg.rope_base)
        x = self.embed(tokens)  # (T, dim)
        for blk in self.blocks:
            h = ops.rms_norm(x, blk.attn_norm, cfg.norm_eps)
            q, k, v = fused((blk.wq, blk.wk, blk.wv), h)  # (T, dim), (T, kv_dim), (T, kv_dim)
            q = q.reshape(T, cfg.n_heads, cfg.head_dim)
            k = k.reshape(T, cfg.n_kv_heads, cfg.head_dim)
            ops.rope(q, cos, sin)
            ops.rope(k, cos, sin)
            li = blk.index
            cache.k[li, :, start : start + T] = k.transpose(1, 0, 2)  # (KVH, T, hd)
            cache.v[li, :, start : start + T] = v.reshape(T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 0, 2)
            x = x + blk.wo(ops.attention(q, *self._kv(cache, li, start + T), start))
            h = ops.rms_norm(x, blk.ffn_norm, cfg.norm_eps)
            gate, up = fused((blk.w_gate, blk.w_up), h)  # (T, ffn_dim) each
            x = x + blk.w_down(ops.swiglu(gate, up))
        cache.pos = start + T
        cache.tokens.extend(int(t) for t in tokens)
        return x

    @staticmethod
    def _kv(cache: KVCache, layer: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer `layer` of the cache as float32 (KVH, >= n, hd): the cache itself, or its
        first n positions converted when it holds float16."""
        k, v = cache.k[layer], cache.v[layer]
        if k.dtype != np.float32:
            k, v = k[:, :n].astype(np.float32), v[:, :n].astype(np.float32)
        return k, v

    def _logits(self, h: np.ndarray) -> np.ndarray:
        return self.output(self.ops.rms_norm(h, self.output_norm, self.config.norm_eps))  # (T, vocab)

    def decode_batch(self, tokens, caches: list[KVCache]) -> np.ndarray:
        """One new token for each of B sequences (continuous batching): (B,) -> (B, vocab).

        The linear layers run once over all B rows; attention runs per sequence on its own cache.
        """
        cfg = self.config
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        B = len(tokens)
        if B != len(caches):
            raise InvalidArgumentError(f"decode_batch got {B} tokens for {len(caches)} caches")
        if B == 1:
            return self.forward(tokens, caches[0])
        if self.decoder is not None and all(c.k.dtype == np.float32 for c in caches):
            return self.decoder.step_batch(tokens, caches)
        for c in caches:
            c.reserve(1)
        starts = np.array([c.pos for c in caches])
        cos, sin = rope_tables(starts, cfg.n_rot, cfg.rope_base)  # (B, n_rot/2): one position each
        x = self.embed(tokens)  # (B, dim)
        ops = self.ops
        for blk in self.blocks:
            h = ops.rms_norm(x, blk.attn_norm, cfg.norm_eps)
            q, k, v = fused((blk.wq, blk.wk, blk.wv), h)
            q = q.reshape(B, cfg.n_heads, cfg.head_dim)
            k = k.reshape(B, cfg.n_kv_heads, cfg.head_dim)
            v = v.reshape(B, cfg.n_kv_heads, cfg.head_dim)
            ops.rope(q, cos, sin)
            ops.rope(k, cos, sin)
            att = np.empty((B, cfg.dim), np.float32)
            li = blk.index
            for b, c in enumerate(caches):
                p = c.pos
                c.k[li, :, p] = k[b]
                c.v[li, :, p] = v[b]
                att[b] = ops.attention(q[b : b + 1], *self._kv(c, li, p + 1), p)[0]
            x = x + blk.wo(att)
            h = ops.rms_norm(x, blk.ffn_norm, cfg.norm_eps)
            gate, up = fused((blk.w_gate, blk.w_up), h)
            x = x + blk.w_down(ops.swiglu(gate, up))
        for c, t in zip(caches, tokens):
            c.pos += 1
            c.tokens.append(int(t))
        return self._logits(x)
