"""What an architecture is, as data: the keys it reads, the tensors it needs, its layer's features.

The loader reads an ``ArchSpec`` to build the config and check the weights; the one layer
definition (``runtime.layer``) and the compiled step read only the config. Adding an
architecture is a new module in this folder with one ``SPEC``, registered in ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tensor:
    """One weight: its GGUF name (``blk.{i}.`` prefixed for layer tensors) and shape as
    config attributes, in llamalab's (rows, cols) order, e.g. ("q_dim", "dim")."""

    name: str
    shape: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class Split:
    """A fused weight cut into zero-copy row views at load: rows of `source` go, in order,
    to each part (name, rows as a config attribute). Phi-3's attn_qkv and gate+up ffn_up."""

    source: str
    parts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    rope_neox: bool  # llama.cpp's LLAMA_ROPE_TYPE_NEOX (pairs i, i + n_rot/2) vs NORM (adjacent pairs)
    layer_tensors: tuple[Tensor, ...]
    global_tensors: tuple[Tensor, ...]
    keys: dict[str, str] = field(default_factory=dict)  # extra `{arch}.` key -> config field
    defaults: dict = field(default_factory=dict)  # config fields fixed by the architecture
    splits: tuple[Split, ...] = ()
    embed_scale_sqrt_dim: bool = False  # Gemma multiplies embeddings by sqrt(dim)
    chat_template: str | None = None  # used when the file carries none (llama.cpp's built-in)


D = "dim"

# the blocks every decoder here shares: RMSNorm, attention, gated FFN
ATTN_NORM = (Tensor("attn_norm.weight", (D,)),)
FFN_NORM = (Tensor("ffn_norm.weight", (D,)),)
ATTENTION = (
    Tensor("attn_q.weight", ("q_dim", D)),
    Tensor("attn_k.weight", ("kv_dim", D)),
    Tensor("attn_v.weight", ("kv_dim", D)),
    Tensor("attn_output.weight", (D, "q_dim")),
)
FFN = (
    Tensor("ffn_gate.weight", ("ffn_dim", D)),
    Tensor("ffn_up.weight", ("ffn_dim", D)),
    Tensor("ffn_down.weight", (D, "ffn_dim")),
)
QKV_BIAS = (Tensor("attn_q.bias", ("q_dim",)), Tensor("attn_k.bias", ("kv_dim",)), Tensor("attn_v.bias", ("kv_dim",)))
QK_NORM = (Tensor("attn_q_norm.weight", ("head_dim",)), Tensor("attn_k_norm.weight", ("head_dim",)))
POST_NORMS = (Tensor("post_attention_norm.weight", (D,)), Tensor("post_ffw_norm.weight", (D,)))

EMBEDDINGS = (
    Tensor("token_embd.weight", ("vocab_size", D)),
    Tensor("output_norm.weight", (D,)),
    Tensor("output.weight", ("vocab_size", D), required=False),  # absent: tied to token_embd
)
ROPE_FREQS = Tensor("rope_freqs.weight", ("rope_pairs",), required=False)  # Llama 3.1+: per-pair divisors


def optional(tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(Tensor(t.name, t.shape, required=False) for t in tensors)
