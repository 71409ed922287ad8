"""The model's blueprint: a frozen dataclass built by a loader from file metadata."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama-family decoder. Loaders fill it; the model only reads it."""

    arch: str  # "llama" (Llama 2/3, SmolLM2, TinyLlama, Mistral)
    n_layers: int  # transformer blocks
    dim: int  # residual stream width (embedding_length)
    ffn_dim: int  # SwiGLU hidden width (feed_forward_length)
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (grouped-query attention when < n_heads)
    vocab_size: int
    context_length: int  # the longest context the model was trained for
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_base: float = 10000.0  # RoPE theta
    rope_dim: int = 0  # rotated dimensions per head (0 = whole head)
    tied_output: bool = False  # output projection shares token_embd
    name: str = ""

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def n_rot(self) -> int:
        return self.rope_dim or self.head_dim

    def n_params(self) -> int:
        """Parameter count (the embedding counted once when tied)."""
        attn = self.dim * self.dim * 2 + self.dim * self.kv_dim * 2
        ffn = self.dim * self.ffn_dim * 3
        norms = self.dim * 2
        embed = self.vocab_size * self.dim
        return self.n_layers * (attn + ffn + norms) + embed * (1 if self.tied_output else 2) + self.dim
