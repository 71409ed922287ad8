"""The decoder: embeddings, the layers (``layer.py``), the output norm and projection.

Weights come in as QTensors from a loader and are wrapped in a Linear layer chosen by the
backend ("fast": compiled quantized kernels, "reference": plain NumPy); the other layer ops
come from the same choice (``layer.LayerOps``). The cache is state passed into ``forward``;
the model itself holds only weights. Single tokens on the fast path (one sequence or many)
go through the compiled step (``decode.py``); everything else runs ``layer_forward``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ..formats.gguf import LoadedModel
from .config import ModelConfig
from .kv_cache import KVCache
from .layer import REFERENCE_OPS, LayerWeights, fast_ops, layer_forward
from .linear import BACKENDS
from .rope import rope_tables

PREFILL_CHUNK = 512  # prompt tokens per batched pass: bounds the attention scores' memory


class Llama:
    """Any architecture of ``llamalab.arch``: the name is historical (they are all Llama's descendants)."""

    def __init__(self, loaded: LoadedModel, backend: str = "fast"):
        if backend not in BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        cfg: ModelConfig = loaded.config
        make_linear = BACKENDS[backend]
        w = loaded.weights
        self.config = cfg
        self.backend = backend
        self.token_embd = w["token_embd.weight"]
        self.blocks = [LayerWeights(w, i, make_linear) for i in range(cfg.n_layers)]
        self.output_norm = w["output_norm.weight"].dequantize().reshape(-1)
        self.output = make_linear(w["token_embd.weight"] if cfg.tied_output else w["output.weight"])
        self.rope_factors = self._rope_factors(w)
        # one RoPE table per distinct base: Gemma 3's local layers use another than its global ones
        self.rope_bases = sorted({self.layer_rope_base(i) for i in range(cfg.n_layers)})
        self.ops = fast_ops() if backend == "fast" else REFERENCE_OPS
        self.decoder = self._make_decoder() if backend == "fast" else None

    def _rope_factors(self, w) -> np.ndarray | None:
        """Per-pair frequency divisors (n_rot/2,): Llama 3.1+ rope_freqs, or Phi-3's LongRoPE
        short factors (the long ones apply past the trained context, which n_ctx never is here)."""
        t = w.get("rope_freqs.weight") or w.get("rope_factors_short.weight")
        return None if t is None else t.dequantize().reshape(-1).astype(np.float32)

    def layer_rope_base(self, layer: int) -> float:
        return self.config.rope_base_local if self.config.is_local(layer) else self.config.rope_base

    def rope(self, positions: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """{base: (cos, sin) (N, n_rot/2)} for the rows' positions, one entry per RoPE base."""
        return {b: rope_tables(positions, self.config, b, self.rope_factors) for b in self.rope_bases}

    def _make_decoder(self):
        from .decode import FastDecoder

        return FastDecoder(self)

    def warm_up(self, kv_dtype=np.float32, batch_kv_dtype=None) -> None:
        """Load (the first time on a machine: compile) every kernel a generation runs, on scratch
        caches of kv_dtype: a prompt above the small-batch limit, a short prompt and a decode step,
        plus a batched decode step over caches of batch_kv_dtype when given (the server's). Then
        hand LLVM's code back to the OS: nothing reads it until Numba compiles again."""
        if self.backend != "fast":
            return
        from ..kernels import release_compiler_pages, small_batch_limit, warmup

        n = small_batch_limit() + 1
        cache = self.new_cache(n + 3, kv_dtype)
        for tokens in ([0] * n, [0, 0], [0]):
            self.forward(tokens, cache)
        if batch_kv_dtype is not None:
            caches = [self.new_cache(4, batch_kv_dtype) for _ in range(2)]
            for c in caches:
                self.forward(np.array([0, 1]), c)
            self.decode_batch(np.array([2, 3]), caches)
        warmup()  # the long-prompt backends too, on a toy shape: their code is in before the release
        release_compiler_pages()  # ~70 MiB of libllvmlite.so less resident

    def new_cache(self, n_ctx: int | None = None, dtype=np.float32) -> KVCache:
        return KVCache(self.config, n_ctx or self.config.context_length, dtype)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """tokens: (T,) -> (T, dim) float32, times the architecture's embedding scale."""
        x = self.token_embd.rows_f32(tokens)
        if self.config.embed_scale != 1.0:
            x *= np.float32(self.config.embed_scale)
        return x

    def forward(self, tokens, cache: KVCache, all_logits: bool = False, hidden: bool = False) -> np.ndarray:
        """Run tokens at positions cache.pos.. and append them to the cache.

        Returns logits (T, vocab) when all_logits, else (1, vocab) for the last token; with
        hidden, the final-normed hidden states (T, dim) instead of logits (embeddings).
        Long inputs are processed in chunks of PREFILL_CHUNK tokens.
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            raise InvalidArgumentError("forward needs at least one token")
        if tokens.size == 1 and not hidden and self.decoder is not None:
            return self.decoder.step_one(int(tokens[0]), cache)  # (1, vocab); checks the id and the room
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise InvalidArgumentError(f"token ids must be in [0, {self.config.vocab_size})")
        cache.reserve(len(tokens))
        outs = []
        for s in range(0, len(tokens), PREFILL_CHUNK):
            chunk = tokens[s : s + PREFILL_CHUNK]
            last = s + PREFILL_CHUNK >= len(tokens)
            h = self._forward_chunk(chunk, cache)
            if hidden:
                outs.append(self._final_norm(h))
            elif all_logits:
                outs.append(self._logits(h))
            elif last:
                outs.append(self._logits(h[-1:]))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _run_layers(self, x: np.ndarray, positions: np.ndarray, attend) -> np.ndarray:
        """x (N, dim) through every layer; positions (N,) pick each row's RoPE angles."""
        tables = self.rope(positions)
        for blk in self.blocks:
            cos, sin = tables[self.layer_rope_base(blk.index)]
            x = layer_forward(self.config, blk, self.ops, x, cos, sin, attend)
        return x

    def _forward_chunk(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """T tokens of one sequence at positions cache.pos.. -> hidden (T, dim); commits them."""
        start, T = cache.pos, len(tokens)

        def attend(layer, q, k, v):
            cache.write(layer, start, k, v)
            kc, vc = cache.layer(layer)
            return self.ops.attention(q, kc, vc, start, cache.windows[layer])

        x = self._run_layers(self.embed(tokens), np.arange(start, start + T), attend)
        cache.commit(tokens)
        return x

    def _final_norm(self, h: np.ndarray) -> np.ndarray:
        return self.ops.rms_norm(h, self.output_norm, self.config.norm_eps)  # (T, dim)

    def _logits(self, h: np.ndarray) -> np.ndarray:
        logits = self.output(self._final_norm(h))  # (T, vocab)
        cap = self.config.final_softcap
        return np.tanh(logits / cap) * cap if cap else logits

    def decode_batch(self, tokens, caches: list[KVCache]) -> np.ndarray:
        """One new token for each of B sequences (continuous batching): (B,) -> (B, vocab).

        The linear layers run once over all B rows; attention runs per sequence on its own cache.
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        B = len(tokens)
        if B != len(caches):
            raise InvalidArgumentError(f"decode_batch got {B} tokens for {len(caches)} caches")
        if B == 1:
            return self.forward(tokens, caches[0])
        if self.decoder is not None:
            return self.decoder.step(tokens, caches)
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise InvalidArgumentError(f"token ids must be in [0, {self.config.vocab_size})")
        for c in caches:
            c.reserve(1)
        starts = [c.pos for c in caches]

        def attend(layer, q, k, v):
            out = np.empty((B, q.shape[1] * q.shape[2]), np.float32)
            for b, (c, p) in enumerate(zip(caches, starts)):
                c.write(layer, p, k[b : b + 1], v[b : b + 1])
                kc, vc = c.layer(layer)
                out[b] = self.ops.attention(q[b : b + 1], kc, vc, p, c.windows[layer])[0]
            return out

        x = self._run_layers(self.embed(tokens), np.array(starts), attend)
        for c, t in zip(caches, tokens):
            c.commit([t])
        return self._logits(x)
