"""The model's blueprint: a frozen dataclass built by a loader from file metadata.

Every architecture (``llamalab.arch``) is described by the same fields: what differs between
Llama, Qwen, Gemma and Phi is data here (head size, rope style, which norms and biases a
layer has, activation), never a different forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVATIONS = ("silu", "gelu_tanh")  # the gate of a gated FFN: SwiGLU, or GeGLU (Gemma)


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder-only transformer. Loaders fill it; the model only reads it."""

    arch: str  # registry name: "llama", "qwen2", "qwen3", "gemma3", "phi3"
    n_layers: int  # transformer blocks
    dim: int  # residual stream width (embedding_length)
    ffn_dim: int  # gated FFN hidden width (feed_forward_length)
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (grouped-query attention when < n_heads)
    vocab_size: int
    context_length: int  # the longest context the model was trained for
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_base: float = 10000.0  # RoPE theta (global layers)
    rope_dim: int = 0  # rotated dimensions per head (0 = whole head)
    tied_output: bool = False  # output projection shares token_embd
    name: str = ""
    head_size: int = 0  # per-head width (attention.key_length); 0 = dim // n_heads
    rope_neox: bool = False  # rotate (x[i], x[i + n_rot/2]) pairs, not adjacent (x[2i], x[2i+1])
    rope_scale: float = 1.0  # linear position scaling: angle = pos * rope_scale * freq (1/factor)
    rope_scaling: str = "none"  # "none" | "linear" | "yarn"; llama3's factors are a tensor (rope_freqs)
    rope_orig_context: int = 0  # yarn: the context the rope was trained for
    rope_attn_factor: float = 1.0  # multiplies cos and sin (yarn / longrope magnitude scaling)
    sliding_window: int = 0  # local layers see this many positions, themselves included (0 = none)
    swa_pattern: int = 0  # every n-th layer (index % n == n - 1) is global; 0 = all local when windowed
    rope_base_local: float = 10000.0  # RoPE theta of the local (sliding-window) layers
    qkv_bias: bool = False  # attn_q/k/v carry a bias (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3)
    post_norms: bool = False  # RMSNorm of the attention and FFN outputs before the residual add (Gemma 3)
    embed_scale: float = 1.0  # token embeddings are multiplied by this (Gemma: sqrt(dim))
    attn_scale: float = 0.0  # query scale in attention; 0 = 1 / sqrt(head_dim)
    activation: str = "silu"  # see ACTIVATIONS
    final_softcap: float = 0.0  # logits = c * tanh(logits / c) when > 0

    @property
    def head_dim(self) -> int:
        return self.head_size or self.dim // self.n_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def n_rot(self) -> int:
        return self.rope_dim or self.head_dim

    @property
    def query_scale(self) -> float:
        return self.attn_scale or self.head_dim**-0.5

    def is_local(self, layer: int) -> bool:
        """Whether `layer` attends through the sliding window (llama.cpp's swa pattern)."""
        if not self.sliding_window:
            return False
        return self.swa_pattern == 0 or layer % self.swa_pattern < self.swa_pattern - 1

    def window(self, layer: int) -> int:
        """Positions layer `layer` sees back from a query, itself included (0 = all)."""
        return self.sliding_window if self.is_local(layer) else 0

    def n_params(self) -> int:
        """Parameter count (the embedding counted once when tied)."""
        attn = self.dim * self.q_dim * 2 + self.dim * self.kv_dim * 2
        ffn = self.dim * self.ffn_dim * 3
        norms = self.dim * (4 if self.post_norms else 2) + (2 * self.head_dim if self.qk_norm else 0)
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        embed = self.vocab_size * self.dim
        return self.n_layers * (attn + ffn + norms + bias) + embed * (1 if self.tied_output else 2) + self.dim
