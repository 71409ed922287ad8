"""Qwen3 (dense): no biases, a per-head RMSNorm of q and k before RoPE, NEOX RoPE, and a head
size of its own (attention.key_length: 128 at every size, so q_dim != dim)."""

from .spec import ATTENTION, EMBEDDINGS, FFN, ATTN_NORM, FFN_NORM, QK_NORM, ROPE_FREQS, ArchSpec

SPEC = ArchSpec(
    name="qwen3",
    rope_neox=True,
    layer_tensors=ATTN_NORM + ATTENTION + QK_NORM + FFN_NORM + FFN,
    global_tensors=EMBEDDINGS + (ROPE_FREQS,),
    defaults={"qk_norm": True},
)
