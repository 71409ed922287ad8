"""Qwen2 / Qwen2.5: Llama's layer with a bias on q, k and v, and NEOX RoPE."""

from .spec import ATTENTION, EMBEDDINGS, FFN, ATTN_NORM, FFN_NORM, QKV_BIAS, ROPE_FREQS, ArchSpec

SPEC = ArchSpec(
    name="qwen2",
    rope_neox=True,
    layer_tensors=ATTN_NORM + ATTENTION + QKV_BIAS + FFN_NORM + FFN,
    global_tensors=EMBEDDINGS + (ROPE_FREQS,),
)
